"""Fetched messages without a `ConsumerRecord` per message.

aiokafka's fetcher turns every record of a fetched batch into a `ConsumerRecord` (a
dataclass of eleven fields, with the key and value lengths and a tuple of the headers)
in Python. The batch loop reads only each message's value and offset, which the record
objects of aiokafka's own record-batch reader already carry, so for its consumer that
conversion costs about as much as decoding the JSON and buys nothing.

`install()` makes the fetcher hand over the reader's record objects, but only to consumers
created with `value_deserializer=raw_records`: every other consumer in the process (Faust's)
keeps getting `ConsumerRecord`s. If this aiokafka has no such conversion step (a version
we were not tested with), nothing is changed and the batch loop gets `ConsumerRecord`s,
which have the same `offset` and `value` attributes.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def raw_records(value: bytes | None) -> bytes | None:
    """The marker deserializer: an identity function, never called once installed."""
    return value


def install() -> bool:
    """Idempotent; True if the fetcher now hands raw records to marked consumers."""
    try:
        from aiokafka.consumer.fetcher import PartitionRecords
    except ImportError:  # pragma: no cover - a different aiokafka layout
        return False
    original = getattr(PartitionRecords, "_consumer_record", None)
    if original is None:
        log.info("aiokafka has no per-record conversion step; using ConsumerRecord")
        return False
    if getattr(original, "_anonstream_raw", False):
        return True

    def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
        if getattr(self, "_value_deserializer", None) is raw_records:
            return record
        return original(self, tp, record)

    _consumer_record._anonstream_raw = True  # type: ignore[attr-defined]
    PartitionRecords._consumer_record = _consumer_record
    return True
