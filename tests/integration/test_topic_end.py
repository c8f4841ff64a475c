"""Reading a topic to its end on the real broker (runtime/topic_end.py): it ends though the
last offsets are transaction markers and aborted records, returns only committed records
under read_committed, and says so when the time runs out; `anonstream audit` reads through it."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from anonstream.audit import audit_topic
from anonstream.broker.topics import create_topics
from anonstream.runtime.topic_end import EndNotReached, read_to_end

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _write(bootstrap: str, topic: str) -> None:
    """Partition 0: two plain records, an aborted transaction, a committed one (so its
    last offset is a commit marker). Partition 1: only an aborted transaction."""
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    txn = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("txn"))
    await plain.start()
    await txn.start()
    try:
        for v in (b"a", b"b"):
            await plain.send_and_wait(topic, v, partition=0)
        await txn.begin_transaction()
        await txn.send(topic, b"aborted-0", partition=0)
        await txn.send(topic, b"aborted-1", partition=1)
        await txn.abort_transaction()
        await txn.begin_transaction()
        await txn.send(topic, b"c", partition=0)
        await txn.commit_transaction()
    finally:
        await txn.stop()
        await plain.stop()


async def _read(bootstrap: str, topic: str, **kwargs: float) -> list[tuple[int, bytes]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        return [
            (tp.partition, r.value)
            async for tp, records in read_to_end(consumer, tps, **kwargs)
            for r in records
        ]
    finally:
        await consumer.stop()


async def test_reads_committed_records_and_ends_past_markers_and_aborted_ones(
    kafka_bootstrap: str,
) -> None:
    topic = unique("to-end")
    create_topics(kafka_bootstrap, {topic: 2})
    await _write(kafka_bootstrap, topic)
    got = await _read(kafka_bootstrap, topic, timeout=60)
    assert got == [(0, b"a"), (0, b"b"), (0, b"c")]


async def test_an_empty_topic_ends_at_once_and_a_timeout_is_an_error(
    kafka_bootstrap: str,
) -> None:
    empty = unique("to-end-empty")
    create_topics(kafka_bootstrap, {empty: 2})
    assert await _read(kafka_bootstrap, empty, timeout=0) == []  # nothing to wait for
    full = unique("to-end-full")
    create_topics(kafka_bootstrap, {full: 2})
    await _write(kafka_bootstrap, full)
    with pytest.raises(EndNotReached, match=f"of {full} not read to their end within 0 s"):
        await _read(kafka_bootstrap, full, timeout=0)


async def test_the_audit_reads_a_topic_to_its_end(kafka_bootstrap: str) -> None:
    topic = unique("to-end-audit")
    create_topics(kafka_bootstrap, {topic: 2})
    await _write(kafka_bootstrap, topic)
    report = await audit_topic(kafka_bootstrap, topic, timeout=60)
    assert report.records == 3  # the committed ones, none of them a release record
    assert not any("timeout" in str(f) for f in report.findings)
