"""The in-memory broker keeps Kafka's ownership: a consumer that left its group reads
nothing (its partitions are another member's), and a negative seek is refused as
aiokafka refuses it instead of reading the log from its end."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from anonstream.memory_broker import MemoryBroker
from anonstream.settings import Settings


def test_a_stopped_consumer_no_longer_owns_or_reads_its_partitions() -> None:
    async def run() -> None:
        broker, settings = MemoryBroker(), Settings()
        broker.create_topic("t", 2)
        first, second = broker.consumer(settings), broker.consumer(settings)
        for c in (first, second):
            c.subscribe(["t"])
            await c.getmany(timeout_ms=0)
        assert second.assignment() == {TopicPartition("t", 1)}
        await second.stop()
        assert second.assignment() == set()
        assert first.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
        broker.append("t", b"x", partition=1)
        assert await second.getmany(timeout_ms=0) == {}
        got = await first.getmany(timeout_ms=0)
        assert [r.value for r in got[TopicPartition("t", 1)]] == [b"x"]

    asyncio.run(run())


def test_a_negative_seek_is_refused() -> None:
    async def run() -> None:
        broker, settings = MemoryBroker(), Settings()
        for v in (b"a", b"b", b"c"):
            broker.append("t", v)
        c = broker.consumer(settings)
        c.subscribe(["t"])
        await c.getmany(timeout_ms=0)
        with pytest.raises(ValueError, match="positive"):
            c.seek(TopicPartition("t", 0), -2)
        c.seek(TopicPartition("t", 0), 1)
        got = await c.getmany(timeout_ms=0)
        assert [r.value for r in got[TopicPartition("t", 0)]] == [b"b", b"c"]

    asyncio.run(run())
