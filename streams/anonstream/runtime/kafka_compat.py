"""Every use of aiokafka's private parts, in one place (aiokafka>=0.14.0,<0.15 in pyproject).

aiokafka's public API lacks four things the worker needs; each is reached here and nowhere
else, so an aiokafka upgrade is checked against this one module (tests/unit/test_fetch.py,
test_quiet.py and test_idle_evidence.py exercise each piece):

- `install()`: the fetch shortcut below; it patches `fetcher.PartitionRecords`,
  `fetcher.FetchResult` and `fetcher.MemoryRecords`, checked attribute by attribute. If
  this aiokafka lacks them nothing is patched, a WARNING is logged and
  `anonstream_fetch_fallback` is 1 (about 80 % more fetch CPU).
- `position_now()`: a partition's position without waiting (`consumer._subscription`);
  the public `position()` waits while a reset is under way, and idle close must not.
- `committed_with_metadata()`: committed offsets WITH their metadata, where the checkpoints
  live (`consumer._coordinator`); the public `committed()` returns the offset only.
- `send_admin_request()`: one protocol request through the admin client
  (`AIOKafkaAdminClient._send_request`); it has no ACL method, and ACLs are created with
  aiokafka's own `CreateAclsRequest` (`create_acls_request()`).
- `probe_metadata()`: the start-up check's one connection to one bootstrap server and one
  metadata request (`aiokafka.conn.create_conn`, `MetadataRequest`), which no public client
  offers without joining, fetching or auto-creating topics.

The fetch shortcut: fetched messages without a `ConsumerRecord` per message, drained a
record batch at a time.

aiokafka's fetcher turns every record of a fetched batch into a `ConsumerRecord` (a
dataclass of eleven fields, with the key and value lengths and a tuple of the headers)
in Python, and hands records to `getmany` one by one through a generator and a loop. The
batch loop reads only each message's value and offset, which the record objects of
aiokafka's own record-batch reader already carry; for its consumer that per-message Python
costs about as much as decoding the JSON and buys nothing.

`install()` changes two things, only for consumers created with
`value_deserializer=raw_records` (every other consumer in the process, Faust's, is
untouched):

- the fetcher hands over the reader's record objects instead of `ConsumerRecord`s;
- `getmany` takes each record batch as one list (`list(batch)`, in C) instead of one
  generator step per record. The batch-level rules are aiokafka's own, re-stated in
  `_batches`: CRC check, aborted transactions skipped under read_committed, control
  batches skipped, records before the fetch offset dropped. Positions advance exactly as
  aiokafka's do: past the last record taken, or to the batch's next offset once a batch
  is fully taken (tests/unit/test_fetch.py compares both drains record by record).

And for every consumer, the fetched bytes of a partition are kept next to aiokafka's
record reader, so the batch loop checks the CRCs of a whole fetch with the CPU's CRC
instruction (google-crc32c) instead of aiokafka's table-driven code, batch by batch.

If this aiokafka lacks the private pieces this relies on (a version we were not tested
with), nothing is changed and the batch loop gets `ConsumerRecord`s one by one, which
have the same `offset` and `value` attributes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import Any

_crc32c: Any
try:  # hardware CRC-32C; without it aiokafka's own check runs
    import google_crc32c as _crc32c
except ImportError:  # pragma: no cover
    _crc32c = None

log = logging.getLogger(__name__)

# A v2 record batch: base offset (8 bytes), length (4), leader epoch (4), magic (1), CRC
# (4), then the attributes and the rest, which the CRC covers.
_BASE_END, _LENGTH_END, _MAGIC, _V2_CRC_END = 8, 12, 16, 21


def raw_records(value: bytes | None) -> bytes | None:
    """The marker deserializer: an identity function, never called once installed."""
    return value


# Called by the fetcher as `_consumer_record(tp, record)`: `{}.get(tp, record)` returns
# the record itself, in C, with no Python frame per message.
_RECORD_ITSELF: Any = {}.get

# What install() relies on, besides the classes themselves.
_PARTITION_RECORDS_API = (
    "_consumer_record", "_consume_aborted_up_to", "_contains_abort_marker", "_unpack_records",
)  # fmt: skip
_FETCH_RESULT_API = ("getall", "check_assignment", "has_more", "_update_position")


def crcs_ok(data: bytes) -> bool:
    """True if every whole record batch in a fetched partition's bytes is of format v2 and
    carries a right CRC-32C, checked with the CPU's CRC instruction (about ten times the
    speed of aiokafka's table-driven check). False means "let aiokafka check each batch":
    a bad CRC, an older format, or no hardware CRC here. A last batch cut short by the
    fetch size is skipped, as aiokafka skips it."""
    if _crc32c is None:
        return False
    value, n, pos = _crc32c.value, len(data), 0
    view = memoryview(data)
    while pos + _V2_CRC_END <= n:
        size = _LENGTH_END + int.from_bytes(data[pos + _BASE_END : pos + _LENGTH_END], "big")
        if pos + size > n:
            break  # cut short: not a batch of this fetch
        if data[pos + _MAGIC] != 2 or size < _V2_CRC_END:
            return False
        crc = int.from_bytes(data[pos + _V2_CRC_END - 4 : pos + _V2_CRC_END], "big")
        if value(bytes(view[pos + _V2_CRC_END : pos + size])) != crc:
            return False
        pos += size
    return True


def _batches(part: Any, read_committed: int) -> Iterator[tuple[list[Any], int]]:
    """Each data batch of a fetch as (its records at or after the fetch offset, the batch's
    next offset); the same batch-level rules as aiokafka's `_unpack_records`."""
    from aiokafka.errors import CorruptRecordException

    records = part._records
    data = getattr(records, "data", None)  # see _KeptBytes
    check_each = part._check_crcs and not (data is not None and crcs_ok(data))
    while records.has_next():
        batch = records.next_batch()
        if check_each and not batch.validate_crc():
            # The fetch is dropped with the error and fetched again, as aiokafka does.
            raise CorruptRecordException(f"Invalid CRC - {part._tp}")
        if part._isolation_level == read_committed and batch.producer_id is not None:
            part._consume_aborted_up_to(batch.base_offset)
            if batch.is_control_batch and part._contains_abort_marker(batch):
                part._aborted_producers.discard(batch.producer_id)
            if batch.is_transactional and batch.producer_id in part._aborted_producers:
                part.next_fetch_offset = batch.next_offset
                continue
        if batch.is_control_batch:
            part.next_fetch_offset = batch.next_offset
            continue
        got = list(batch)
        start = part.next_fetch_offset
        if got and got[0].offset < start:  # a re-fetched batch starts before the position
            got = [r for r in got if r.offset >= start]
        yield got, batch.next_offset


