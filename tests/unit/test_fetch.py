"""The raw-records fetch shortcut: only marked consumers get the reader's record objects."""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from anonstream.runtime.fetch import install, raw_records

EXPECTED = [(0, b'{"n":0}'), (1, b'{"n":1}'), (2, b'{"n":2}')]


def _records(deserializer: object) -> list[Any]:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i in range(3):
        builder.append(i, timestamp=1_000 + i, key=None, value=b'{"n":%d}' % i, headers=[])
    data = bytes(builder.build())
    part = PartitionRecords(
        TopicPartition("t", 0), MemoryRecords(data), [], 0, None, deserializer, True,
        0,  # read_uncommitted
    )  # fmt: skip
    return list(part)


def test_marked_consumers_get_offset_and_value_without_consumer_records() -> None:
    assert install()
    assert install()  # idempotent
    raw = _records(raw_records)
    assert [(r.offset, r.value) for r in raw] == EXPECTED
    assert not any(isinstance(r, ConsumerRecord) for r in raw)


def test_other_consumers_still_get_consumer_records() -> None:
    install()
    plain = _records(None)
    assert all(isinstance(r, ConsumerRecord) for r in plain)
    assert [(r.offset, r.value) for r in plain] == EXPECTED
