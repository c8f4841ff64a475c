"""An in-memory Kafka for tests of the batch loop: a public, reusable test part.

`MemoryBroker` is a `Clients` (runtime/clients.py): give it to `BatchLoop(clients=...)` and
the loop runs in one process with no broker, in milliseconds. It implements only what the
loop uses, with Kafka's meanings:

- topics of numbered partitions; a partition is a log whose offsets never move;
- transactions: a transactional producer's records sit in the log as soon as they are
  sent, invisible to read_committed readers until their transaction commits, for ever if
  it aborts; the offsets sent to a transaction are committed with it, atomically;
- one live producer per transactional id: starting a new one aborts the old one's open
  transaction and fences it (its next call raises `ProducerFenced`);
- consumer groups with the eager protocol: a member joining or leaving (or `rebalance`)
  revokes every member's partitions, then assigns each topic's partitions round-robin
  among the members subscribed to it, calling the members' rebalance listeners;
- read_committed consumers: they stop at the first record of an open transaction (the
  last stable offset) and step over aborted ones.

What it does not do: replication, time-based retention, compaction, quotas, control
records taking offsets, or any network failure (tests inject those around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from anonstream.runtime.quiet import FetchState
from anonstream.settings import Settings

COMMITTED, ABORTED = "committed", "aborted"


@dataclass(slots=True)
class MemoryRecord:
    """One record, as a consumer hands it over (aiokafka's field names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    state: object = COMMITTED  # COMMITTED, ABORTED, or the open transaction that wrote it


class MemoryBroker:
    """Topics, consumer groups and transactions in memory; see the module's docstring."""

    def __init__(self, default_partitions: int = 1) -> None:
        self.default_partitions = default_partitions
        self.logs: dict[str, list[list[MemoryRecord]]] = {}
        self.groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}  # transactional id -> epoch of its live producer
        self._live: dict[str, MemoryProducer] = {}
        self._new_data = asyncio.Event()
        self._round_robin = itertools.count()

    # -- topics -----------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(partitions or self.default_partitions)]

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        state: object = COMMITTED,
    ) -> MemoryRecord:
        """Write one record (committed unless `state` says otherwise), auto-creating its
        topic as a local broker does."""
        self.create_topic(topic)
        parts = self.logs[topic]
        if partition is None:
            n = zlib.crc32(key) if key else next(self._round_robin)
            partition = n % len(parts)
        log = parts[partition]
        rec = MemoryRecord(topic, partition, len(log), key, value, headers or [], state)
        log.append(rec)
        self._wake()
        return rec

    def read(self, topic: str, *, committed_only: bool = True) -> list[MemoryRecord]:
        """Every record of `topic` a read_committed reader sees (or every record)."""
        return [
            r
            for log in self.logs.get(topic, [])
            for r in log
            if not committed_only or r.state is COMMITTED
        ]

    def last_stable_offset(self, tp: TopicPartition) -> int:
        log = self.logs[tp.topic][tp.partition]
        for r in log:
            if r.state is not COMMITTED and r.state is not ABORTED:
                return r.offset
        return len(log)

    def _wake(self) -> None:
        self._new_data.set()
        self._new_data = asyncio.Event()

    # -- groups ---------------------------------------------------------------------------
    def group(self, group_id: str) -> _Group:
        return self.groups.setdefault(group_id, _Group())

    async def rebalance(self, group_id: str) -> None:
        """Revoke every member's partitions and assign them again (eager protocol)."""
        g = self.group(group_id)
        members = [m for m in g.members if m.subscription]
        for m in members:
            revoked, m.assigned = sorted(m.assigned), set()
            if m.listener is not None:
                await m.listener.on_partitions_revoked(revoked)
        for topic in sorted({t for m in members for t in m.subscription}):
            subscribed = [m for m in members if topic in m.subscription]
            for p in range(len(self.logs.get(topic, []))):
                subscribed[p % len(subscribed)].assigned.add(TopicPartition(topic, p))
        for m in members:
            for tp in m.assigned:
                m.positions.pop(tp, None)  # a new owner starts at the committed offset
            if m.listener is not None:
                await m.listener.on_partitions_assigned(sorted(m.assigned))

    # -- Clients ------------------------------------------------------------------------
    def consumer(self, settings: Settings) -> MemoryConsumer:
        return MemoryConsumer(self, settings.group_id)

    def producer(self, settings: Settings, transactional_id: str) -> MemoryProducer:
        return MemoryProducer(self, transactional_id)

    async def committed(
        self, consumer: Any, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        offsets = self.group(consumer.group_id).offsets
        return {tp: offsets[tp] for tp in partitions if tp in offsets}

    def fetch_state(self, consumer: Any, partition: TopicPartition) -> FetchState:
        return consumer.fetch_state(partition)

    def install_fast_fetch(self) -> bool:
        return True  # nothing to install: records are objects already

    def leave_on_stop(self, consumer: Any) -> None:
        pass  # members leave on stop here: there is no session timeout

    # -- transactions ---------------------------------------------------------------------
    def _register(self, producer: MemoryProducer) -> int:
        """A producer starts: the previous one of its id is fenced, its transaction aborted."""
        old = self._live.get(producer.transactional_id)
        if old is not None and old.txn is not None:
            self._finish(old.txn, commit=False)
            old.txn = None
        epoch = self._epochs.get(producer.transactional_id, -1) + 1
        self._epochs[producer.transactional_id] = epoch
        self._live[producer.transactional_id] = producer
        return epoch

    def _check(self, producer: MemoryProducer) -> None:
        if self._epochs.get(producer.transactional_id) != producer.epoch:
            raise ProducerFenced()

    def _finish(self, txn: _Txn, *, commit: bool) -> None:
        for rec in txn.records:
            rec.state = COMMITTED if commit else ABORTED
        if commit:
            for group_id, offsets in txn.offsets.items():
                self.group(group_id).offsets.update(offsets)
        self._wake()


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)


