"""The worker's one transactional producer: every write of the loop, in transactions.

Each transaction carries a step's releases, partials, dead letters and privacy-ledger
charges AND the consumer offsets with their checkpoints, committed atomically: consumers
reading with isolation_level=read_committed see each release exactly once, and a restart
resumes exactly after the last committed step. A producer whose transaction broke is
replaced (see `replace`); one fenced by a newer producer of the same transactional id, or
refused by the broker, is fatal (`FATAL`): another worker took over this slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from anonstream.core.pipeline import Pipeline
from anonstream.core.step import DeadLetter, StepResult
from anonstream.metrics import Metrics
from anonstream.runtime.clients import Clients, Producer
from anonstream.runtime.ledger import KafkaLedgerStore
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")

MAX_PRODUCER_RESTARTS = 5  # within 5 minutes; past that the worker exits (1)

# Another worker took over this slot (a zombie must stop), or the broker says no: a new
# producer would not help.
FATAL = (
    ProducerFenced,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


class Transactions:
    """The producer, its open transaction, and the ledger charges that ride in it."""

    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        transactional_id: str,
        metrics: Metrics,
        ledger: KafkaLedgerStore | None = None,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.transactional_id = transactional_id
        self.metrics = metrics
        self.ledger = ledger
        self.producer: Producer | None = None
        self.open = False  # a transaction is open
        self.restarts = 0
        self._failures: list[float] = []

    def create(self) -> Producer:
        """A producer for this slot, not started (`start` registers its id)."""
        self.producer = self.clients.producer(self.settings, self.transactional_id)
        return self.producer

    async def begin(self) -> None:
        assert self.producer is not None
        if not self.open:
            await self.producer.begin_transaction()
            self.open = True

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """One record in the open transaction (begun if need be); await the result for
        its delivery."""
        assert self.producer is not None
        await self.begin()
        return await self.producer.send(topic, value, key=key, partition=partition, headers=headers)

    async def deliver(
        self,
        pipeline: Pipeline,
        step: StepResult,
        outputs: Mapping[tuple[str, str], str],
        dead_letter_topic: str,
    ) -> None:
        """A step's records in the open transaction (begun if need be), acknowledged on
        return: partials, releases to their output topics (`outputs`: by pipeline and
        output name), the privacy-ledger charges of the step's windows, dead letters."""
        await self.begin()
        futures = []
        for topic, partition, key, value in step.forward:
            futures.append(await self.send(topic, value, key=key or None, partition=partition))
        for rec in step.releases:
            topic = outputs[(pipeline.name, rec["output"])]
            futures.append(
                await self.send(topic, orjson.dumps(rec), key=rec["release_id"].encode())
            )
        futures += await self.send_charges()
        for dl in step.dead_letters:
            futures.append(await self.send(
                dead_letter_topic, dl.value, headers=dead_letter_headers(pipeline, dl)
            ))  # fmt: skip
            log.warning(
                "rejected message %s offset %s: %s%s", _where(dl), dl.offset, dl.reason,
                f" ({dl.field})" if dl.field else "",
            )  # fmt: skip
        if futures:
            await asyncio.gather(*futures)

    async def send_charges(self) -> list[Awaitable[Any]]:
        """The privacy-ledger charges of the windows released since the last send."""
        if self.ledger is None:
            return []
        return [
            await self.send(self.ledger.topic, value, key=key) for key, value in self.ledger.drain()
        ]

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str) -> None:
        """The offsets (with their checkpoints), then the whole transaction."""
        assert self.producer is not None
        await self.begin()
        if offsets:
            await self.producer.send_offsets_to_transaction(offsets, group_id)
        await self.producer.commit_transaction()
        if self.ledger is not None:
            self.ledger.committed()
        self.open = False

    async def abort(self) -> None:
        """Abort the open transaction, if any: none of its writes is ever read."""
        if self.producer is not None and self.open:
            await self.producer.abort_transaction()
            self.open = False

    async def abandon(self) -> None:
        """Abort the open transaction if the producer still can (on the way out). A fenced
        or failed one cannot (aiokafka asserts on it, hiding why the worker stops); the
        broker aborts its transaction anyway, at the next producer of this transactional
        id or at the transaction timeout."""
        try:
            await self.abort()
        except Exception as exc:  # the error that stops the worker is the one to see
            log.warning("the open transaction could not be aborted (%s)", type(exc).__name__)
        self.open = False

    async def replace(self, exc: KafkaError) -> None:
        """A producer whose transaction broke (a produce request that timed out and left
        its sequence numbers behind, an expired batch, a lost producer id) cannot go on.
        Rather than exit, start a new one with the same transactional id, which aborts the
        open transaction on the broker; the caller resumes from the last commit. Too many
        in a short time is a real fault: give up (re-raise, exit 1)."""
        now = time.monotonic()
        self._failures = [t for t in self._failures if now - t < 300] + [now]
        if len(self._failures) > MAX_PRODUCER_RESTARTS:
            raise exc
        log.warning(
            "the producer failed (%s); restarting it and resuming from the last commit",
            type(exc).__name__,
        )
        old, self.producer = self.producer, None
        self.open = False
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        await self.create().start()
        self.restarts += 1
        self.metrics.producer_restarts.inc()


def _where(dl: DeadLetter) -> str:
    if isinstance(dl.partition, tuple):
        return f"{dl.partition[0]}/{dl.partition[1]}"
    return str(dl.partition)


def dead_letter_headers(pipeline: Pipeline, dl: DeadLetter) -> list[tuple[str, bytes]]:
    """Why a message was rejected, and where it came from (the dead-letter topic's headers)."""
    return [
        ("anonstream.reason", dl.reason.encode()),
        ("anonstream.field", (dl.field or "").encode()),
        ("anonstream.pipeline", pipeline.name.encode()),
        ("anonstream.source", f"{_where(dl)}/{dl.offset}".encode()),
    ]
