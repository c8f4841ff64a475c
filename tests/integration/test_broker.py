"""The real local Kafka broker: produce/consume, topics, transactions, lifecycle."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from anonstream.broker.local import BrokerError, LocalKafka, kafka_down, kafka_status, kafka_up
from anonstream.broker.topics import create_topics

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def consume_all(
    bootstrap: str, topic: str, expected: int, *, isolation_level: str = "read_uncommitted"
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        for _ in range(100):
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                values.extend(r.value for r in records if r.value is not None)
            if len(values) >= expected:
                # one more poll: nothing beyond what we expect may show up
                extra = await consumer.getmany(timeout_ms=300)
                values.extend(r.value for rs in extra.values() for r in rs if r.value is not None)
                break
    finally:
        await consumer.stop()
    return values


async def test_produce_and_consume(kafka_bootstrap: str) -> None:
    topic = unique("roundtrip")  # auto-created on first produce
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"msg-{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    assert await consume_all(kafka_bootstrap, topic, 5) == [f"msg-{i}".encode() for i in range(5)]


async def test_consumer_group_commits(kafka_bootstrap: str) -> None:
    topic, group = unique("grouped"), unique("group")
    create_topics(kafka_bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, b"x", partition=i % 2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        for _ in range(100):
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(rs) for rs in batches.values())
            if seen >= 4:
                break
        assert seen == 4
        await consumer.commit()
        assert await consumer.committed(TopicPartition(topic, 0)) == 2
    finally:
        await consumer.stop()


async def test_create_topics_partitions_and_idempotent(kafka_bootstrap: str) -> None:
    raw, dead = unique("raw"), unique("dead-letter")
    configs = {dead: {"retention.ms": "60000", "segment.ms": "10000"}}
    create_topics(kafka_bootstrap, {raw: 4, dead: 1}, configs)
    create_topics(kafka_bootstrap, {raw: 4, dead: 1}, configs)  # no-op

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([raw, dead])}
        assert len(described[raw]["partitions"]) == 4
        assert len(described[dead]["partitions"]) == 1
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dead, None)]
        )
        entries = {e[0]: e[1] for e in response.resources[0][4]}
        assert entries["retention.ms"] == "60000"
    finally:
        await admin.close()

    with pytest.raises(BrokerError, match="already exists with 4 partitions"):
        create_topics(kafka_bootstrap, {raw: 8})


async def test_create_topics_inside_event_loop(kafka_bootstrap: str) -> None:
    # The sync helper must also work when called from async code (runs on a helper thread).
    topic = unique("from-loop")
    create_topics(kafka_bootstrap, {topic: 3})


async def test_transactions_commit_and_abort(kafka_bootstrap: str) -> None:
    topic = unique("txn")
    create_topics(kafka_bootstrap, {topic: 1})
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique("txn-producer")
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()
    committed = await consume_all(kafka_bootstrap, topic, 2, isolation_level="read_committed")
    assert committed == [b"committed-1", b"committed-2"]
    everything = await consume_all(kafka_bootstrap, topic, 3)
    assert everything == [b"aborted", b"committed-1", b"committed-2"]


def test_stop_kills_the_broker_and_removes_its_data() -> None:
    kafka = LocalKafka(heap_max="384m")
    kafka.start(timeout=90)
    pid, data_dir = kafka.pid, kafka.data_dir
    assert pid is not None and data_dir is not None
    assert psutil.Process(pid).is_running()
    assert (data_dir / "server.properties").is_file()
    assert kafka.time_to_ready is not None and kafka.time_to_ready > 0
    kafka.stop()
    assert not psutil.pid_exists(pid)
    assert not data_dir.exists()
    assert kafka.pid is None
    assert kafka.stop_seconds is not None and kafka.stop_seconds < 20
    kafka.stop()  # idempotent


def test_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "kafka-up.json"
    kafka = kafka_up(state)
    pid, data_dir = kafka.pid, kafka.data_dir
    assert pid is not None and data_dir is not None
    try:
        status = kafka_status(state)
        assert status is not None and status["running"] is True
        assert status["pid"] == pid and status["bootstrap"] == kafka.bootstrap_servers
        assert status["data_dir"] == str(data_dir) and status["started_at"]
        create_topics(status["bootstrap"], {unique("up"): 2})
        with pytest.raises(BrokerError, match="already running"):
            kafka_up(state)
    finally:
        record = kafka_down(state)
    assert record is not None and record["was_running"] is True
    assert not psutil.pid_exists(pid)
    assert not data_dir.exists() and not state.exists()
    assert kafka_status(state) is None


def java_processes_using(data_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(data_dir) in arg for arg in cmdline):
            found.append(proc.pid)
    return found


def test_failed_start_leaves_nothing_behind() -> None:
    kafka = LocalKafka(jvm_args=["-XX:+NoSuchJvmOption"])
    with pytest.raises(BrokerError, match="exited with code") as info:
        kafka.start(timeout=60)
    message = str(info.value)
    assert "NoSuchJvmOption" in message  # the JVM's own output is part of the message
    assert kafka.pid is None and kafka.data_dir is None
    match = re.search(r"(/\S*anonstream-kafka-[^/\s]+)/logs/server\.log", message)
    assert match, message
    data_dir = Path(match.group(1))
    assert not data_dir.exists()
    assert java_processes_using(data_dir) == []


def test_start_timeout_kills_the_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    from anonstream.broker import local

    seen: dict[str, Path] = {}

    def never_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
        if kafka.data_dir is not None:
            seen["data_dir"] = kafka.data_dir
        return False

    monkeypatch.setattr(local, "tcp_accepts", never_accepts)
    kafka = LocalKafka()
    with pytest.raises(BrokerError, match="not ready within the timeout") as info:
        # Long enough for the storage format and the JVM start on a loaded machine (3 s was
        # not), so that the readiness wait is what times out.
        kafka.start(timeout=30)
    assert "server.log" in str(info.value)
    data_dir = seen["data_dir"]
    assert not data_dir.exists()
    assert java_processes_using(data_dir) == []
