"""The broker is stopped and started again mid-stream: the worker reconnects on its own
and the releases still equal replay's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from anonstream.broker.local import LocalKafka
from anonstream.synthetic import EventGenerator, Workload
from anonstream.synthetic.produce import produce
from tests.integration.helpers import (
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration


def test_worker_survives_a_broker_restart(tmp_path: Path) -> None:
    with LocalKafka() as kafka:  # a broker of its own: the session broker stays up
        bootstrap = kafka.bootstrap_servers
        setup = isolated_pipelines(tmp_path, bootstrap, partitions=3)
        gen = EventGenerator(Workload(users=200, events_per_second_of_event_time=3.0, seed=3))
        names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
        events = [(names[t], ev) for t, ev in gen.mixed(12_000)]
        routed = [(setup.source(n), ev) for n, ev in events]
        half = len(routed) // 2
        worker = start_worker(setup, bootstrap, tmp_path, instance_id="slot-0",
                              idle_close_seconds=8.0)  # fmt: skip
        try:
            asyncio.run(produce(bootstrap, routed[:half]))
            time.sleep(1.0)  # the worker is mid-stream, with open windows
            kafka.restart(pause=3.0)
            asyncio.run(produce(bootstrap, routed[half:]))
            records = read_all(bootstrap, setup, expected_windows(setup, events), timeout=180)
            assert worker.proc is not None and worker.proc.poll() is None, "worker died"
        finally:
            worker.stop()
    assert_equal_to_replay(setup, events, records)
