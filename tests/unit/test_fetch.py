"""The raw-records fetch shortcut: only marked consumers get the reader's record objects, a
batch at a time, and they get exactly the records and positions aiokafka's own drain gives."""

from __future__ import annotations

import gc
import logging
import re
import struct
import weakref
from pathlib import Path
from typing import Any

import pytest
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord, TopicPartition

import anonstream
from anonstream.runtime.kafka_compat import crcs_ok, install, raw_records

TP = TopicPartition("t", 0)
EXPECTED = [(0, b'{"n":0}'), (1, b'{"n":1}'), (2, b'{"n":2}')]
READ_UNCOMMITTED = 0
_ATTRIBUTES, _CRC = struct.calcsize(">qiibI"), struct.calcsize(">qiib")


def _batch(
    base: int,
    deltas: list[int],
    *,
    producer_id: int = -1,
    transactional: bool = False,
    control_key: bytes | None = None,
) -> bytes:
    """One v2 record batch at offset `base`; `deltas` are the records' offset deltas (gaps
    are what compaction leaves); a `control_key` makes it a control batch."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=int(transactional),
        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for d in deltas:
        key, value = (control_key, b"\x00" * 6) if control_key else (None, b'{"n":%d}' % (base + d))
        builder.append(d, timestamp=1_000 + d, key=key, value=value, headers=[])
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base)  # the broker sets the base offset
    if control_key is not None:
        attrs = struct.unpack_from(">h", buf, _ATTRIBUTES)[0] | 0x20
        struct.pack_into(">h", buf, _ATTRIBUTES, attrs)
        struct.pack_into(">I", buf, _CRC, calc_crc32c(bytes(buf[_ATTRIBUTES:])))
    return bytes(buf)


ABORT, COMMIT = b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"
# Offsets 0-4 plain; 5-7 a transaction of producer 7, aborted at 8; 9-14 with 10 and 14
# compacted away; 15-16 a transaction of producer 8, committed at 17; 18-19 plain.
BATCHES = [
    _batch(0, [0, 1, 2, 3, 4]),
    _batch(5, [0, 1, 2], producer_id=7, transactional=True),
    _batch(8, [0], producer_id=7, transactional=True, control_key=ABORT),
    _batch(9, [0, 2, 3, 4]),
    _batch(15, [0, 1], producer_id=8, transactional=True),
    _batch(17, [0], producer_id=8, transactional=True, control_key=COMMIT),
    _batch(18, [0, 1]),
]
NEXT_OFFSETS = [5, 8, 9, 15, 17, 18, 20]


def _fetch(offset: int) -> bytes:
    """What the broker returns for a fetch at `offset`: from the batch holding it on."""
    return b"".join(b for b, nxt in zip(BATCHES, NEXT_OFFSETS, strict=True) if nxt > offset)


ABORTED = [(7, 5)]  # (producer id, first offset), as a fetch response lists them


class _State:
    def __init__(self, position: int) -> None:
        self.paused = False
        self.position = position

    def consumed_to(self, offset: int) -> None:
        self.position = offset


class _Assignment:
    """The subscription state a FetchResult checks its position against."""

    active = True

    def __init__(self, position: int) -> None:
        self.state = _State(position)

    def state_value(self, tp: TopicPartition) -> _State:
        return self.state


def _drain(
    deserializer: Any, isolation: int, max_records: int | None, fetch_offset: int = 0
) -> list[tuple[list[tuple[int, bytes]], int]]:
    """Every getall of one fetch: (its records as (offset, value), the position after)."""
    part = PartitionRecords(
        TP, MemoryRecords(_fetch(fetch_offset)), list(ABORTED), fetch_offset, None,
        deserializer, True, isolation,
    )  # fmt: skip
    assignment = _Assignment(fetch_offset)
    result = FetchResult(TP, assignment=assignment, partition_records=part, backoff=0)
    calls = []
    while result.has_more():
        got = result.getall(max_records)
        calls.append(([(r.offset, r.value) for r in got], assignment.state.position))
    return calls


def _records(deserializer: object) -> list[Any]:
    data = _batch(0, [0, 1, 2])
    part = PartitionRecords(TP, MemoryRecords(data), [], 0, None, deserializer, True,
                            READ_UNCOMMITTED)  # fmt: skip
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


@pytest.mark.parametrize("isolation", [READ_UNCOMMITTED, READ_COMMITTED])
@pytest.mark.parametrize("max_records", [None, 1, 2, 3, 4, 5, 7, 100])
@pytest.mark.parametrize("fetch_offset", [0, 3, 11, 14])
def test_batch_drain_gives_what_aiokafka_gives(
    isolation: int, max_records: int | None, fetch_offset: int
) -> None:
    install()
    ours = _drain(raw_records, isolation, max_records, fetch_offset)
    theirs = _drain(None, isolation, max_records, fetch_offset)  # aiokafka's own drain
    assert ours == theirs
    offsets = [o for got, _ in ours for o, _ in got]
    assert offsets == sorted(offsets) and all(o >= fetch_offset for o in offsets)
    if isolation == READ_COMMITTED or fetch_offset > 7:
        assert not {5, 6, 7} & set(offsets)  # the aborted transaction
    else:
        assert {5, 6, 7} <= set(offsets)
    assert {15, 16, 18, 19} <= set(offsets) and not {8, 10, 14, 17} & set(offsets)
    assert ours[-1][1] == 20  # past the last batch


def test_getone_still_works_on_a_marked_fetch() -> None:
    install()
    part = PartitionRecords(TP, MemoryRecords(_fetch(0)), [], 0, None, raw_records, True,
                            READ_UNCOMMITTED)  # fmt: skip
    result = FetchResult(TP, assignment=_Assignment(0), partition_records=part, backoff=0)
    first = result.getone()
    rest = result.getall(3)
    assert [first.offset, *(r.offset for r in rest)] == [0, 1, 2, 3]


def test_a_used_up_fetch_is_freed_without_waiting_for_the_cycle_collector() -> None:
    # A fetch holds megabytes; left to the cycle collector (whose threshold the worker
    # raises) they pile up: the worker's peak memory doubled before this was fixed.
    install()
    part = PartitionRecords(TP, MemoryRecords(_fetch(0)), [], 0, None, raw_records, True,
                            READ_UNCOMMITTED)  # fmt: skip
    result = FetchResult(TP, assignment=_Assignment(0), partition_records=part, backoff=0)
    alive = weakref.ref(part)
    gc.disable()
    try:
        del part
        while result.has_more():
            result.getall(4)
        assert alive() is None
    finally:
        gc.enable()


def _corrupt(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def test_crcs_are_checked_in_hardware_for_a_whole_fetch() -> None:
    whole = _fetch(0)
    assert crcs_ok(whole)
    assert crcs_ok(whole[:-7])  # a last batch cut short by the fetch size is not read
    second = len(BATCHES[0])
    assert not crcs_ok(_corrupt(whole, second + 40))  # a payload byte of the second batch
    assert not crcs_ok(_corrupt(whole, second + 16))  # its format (magic) byte


@pytest.mark.parametrize("kept", [True, False])
def test_a_corrupt_batch_fails_the_fetch_after_the_good_ones_as_aiokafka_does(kept: bool) -> None:
    install()
    reader = fetcher.MemoryRecords if kept else MemoryRecords  # kept: with the fetch's bytes
    bad = _corrupt(_fetch(0), len(BATCHES[0]) + 40)
    got: list[tuple[str, object]] = []
    for deserializer in (raw_records, None):
        part = PartitionRecords(TP, reader(bad), [], 0, None, deserializer, True,
                                READ_UNCOMMITTED)  # fmt: skip
        result = FetchResult(TP, assignment=_Assignment(0), partition_records=part, backoff=0)
        first = result.getall(5)
        with pytest.raises(CorruptRecordException):
            result.getall(5)
        got.append((type(part._records).__name__, [r.offset for r in first]))
    assert got[0][1] == got[1][1] == [0, 1, 2, 3, 4]
    assert (got[0][0] == "_KeptBytes") is kept


def test_an_unknown_fetcher_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An aiokafka whose fetcher lacks a private piece: nothing patched, a WARNING (not a
    quiet INFO), and install() says so, which the worker exports as a metric."""

    class NotOurs:
        pass

    monkeypatch.setattr(fetcher, "FetchResult", NotOurs)
    with caplog.at_level(logging.INFO, logger="anonstream.runtime.kafka_compat"):
        assert not install()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert not hasattr(NotOurs, "getall")


def test_private_aiokafka_use_stays_in_the_compatibility_module() -> None:
    """The fence: no other module of the product reaches into aiokafka's private parts."""
    root = Path(anonstream.__file__).parent
    private = re.compile(
        r"\._(send_request|coordinator|subscription|fetcher|client)\b"
        r"|aiokafka\.(conn|protocol|consumer\.fetcher|record)\b"
    )
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "kafka_compat.py" and private.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
