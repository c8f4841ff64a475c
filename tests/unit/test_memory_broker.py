"""The in-memory broker keeps Kafka's meanings where the loop relies on them (the loop's
own contract is tests/contract/, run on this broker and on the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from anonstream.memory_broker import MemoryBroker
from anonstream.settings import Settings

TP = TopicPartition("t", 0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_read_committed_stops_at_an_open_transaction_and_skips_aborted_ones() -> None:
    async def scenario() -> None:
        b = MemoryBroker()
        b.create_topic("t", 1)
        b.append("t", b"a")
        p = b.producer(Settings(), "x")
        await p.start()
        await p.begin_transaction()
        await p.send("t", b"aborted", partition=0)
        await p.abort_transaction()
        b.append("t", b"b")
        await p.begin_transaction()
        await p.send("t", b"open", partition=0)
        b.append("t", b"after the open one")
        c = b.consumer(Settings(group_id="g"))
        c.subscribe(["t"])
        got = await c.getmany(timeout_ms=0)
        assert [r.value for r in got[TP]] == [b"a", b"b"]
        assert await c.position(TP) == 3  # past the aborted record, before the open one
        assert await c.end_offsets([TP]) == {TP: 3}
        await p.commit_transaction()
        got = await c.getmany(timeout_ms=0)
        assert [r.value for r in got[TP]] == [b"open", b"after the open one"]

    run(scenario())


def test_a_new_producer_of_an_id_aborts_and_fences_the_old_one() -> None:
    async def scenario() -> None:
        b = MemoryBroker()
        old = b.producer(Settings(), "slot")
        await old.start()
        await old.begin_transaction()
        await old.send("t", b"zombie", partition=0)
        offsets = {TP: OffsetAndMetadata(5, "{}")}
        await old.send_offsets_to_transaction(offsets, "g")
        await b.producer(Settings(), "slot").start()
        assert b.read("t") == [] and b.group("g").offsets == {}
        with pytest.raises(ProducerFenced):
            await old.commit_transaction()

    run(scenario())


def test_offsets_commit_with_their_transaction() -> None:
    async def scenario() -> None:
        b = MemoryBroker()
        p = b.producer(Settings(), "slot")
        await p.start()
        await p.begin_transaction()
        await p.send_offsets_to_transaction({TP: OffsetAndMetadata(7, "m")}, "g")
        assert b.group("g").offsets == {}
        await p.commit_transaction()
        assert b.group("g").offsets == {TP: OffsetAndMetadata(7, "m")}

    run(scenario())


def test_a_rebalance_revokes_all_then_assigns_each_member_its_topics() -> None:
    async def scenario() -> None:
        b = MemoryBroker()
        b.create_topic("t", 2)
        b.create_topic("other", 1)
        calls: list[tuple[str, str, list[TopicPartition]]] = []

        class Listener:
            def __init__(self, name: str) -> None:
                self.name = name

            async def on_partitions_revoked(self, tps: list[TopicPartition]) -> None:
                calls.append((self.name, "revoked", tps))

            async def on_partitions_assigned(self, tps: list[TopicPartition]) -> None:
                calls.append((self.name, "assigned", tps))

        worker, other = b.consumer(Settings(group_id="g")), b.consumer(Settings(group_id="g"))
        worker.subscribe(["t"], listener=Listener("worker"))
        await worker.getmany(timeout_ms=0)
        other.subscribe(["other"], listener=Listener("other"))
        await other.getmany(timeout_ms=0)
        both = [TopicPartition("t", 0), TopicPartition("t", 1)]
        assert calls[-4:] == [
            ("worker", "revoked", both),
            ("other", "revoked", []),
            ("worker", "assigned", both),
            ("other", "assigned", [TopicPartition("other", 0)]),
        ]
        await other.stop()
        assert calls[-2:] == [("worker", "revoked", both), ("worker", "assigned", both)]

    run(scenario())