class _Drain:
    """Takes records from one fetched partition, whole batches at a time."""

    __slots__ = ("_batches", "_end", "_left", "_part")

    def __init__(self, part: Any, read_committed: int) -> None:
        self._part: Any = part
        self._batches: Iterator[tuple[list[Any], int]] | None = _batches(part, read_committed)
        self._left: list[Any] = []  # records of the current batch not yet taken
        self._end = 0  # the current batch's next offset

    def take(self, max_records: int | None) -> tuple[list[Any], bool]:
        """Up to `max_records` records (None: all), and whether the fetch is used up."""
        out: list[Any] = []
        part = self._part
        while max_records is None or len(out) < max_records:
            if not self._left:
                nxt = next(self._batches, None) if self._batches is not None else None
                if nxt is None:
                    return out, True
                self._left, self._end = nxt
                if not self._left:
                    part.next_fetch_offset = self._end  # compacted away: nothing to take
                    continue
            left = self._left
            room = len(left) if max_records is None else max_records - len(out)
            if room >= len(left):
                out.extend(left)
                self._left = []
                part.next_fetch_offset = self._end
            else:
                out.extend(left[:room])
                self._left = left[room:]
                part.next_fetch_offset = left[room - 1].offset + 1
        return out, False

    def close(self) -> None:
        """Break the reference cycle through the partition's records: the fetch buffer
        (megabytes) is then freed at once instead of at the next full collection."""
        part = self._part
        if part is not None:
            part._anonstream_drain = None
            part._records_iterator = None
        self._part = self._batches = None
        self._left = []

    def one_by_one(self) -> Iterator[Any]:
        """For `getone`, which iterates the partition's records."""
        while True:
            got, _ = self.take(1)
            if not got:
                return
            yield got[0]


