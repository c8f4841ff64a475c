"""The privacy ledger of a Kafka worker: a compacted topic written in the release transaction.

Each charge (core/budget.py) becomes one record, keyed by pipeline, output, window and
charge number, on one topic for the whole installation (`ANONSTREAM_LEDGER_TOPIC`, default
`anon.ledger`), whatever the consumer group: a backfill under a new group spends the same
budget. The batch loop sends the charges of a step in the same transaction as its releases
and offsets: either the window's records and its charge are both committed, or neither is
(an aborted step is charged again when it is redone).

The worker reads the topic (read_committed) after every assignment of partitions, before
it releases anything from them, so a restart, a rebalance, a new scale-out worker or a
backfill continues the spending instead of starting again at 0. It reads up to the end the
topic had when the read began, including records of transactions still open then: it waits
until they are committed or aborted (a worker that has just lost the partitions may have
committed a charge whose commit marker is not written yet). Earlier versions kept one topic
per group, `anon.ledger.<group>`: if it exists it is read too (never written), so an
upgraded deployment keeps what it spent. The topic holds no data about people: names, window
bounds and losses only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from anonstream.core.budget import Charge

log = logging.getLogger("anonstream.worker")

# Compacted (one record per key; keys are unique per charge, see `drain`), and a deletion
# marker is kept for ever: a record with no value (a tombstone) would otherwise delete a
# charge and free its budget once compaction and delete.retention.ms had passed; kept, the
# next read meets it and stops the worker ("not a ledger charge") instead.
COMPACTED = {"cleanup.policy": "compact", "delete.retention.ms": str(2**63 - 1)}
# Longer than a transaction may stay open (aiokafka's default transaction timeout, 60 s):
# by then the broker has aborted any transaction of a dead worker.
READ_TIMEOUT_S = 120.0


def legacy_ledger_topic(group_id: str) -> str:
    """The ledger topic of versions before the installation-wide one: read, never written."""
    return f"anon.ledger.{group_id}"


class LedgerNotRead(TimeoutError):
    """The ledger topic could not be read to its end: the worker stops, spending unknown."""


class KafkaLedgerStore:
    """A `LedgerStore` whose appends wait for the loop's transaction (see `drain`)."""

    def __init__(self, topic: str, legacy: str | None = None, writer: str = "") -> None:
        self.topic = topic
        # In the keys: two workers (a backfill beside production) charging one window must
        # not write one key, or compaction would keep one of the two charges.
        self.writer = writer
        self.legacy = legacy if legacy != topic else None  # read too, if it exists
        self._committed: list[Charge] = []
        self._sent: list[Charge] = []  # in the open transaction
        self._pending: list[Charge] = []  # not yet handed to the producer
        self._mine: set[bytes] = set()  # keys this worker wrote: not news when read back
        self._follow_from: int | None = None  # the topic's offset the last read reached
        self._follower: AIOKafkaConsumer | None = None

    # -- LedgerStore -------------------------------------------------------------------
    def load(self) -> list[Charge]:
        """The committed charges: engines are (re)built only after an abort or at start."""
        return list(self._committed)

    def append(self, charge: Charge) -> None:
        self._pending.append(charge)

    # -- the batch loop's side ---------------------------------------------------------
    def drain(self) -> list[tuple[bytes, bytes]]:
        """(key, value) records of the new charges, to send in the open transaction."""
        out = []
        for c in self._pending:
            n = sum(
                1
                for o in (*self._committed, *self._sent)
                if (o.pipeline, o.output, o.start_ms) == (c.pipeline, c.output, c.start_ms)
            )
            key = "/".join(
                str(x) for x in (c.pipeline, c.output, c.start_ms, self.writer, n) if x != ""
            ).encode()
            self._mine.add(key)
            out.append((key, json.dumps(asdict(c), sort_keys=True).encode()))
            self._sent.append(c)
        self._pending = []
        return out

    def committed(self) -> None:
        """The transaction that carried the sent charges is committed."""
        self._committed += self._sent
        self._sent = []

    def abort(self) -> None:
        """The open transaction is aborted: its charges never happened."""
        self._sent, self._pending = [], []

    async def read(
        self, bootstrap: str, client_options: dict[str, Any], timeout: float = READ_TIMEOUT_S
    ) -> None:
        """Every committed charge on the topic (and the legacy topic, if it exists), from
        its beginning to the end it had when the read began, transactions open then
        included (the read waits for them to end)."""
        ends = await _high_watermarks(bootstrap, client_options, [self.topic, self.legacy])
        charges: list[Charge] = []
        if any(ends.values()):
            charges = await _charges(bootstrap, client_options, ends, timeout)
        self._committed = charges
        self._follow_from = ends[TopicPartition(self.topic, 0)]
        if self._follower is not None:
            self._follower.seek(TopicPartition(self.topic, 0), self._follow_from)
        legacy = sum(1 for tp in ends if tp.topic == self.legacy)
        log.info(
            "privacy ledger: %d charge(s) read from %s%s", len(charges), self.topic,
            f" and the earlier per-group topic {self.legacy}" if legacy else "",
        )  # fmt: skip

    async def news(self, bootstrap: str, client_options: dict[str, Any]) -> list[Charge]:
        """Charges other workers committed on the topic since the last `read` (or the last
        news), without waiting: what has been fetched. The loop asks every second, so a
        second deployment's charge of a window is seen before this worker releases it,
        unless both decide within that second (see docs/privacy-model.md)."""
        if self._follow_from is None:
            return []
        tp = TopicPartition(self.topic, 0)
        if self._follower is None:
            self._follower = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                isolation_level="read_committed", client_id="anonstream-ledger",
                **client_options,
            )  # fmt: skip
            await self._follower.start()
            self._follower.assign([tp])
            self._follower.seek(tp, self._follow_from)
        batch = await self._follower.getmany(tp, timeout_ms=0)
        new = []
        for m in batch.get(tp, []):
            if m.key in self._mine:
                continue  # this worker's own charge, already counted
            try:
                new.append(Charge.from_json(m.value))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{tp.topic}: offset {m.offset}: not a ledger charge") from exc
        self._committed += new
        if new:
            log.info(
                "privacy ledger: %d charge(s) by other workers read from %s", len(new), tp.topic
            )
        return new

    async def close(self) -> None:
        if self._follower is not None:
            follower, self._follower = self._follower, None
            await follower.stop()


