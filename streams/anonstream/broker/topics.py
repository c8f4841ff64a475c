"""Create Kafka topics with given partition counts and configs (idempotent).

``create_topics`` is the sync entry point (usable from tests, the CLI and, through a helper
thread, from inside a running event loop); ``acreate_topics`` is the coroutine behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from anonstream.broker import BrokerError
from anonstream.broker.admin import run_sync

__all__ = ["acreate_topics", "create_topics"]

TOPIC_ALREADY_EXISTS = 36


async def acreate_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    configs: Mapping[str, Mapping[str, str]] | None = None,
    *,
    replication_factor: int | None = 1,
    timeout: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create ``topics`` ({name: partitions}) with optional per-topic ``configs``; return
    the names it created.

    Topics that already exist are left as they are (and not asked for again, so a client
    allowed to describe but not create them is fine), but an existing topic with a
    different partition count is an error (tests and the worker rely on the count).
    ``replication_factor`` None means 3, or the number of brokers if fewer.
    ``client_options`` are the security options (``Settings.kafka_client_options()``).
    Returns once every partition of every topic has a leader, so producing right away works.
    """
    if not topics:
        return []
    configs = configs or {}
    unknown = set(configs) - set(topics)
    if unknown:
        raise ValueError(f"configs given for topics that are not being created: {sorted(unknown)}")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="anonstream-topics",
        **(client_options or {}),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if replication_factor is None:
            brokers = (await admin.describe_cluster()).get("brokers") or [None]
            replication_factor = min(3, len(brokers))
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs={k: str(v) for k, v in configs.get(name, {}).items()},
            )
            for name, partitions in topics.items()
            if name not in existing
        ]
        created = []
        if new:
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            problems = []
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code == 0:
                    created.append(name)
                elif code != TOPIC_ALREADY_EXISTS:
                    message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).__name__
                    problems.append(f"{name}: {message}")
            if problems:
                raise BrokerError("could not create topics: " + "; ".join(problems))
        await _wait_for_leaders(admin, dict(topics), time.monotonic() + timeout)
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: dict[str, int], deadline: float
) -> None:
    pending = "no metadata yet"
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(list(topics))
        pending = ""
        for topic in described:
            name = topic["topic"]
            if topic["error_code"] != 0:
                pending = f"{name}: {for_code(topic['error_code']).__name__}"
                break
            partitions = topic["partitions"]
            if len(partitions) != topics[name]:
                if len(partitions) > 0:
                    raise BrokerError(
                        f"topic {name!r} already exists with {len(partitions)} partitions, "
                        f"not {topics[name]}"
                    )
                pending = f"{name}: no partitions yet"
                break
            leaderless = [p["partition"] for p in partitions if p["leader"] < 0]
            if leaderless:
                pending = f"{name}: partitions {leaderless} have no leader"
                break
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics were created but are not ready: {pending}")
        await asyncio.sleep(0.1)


def create_topics(
    bootstrap: str,
    topics: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
    *,
    replication_factor: int | None = 1,
    timeout: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Sync wrapper of ``acreate_topics`` (safe to call from inside a running event loop)."""
    return run_sync(
        lambda: acreate_topics(
            bootstrap, topics, configs, replication_factor=replication_factor, timeout=timeout,
            client_options=client_options,
        )
    )  # fmt: skip
