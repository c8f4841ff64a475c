"""Three workers share the partitions; k is still checked over everyone's events, and the
releases equal replay's."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest

from anonstream.synthetic import EventGenerator, Workload
from anonstream.synthetic.produce import produce
from anonstream.testing import WorkerProcess
from tests.integration.helpers import (
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration

SCALE_OUT = {"ANONSTREAM_SCALE_OUT": "true", "ANONSTREAM_PARTIALS_PARTITIONS": "6"}


def test_three_workers_release_what_replay_does(kafka_bootstrap: str, tmp_path: Path) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=6)
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=3.0, seed=17))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(names[t], ev) for t, ev in gen.mixed(15_000)]
    routed = [(setup.source(n), ev) for n, ev in events]
    workers = [
        start_worker(
            setup,
            kafka_bootstrap,
            tmp_path,
            instance_id=f"slot-{i}",
            idle_close_seconds=6.0,
            extra_env=SCALE_OUT,
        )
        for i in range(3)
    ]
    try:
        asyncio.run(produce(kafka_bootstrap, routed))
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=180)
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, "a worker died"
    finally:
        for w in workers:
            w.stop()
    assert_equal_to_replay(setup, events, records, kinds=("aggregate",))


def test_a_second_worker_in_single_mode_is_refused(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Without scale-out, two workers in one group would each check k on half the people."""
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    first = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="a")
    try:
        second = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="b")
        codes = []
        for w in (first, second):
            assert w.proc is not None
            try:
                codes.append(w.proc.wait(60))
            except Exception:
                codes.append(None)
        assert 1 in codes, f"no worker refused the split assignment: {codes}"
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize(("seed", "fault"), [(5, "kill"), (23, "kill"), (41, "add")])
def test_faults_with_three_workers_still_release_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path, seed: int, fault: str
) -> None:
    """SIGKILL one worker at a random moment and restart it, or add a worker mid-stream
    (a rebalance moves partitions and their open windows between workers)."""
    rnd = random.Random(seed)
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=6)
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=3.0, seed=seed))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(names[t], ev) for t, ev in gen.mixed(18_000)]
    routed = [(setup.source(n), ev) for n, ev in events]

    def worker(slot: str) -> WorkerProcess:
        return start_worker(
            setup, kafka_bootstrap, tmp_path, instance_id=slot, idle_close_seconds=8.0,
            extra_env=SCALE_OUT,
        )  # fmt: skip

    workers = [worker(f"slot-{i}") for i in range(3 if fault == "kill" else 2)]
    producer = threading.Thread(
        target=lambda: asyncio.run(produce(kafka_bootstrap, routed, rate=2500)), daemon=True
    )
    producer.start()
    try:
        time.sleep(rnd.uniform(1.5, 4.0))
        if fault == "kill":
            victim = rnd.randrange(len(workers))
            workers[victim].kill()
            workers[victim] = worker(f"slot-{victim}")
        else:
            workers.append(worker("slot-new"))
        producer.join(90)
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=240)
    finally:
        for w in workers:
            w.stop()
    assert_equal_to_replay(setup, events, records, kinds=("aggregate",))
