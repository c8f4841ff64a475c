"""Idle close on a real broker, behind a transactional upstream producer.

Transaction markers and aborted records occupy offsets: a reader that has taken every
committed record is still below the high watermark until it steps over the marker after
them. The worker must take such a partition as silent once it has (and close its windows
on idle), and never count an aborted record. Judged by the offset after the last record
it had processed, the worker kept these partitions busy forever and never released.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from anonstream.synthetic import EventGenerator, Workload
from tests.integration.helpers import (
    assert_equal_to_replay,
    isolated_pipelines,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def events(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` events of the first hour of a day four days ago: one window."""
    start = (int(time.time() * 1000) // DAY_MS - 4) * DAY_MS
    gen = EventGenerator(
        Workload(users=200, events_per_second_of_event_time=2.0, seed=seed, start_ms=start)
    )
    return list(gen.web_events(n))


async def produce_in_transactions(
    bootstrap: str, topic: str, aborted: list[dict[str, Any]], committed: list[dict[str, Any]]
) -> None:
    """One aborted transaction, then one committed, each over both partitions."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"upstream-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for batch, commit in ((aborted, False), (committed, True)):
            await producer.begin_transaction()
            sent = [
                await producer.send(topic, orjson.dumps(ev), partition=i % 2)
                for i, ev in enumerate(batch)
            ]
            await asyncio.gather(*sent)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


def test_windows_close_on_idle_behind_transaction_markers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=2)
    committed = events(1_500, seed=11)
    aborted = events(500, seed=12)
    asyncio.run(
        produce_in_transactions(kafka_bootstrap, setup.source("web_activity"), aborted, committed)
    )
    worker = start_worker(setup, kafka_bootstrap, tmp_path, idle_close_seconds=3.0)
    try:
        # All events are in one window: only the idle close can release it.
        records = read_all(kafka_bootstrap, setup, {"web_activity": 1}, timeout=120)
    finally:
        worker.stop()
    assert_equal_to_replay(setup, [("web_activity", ev) for ev in committed], records)
