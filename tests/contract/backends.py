"""The two backends of the loop's contract suite: the in-memory broker (unit tier) and the
real local broker (integration tier). Each offers the same few moves the suite makes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from anonstream.broker.topics import acreate_topics
from anonstream.memory_broker import MemoryBroker
from anonstream.runtime.clients import Clients, KafkaClients
from anonstream.runtime.topic_end import partitions_of, read_to_end
from anonstream.settings import Settings


class Backend(Protocol):
    name: str
    bootstrap: str
    clients: Clients

    async def create_topics(self, topics: dict[str, int]) -> None: ...

    async def produce(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        """Committed writes, each (partition, value)."""
        ...

    async def produce_aborted(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        """Writes of an upstream transaction that aborts."""
        ...

    async def read(self, topics: list[str]) -> list[bytes]:
        """Every value a read_committed reader sees, from the beginning to the end."""
        ...

    async def rebalance(self, group_id: str, done: Callable[[], bool]) -> None:
        """Make the group revoke and reassign its partitions; return once `done()`."""
        ...

    async def fence(self, settings: Settings, transactional_id: str) -> None:
        """Start another producer of `transactional_id`: the one in use is fenced."""
        ...

    async def close(self) -> None:
        """Stop the clients the backend started for a scenario."""
        ...


class MemoryBackend:
    name = "memory"
    bootstrap = "memory:0"

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.clients: Clients = self.broker

    async def create_topics(self, topics: dict[str, int]) -> None:
        for topic, n in topics.items():
            self.broker.create_topic(topic, n)

    async def produce(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        for partition, value in values:
            self.broker.append(topic, value, partition=partition)

    async def produce_aborted(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        p = self.broker.producer(Settings(), "upstream-aborted")
        await p.start()
        await p.begin_transaction()
        for partition, value in values:
            await p.send(topic, value, partition=partition)
        await p.abort_transaction()

    async def read(self, topics: list[str]) -> list[bytes]:
        return [r.value or b"" for t in topics for r in self.broker.read(t)]

    async def rebalance(self, group_id: str, done: Callable[[], bool]) -> None:
        await self.broker.rebalance(group_id)
        assert done()

    async def fence(self, settings: Settings, transactional_id: str) -> None:
        await self.broker.producer(settings, transactional_id).start()

    async def close(self) -> None:
        return None


class KafkaBackend:
    name = "kafka"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.clients: Clients = KafkaClients()
        self._fencers: list[Any] = []
        self._members: list[Any] = []

    async def create_topics(self, topics: dict[str, int]) -> None:
        await acreate_topics(self.bootstrap, topics)

    async def produce(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True)
        await p.start()
        try:
            for partition, value in values:
                await p.send(topic, value, partition=partition)
            await p.flush()
        finally:
            await p.stop()

    async def produce_aborted(self, topic: str, values: list[tuple[int, bytes]]) -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, transactional_id=f"upstream-aborted-{topic}"
        )
        await p.start()
        try:
            await p.begin_transaction()
            for partition, value in values:
                await p.send(topic, value, partition=partition)
            await p.flush()
            await p.abort_transaction()
        finally:
            await p.stop()

    async def read(self, topics: list[str]) -> list[bytes]:
        out: list[bytes] = []
        for topic in topics:
            c = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                isolation_level="read_committed",
            )  # fmt: skip
            await c.start()
            try:
                tps = await partitions_of(c, topic)
                async for _, records in read_to_end(c, tps, timeout=60):
                    out.extend(r.value for r in records)
            finally:
                await c.stop()
        return out

    async def rebalance(self, group_id: str, done: Callable[[], bool]) -> None:
        """Another member joins the group, subscribed to a topic of its own: Kafka's eager
        protocol revokes the worker's partitions and gives them back."""
        other = f"contract-other-{group_id}"
        await acreate_topics(self.bootstrap, {other: 1})
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group_id)
        await c.start()
        self._members.append(c)
        c.subscribe([other])
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, "no rebalance within 60 s"
            await asyncio.sleep(0.05)

    async def fence(self, settings: Settings, transactional_id: str) -> None:
        p = self.clients.producer(settings, transactional_id)
        await p.start()
        self._fencers.append(p)

    async def close(self) -> None:
        members, fencers, self._members, self._fencers = self._members, self._fencers, [], []
        for c in members:
            await c.stop()
        for p in fencers:
            await p.stop()
