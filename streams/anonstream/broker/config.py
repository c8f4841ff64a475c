"""The configuration files of a single-node KRaft broker: ``server.properties`` (listeners,
single-replica internal topics, overrides), ``log4j2.properties`` (a log file only) and a
fresh cluster id."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

NODE_ID = 1


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    Same rules as Kafka's ``Uuid.randomUuid()``: never the reserved all-zero or
    metadata-topic ids, never starting with ``-`` (it would read as a command-line flag).
    """
    while True:
        raw = uuid.uuid4().bytes
        if int.from_bytes(raw, "big") in (0, 1):
            continue
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def broker_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    overrides: Mapping[str, object] | None = None,
    host: str = "127.0.0.1",
) -> dict[str, str]:
    """``server.properties`` of a single-node KRaft broker (formatted with ``--standalone``)."""
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # Topics: one replica, one partition unless the creator says otherwise.
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        # Internal topics: the defaults assume three brokers and break a single node.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # No 3 s wait before the first rebalance of every consumer group.
        "group.initial.rebalance.delay.ms": "0",
        # Short retention.ms on a topic takes effect within ~30 s (of closed segments).
        "log.retention.check.interval.ms": "30000",
        # The cleaner allocates this on start-up (default 128 MiB): too much for a 512 MiB heap.
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, bool):
            props[key] = "true" if value else "false"
        else:
            props[key] = str(value)
    return props


def _escape_property(value: str) -> str:
    # java.util.Properties treats backslash as an escape; nothing else matters for our values.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render_properties(props: Mapping[str, str]) -> str:
    lines = ["# Written by anonstream (anonstream.broker.config); fresh for every broker run."]
    lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def log4j2_properties(level: str) -> str:
    """Everything into ``${kafka.logs.dir}/server.log`` (rolled at 20 MiB), nothing on stdout."""
    return f"""\
# Written by anonstream: the broker logs to a file only.
status = warn
name = anonstream-kafka
# Keep logging until Kafka's own shutdown hook has finished.
shutdownHook = disable
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.server.filePattern = ${{sys:kafka.logs.dir}}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 20MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = {level}
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def jvm_command(
    java: str, libs: Path, data_dir: Path, jvm_options: Sequence[str], logs_dir: Path
) -> list[str]:
    """The start of a command line running a Kafka class from ``libs`` with the data dir's
    ``log4j2.properties``, logging into ``logs_dir``."""
    return [
        java,
        *jvm_options,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={data_dir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        str(libs / "*"),
    ]