async def _charges(
    bootstrap: str, client_options: dict[str, Any], ends: dict[TopicPartition, int], timeout: float
) -> list[Charge]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", client_id="anonstream-ledger", **client_options,
    )  # fmt: skip
    await consumer.start()
    charges: list[Charge] = []
    try:
        for tp, msgs in await _read_until(consumer, ends, timeout):
            for m in msgs:
                try:
                    charges.append(Charge.from_json(m.value))
                except (ValueError, TypeError) as exc:
                    # A damaged ledger must stop the worker, never reset spending.
                    raise ValueError(f"{tp.topic}: offset {m.offset}: not a ledger charge") from exc
    finally:
        await consumer.stop()
    return charges


async def _high_watermarks(
    bootstrap: str, client_options: dict[str, Any], topics: list[str | None]
) -> dict[TopicPartition, int]:
    """The end offset of each existing topic's partition, as a read_uncommitted reader sees
    it: past the records of transactions still open (a read_committed end stops before
    them). The ledger topic must exist (the worker creates it before it starts); the legacy
    one may not."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_uncommitted", client_id="anonstream-ledger", **client_options,
    )  # fmt: skip
    await consumer.start()
    try:
        existing = await consumer.topics()
        tps = [  # created with one partition (broker/plan.py): one ordered history
            TopicPartition(topic, 0)
            for i, topic in enumerate(topics)
            if topic is not None and (i == 0 or topic in existing)
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _read_until(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], timeout: float
) -> list[tuple[TopicPartition, list[Any]]]:
    """Committed records of `ends`' partitions from their beginning until the consumer's
    position reaches each end (it moves past aborted records and transaction markers, and
    waits at a transaction still open)."""
    tps = [tp for tp, end in ends.items() if end > 0]
    if not tps:
        return []
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    deadline = time.monotonic() + timeout
    out: list[tuple[TopicPartition, list[Any]]] = []
    while True:
        left = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        if not left:
            return out
        if time.monotonic() >= deadline:
            raise LedgerNotRead(
                f"the privacy ledger ({', '.join(sorted({tp.topic for tp in left}))}) was not "
                f"read to its end within {timeout:g} s (a transaction still open?): no dp "
                "window is released with its spending unknown"
            )
        batch = await consumer.getmany(*left, timeout_ms=500)
        out += [(tp, msgs) for tp, msgs in batch.items() if msgs]