def install() -> bool:
    """Idempotent; True if marked consumers now get raw records in whole batches."""
    try:
        from aiokafka.consumer import fetcher
    except ImportError:  # pragma: no cover - a different aiokafka layout
        return False
    part_cls = getattr(fetcher, "PartitionRecords", None)
    result_cls = getattr(fetcher, "FetchResult", None)
    read_committed = getattr(fetcher, "READ_COMMITTED", None)
    if (
        part_cls is None
        or result_cls is None
        or read_committed is None
        or not all(hasattr(part_cls, a) for a in _PARTITION_RECORDS_API)
        or not all(hasattr(result_cls, a) for a in _FETCH_RESULT_API)
    ):
        log.warning(
            "this aiokafka's fetcher is not the one we know (supported: >=0.14.0,<0.15); "
            "using ConsumerRecord, which costs about 80 % more fetch CPU"
        )
        return False
    original_init = part_cls.__init__
    if getattr(original_init, "_anonstream_raw", False):
        return True
    original_getall = result_cls.getall
    memory_records = getattr(fetcher, "MemoryRecords", None)
    if memory_records is not None and _crc32c is not None:

        class _KeptBytes(memory_records):  # type: ignore[misc, valid-type]
            """aiokafka's record reader, keeping the fetched bytes for `crcs_ok`."""

            def __init__(self, data: bytes) -> None:
                super().__init__(data)
                self.data = data

        fetcher.MemoryRecords = _KeptBytes

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if getattr(self, "_value_deserializer", None) is raw_records:
            self._consumer_record = _RECORD_ITSELF  # shadows the method, for this fetch only
            self._anonstream_drain = drain = _Drain(self, read_committed)
            self._records_iterator = drain.one_by_one()

    def getall(self: Any, max_records: int | None = None) -> list[Any]:
        drain = getattr(self._partition_records, "_anonstream_drain", None)
        if drain is None:
            return original_getall(self, max_records)
        if not self.check_assignment(self._topic_partition) or not self.has_more():
            drain.close()
            return []
        out, used_up = drain.take(max_records)
        self._update_position()
        if used_up:
            drain.close()
            self._partition_records = None
        return out

    __init__._anonstream_raw = True  # type: ignore[attr-defined]
    part_cls.__init__ = __init__
    result_cls.getall = getall
    return True


def position_now(consumer: Any, tp: Any) -> int | None:
    """The consumer's position in `tp`, or None while it has none (a reset under way),
    without waiting as the public `position()` does."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
        return int(state.position) if state.has_valid_position else None
    except AttributeError:  # pragma: no cover - an aiokafka we were not tested with
        return None


async def committed_with_metadata(consumer: Any, tps: Sequence[Any]) -> dict[Any, Any]:
    """The group's committed `OffsetAndMetadata` of each of `tps` (absent: none committed);
    the metadata holds the checkpoints, which the public `committed()` does not return."""
    return dict(await consumer._coordinator.fetch_committed_offsets(list(tps)))


async def send_admin_request(admin: Any, request: Any) -> Any:
    """Send one protocol request through a started admin client; its response."""
    return await admin._send_request(request)


def create_acls_request(*fields: Any) -> Any:
    """aiokafka's `CreateAclsRequest` (the protocol's own field order), for
    `send_admin_request`."""
    from aiokafka.protocol.admin import CreateAclsRequest

    return CreateAclsRequest(*fields)


async def probe_metadata(
    host: str, port: int, topics: list[str], timeout: float, **conn_options: Any
) -> Any:
    """Connect (and authenticate) to one broker and ask for `topics`' metadata, never
    auto-creating them; the response. `conn_options` are `create_conn`'s."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    conn = await asyncio.wait_for(
        create_conn(
            host, port, client_id="anonstream-preflight",
            request_timeout_ms=max(1000, int(timeout * 1000)), **conn_options,
        ),
        timeout,
    )  # fmt: skip
    try:
        # Never auto-create: a broker that does would make the topics with its default count.
        return await asyncio.wait_for(
            conn.send(MetadataRequest(topics, allow_auto_topic_creation=False)), timeout
        )
    finally:
        conn.close()


def leave_group_on_stop(consumer: Any) -> None:
    """Make a static member (group.instance.id) leave its group when it is stopped, as a
    dynamic one does.

    aiokafka skips LeaveGroup on stop for static members (KIP-345: a restarted slot takes
    its place without a rebalance). A finished backfill has no successor, and would keep
    the group from being empty, so an offset reset would fail, until the session timeout.
    With the instance id cleared, the stop sends LeaveGroup by member id, which the broker
    accepts for a static member too (tests/integration/test_dp_ledger.py resets the offsets
    right after such a run)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and hasattr(coordinator, "_group_instance_id"):
        coordinator._group_instance_id = None
