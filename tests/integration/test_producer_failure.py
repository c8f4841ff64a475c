"""A producer whose transaction breaks mid-stream is replaced in the same process: the
worker neither exits nor loses or repeats a release (read_committed, as partners read).

The failure is injected: one `send` of a release raises OutOfOrderSequenceNumber, what
aiokafka raises when a produce request timed out under a throttled broker (seen with a
4,000 B/s client quota). Everything else is the real broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber

from anonstream.core.keys import load_secret
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.settings import Settings
from anonstream.synthetic import EventGenerator, Workload
from tests.integration.helpers import (
    SECRET,
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
)

pytestmark = pytest.mark.integration


def test_a_broken_producer_is_replaced_and_releases_equal_replay(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    gen = EventGenerator(Workload(users=200, events_per_second_of_event_time=1.0, seed=17))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(names[t], ev) for t, ev in gen.mixed(12_000)]
    windows = expected_windows(setup, events)
    assert sum(windows.values()) >= 4  # releases before and after the failure
    produce_events(kafka_bootstrap, setup, events)

    original_send = AIOKafkaProducer.send
    release_sends = {"n": 0, "failed": 0}

    async def send(self: AIOKafkaProducer, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic in setup.output_topics:
            release_sends["n"] += 1
            if release_sends["n"] == 40 and not release_sends["failed"]:
                release_sends["failed"] += 1
                raise OutOfOrderSequenceNumber()
        return await original_send(self, topic, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send", send)
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, group_id=f"it-{setup.suffix}",
        pipelines_dir=setup.dir, dead_letter_topic=setup.dead_letter_topic,
        instance_id="slot-0", web_enabled=False,
    )  # fmt: skip
    loop = BatchLoop(
        settings, list(setup.pipelines.values()),
        load_secret({"ANONSTREAM_SECRET": SECRET}), Metrics(), stop_at_end=True,
    )  # fmt: skip
    asyncio.run(asyncio.wait_for(loop.run(), timeout=120))

    assert release_sends["failed"] == 1  # the failure did happen, mid-stream
    assert loop.producer_restarts == 1
    records = read_all(kafka_bootstrap, setup, windows, timeout=60)
    assert_equal_to_replay(setup, events, records)