@dataclass
class _Txn:
    records: list[MemoryRecord] = field(default_factory=list)
    offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = field(default_factory=dict)


class MemoryConsumer:
    """A read_committed group member (the loop's `Consumer`)."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.subscription: set[str] = set()
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self._fetched: dict[TopicPartition, tuple[int, int]] = {}  # highwater, when
        self._joined = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Leave the group: a stopped consumer owns and reads nothing (as in Kafka, where
        its partitions now belong to another member)."""
        g = self.broker.group(self.group_id)
        self.assigned, self.positions = set(), {}
        if self in g.members:
            g.members.remove(self)
            await self.broker.rebalance(self.group_id)

    async def topics(self) -> set[str]:
        return set(self.broker.logs)

    def subscribe(self, topics: list[str], *, listener: Any = None) -> None:
        self.subscription, self.listener = set(topics), listener
        self._joined = False  # joins at its next fetch, as aiokafka's does

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        parts = self.broker.logs.get(topic)
        return None if parts is None else set(range(len(parts)))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("Offset must be a positive integer")  # as aiokafka's seek
        if partition not in self.assigned:
            raise IllegalStateError(f"no current assignment for partition {partition}")
        self.positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.seek(tp, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.last_stable_offset(tp) for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        if partition not in self.assigned:
            raise IllegalStateError(f"no current assignment for partition {partition}")
        return self._position(partition)

    def _position(self, tp: TopicPartition) -> int:
        pos = self.positions.get(tp)
        if pos is None:
            meta = self.broker.group(self.group_id).offsets.get(tp)
            pos = self.positions[tp] = meta.offset if meta is not None else 0
        return pos

    def fetch_state(self, tp: TopicPartition) -> FetchState:
        hw, when = self._fetched.get(tp, (None, None))
        pos = self.positions.get(tp) if tp in self.assigned else None
        return FetchState(pos, hw, when)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        if not self._joined:
            self._joined = True
            g = self.broker.group(self.group_id)
            if self not in g.members:
                g.members.append(self)
            await self.broker.rebalance(self.group_id)
        out = self._take(max_records)
        if not out and timeout_ms > 0:
            wake = self.broker._new_data
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout_ms / 1000)
            out = self._take(max_records)
        return out

    def _take(self, max_records: int | None) -> dict[TopicPartition, list[Any]]:
        budget = max_records if max_records is not None else 1 << 62
        now = time.time_ns() // 1_000_000
        out: dict[TopicPartition, list[Any]] = {}
        for tp in sorted(self.assigned):
            log = self.broker.logs[tp.topic][tp.partition]
            pos, end = self._position(tp), self.broker.last_stable_offset(tp)
            self._fetched[tp] = (len(log), now)
            taken = []
            while pos < end and budget > 0:
                rec = log[pos]
                pos += 1
                if rec.state is COMMITTED:
                    taken.append(rec)
                    budget -= 1
            self.positions[tp] = pos
            if taken:
                out[tp] = taken
        return out


class MemoryProducer:
    """A transactional producer (the loop's `Producer`)."""

    def __init__(self, broker: MemoryBroker, transactional_id: str) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.epoch = -1
        self.txn: _Txn | None = None

    async def start(self) -> None:
        self.epoch = self.broker._register(self)

    async def stop(self) -> None:
        return None  # an open transaction stays open until the next producer of this id

    async def begin_transaction(self) -> None:
        self.broker._check(self)
        if self.txn is not None:
            raise IllegalStateError("a transaction is already open")
        self.txn = _Txn()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[MemoryRecord]:
        self.broker._check(self)
        if self.txn is None:
            raise IllegalStateError("send outside a transaction")
        rec = self.broker.append(
            topic, value, key=key, partition=partition, headers=headers, state=self.txn
        )
        self.txn.records.append(rec)
        done: asyncio.Future[MemoryRecord] = asyncio.get_running_loop().create_future()
        done.set_result(rec)
        return done

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str
    ) -> None:
        self.broker._check(self)
        if self.txn is None:
            raise IllegalStateError("offsets outside a transaction")
        self.txn.offsets.setdefault(group_id, {}).update(offsets)

    async def commit_transaction(self) -> None:
        self._end(commit=True)

    async def abort_transaction(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        self.broker._check(self)
        if self.txn is None:
            raise IllegalStateError("no open transaction")
        txn, self.txn = self.txn, None
        self.broker._finish(txn, commit=commit)
