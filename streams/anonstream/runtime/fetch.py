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


# Called by the fetcher as `_consumer_record(tp, record)`: `{}.get(tp, record)` returns
# the record itself, in C, with no Python frame per message.
_RECORD_ITSELF: Any = {}.get


def install() -> bool:
    """Idempotent; True if the fetcher now hands raw records to marked consumers."""
    try:
        from aiokafka.consumer.fetcher import PartitionRecords
    except ImportError:  # pragma: no cover - a different aiokafka layout
        return False
    if getattr(PartitionRecords, "_consumer_record", None) is None:
        log.info("aiokafka has no per-record conversion step; using ConsumerRecord")
        return False
    original = PartitionRecords.__init__
    if getattr(original, "_anonstream_raw", False):
        return True

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if getattr(self, "_value_deserializer", None) is raw_records:
            self._consumer_record = _RECORD_ITSELF  # shadows the method, for this fetch only

    __init__._anonstream_raw = True  # type: ignore[attr-defined]
    PartitionRecords.__init__ = __init__
    return True
