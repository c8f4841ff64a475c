"""Three workers share the partitions; k is still checked over everyone's events, and the
releases equal replay's, also when a worker (or the release stage of an open window) is
killed mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from anonstream.runtime.scaleout import partials_topic
from anonstream.runtime.shardstages import merge_topic
from anonstream.synthetic import DEFAULT_START_MS, EventGenerator, Workload
from anonstream.synthetic.produce import produce
from anonstream.testing import WorkerProcess, read_releases
from tests.integration.helpers import (
    Setup,
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration

SCALE_OUT = {"ANONSTREAM_SCALE_OUT": "true", "ANONSTREAM_PARTIALS_PARTITIONS": "6"}
SHARDED = {**SCALE_OUT, "ANONSTREAM_RELEASE_SHARDED": "true"}  # runtime/shardstages.py


@pytest.mark.parametrize("sharded", [False, True], ids=["by-window", "sharded"])
def test_three_workers_release_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path, sharded: bool
) -> None:
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
            extra_env=SHARDED if sharded else SCALE_OUT,
        )
        for i in range(3)
    ]
    try:
        asyncio.run(produce(kafka_bootstrap, routed))
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=180)
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, "a worker died"
        if sharded:  # the merge stage ran: some worker reads the merge topic
            logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
            topic = merge_topic(f"it-{setup.suffix}", "web_activity")
            assert any(_owner_of(logs, topic, q) is not None for q in range(6))
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


def _owner_of(logs: list[Path], topic: str, partition: int) -> int | None:
    """Which worker's latest assignment (its log's last "assigned" line) holds the partition."""
    want = f"{topic}/{partition}"
    for i, log in enumerate(logs):
        lines = [x for x in log.read_text(errors="replace").splitlines() if " assigned " in x]
        if lines and want in lines[-1].split("assigned ", 1)[1].split(", "):
            return i
    return None


def test_killing_the_release_stage_of_an_open_window_still_releases_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL the worker whose release stage holds the open window's partial state (the
    owner of that window's partials partition), with 40 % of the window's events read;
    restart it and send the rest: the window is rebuilt from the partials topic and
    released once, as replay releases it."""
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=6)
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=3.0, seed=29))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(names[t], ev) for t, ev in gen.mixed(18_000)]
    routed = [(setup.source(n), ev) for n, ev in events]
    cut = len(routed) * 2 // 5  # about 40 minutes of event time: mid first hour
    pipeline = setup.pipelines["web_activity"]
    window = pipeline.window
    partition = (DEFAULT_START_MS // window.step_ms) % int(
        SCALE_OUT["ANONSTREAM_PARTIALS_PARTITIONS"]
    )
    topic = partials_topic(f"it-{setup.suffix}", pipeline.name)

    def worker(slot: str) -> WorkerProcess:
        # Idle close well above the pause around the kill: the window must not close early.
        return start_worker(
            setup, kafka_bootstrap, tmp_path, instance_id=slot, idle_close_seconds=30.0,
            extra_env=SCALE_OUT,
        )  # fmt: skip

    workers = [worker(f"slot-{i}") for i in range(3)]
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    try:
        asyncio.run(produce(kafka_bootstrap, routed[:cut]))
        deadline = time.monotonic() + 60
        victim = _owner_of(logs, topic, partition)
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.5)
            victim = _owner_of(logs, topic, partition)
        assert victim is not None, "no worker owns the open window's partials partition"
        time.sleep(3.0)  # the first part read and its partials in the release stage
        assert not read_all_now(kafka_bootstrap, setup), "the window closed before the kill"
        workers[victim].kill()
        workers[victim] = worker(f"slot-{victim}")
        asyncio.run(produce(kafka_bootstrap, routed[cut:]))
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=240)
    finally:
        for w in workers:
            w.stop()
    assert_equal_to_replay(setup, events, records, kinds=("aggregate",))


@pytest.mark.parametrize("seed", [31, 37])
def test_sharded_release_killing_a_worker_mid_window_still_releases_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path, seed: int
) -> None:
    """The sharded release: SIGKILL the worker that owns the open window's merge partition
    (and, like every worker, shards holding the window's rows), with 40 % of the window's
    events read; restart it and send the rest. Its shards are rebuilt from the partials
    topic, their parts and marks reach the merge once, and the window is released as
    replay releases it."""
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=6)
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=3.0, seed=seed))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(names[t], ev) for t, ev in gen.mixed(18_000)]
    routed = [(setup.source(n), ev) for n, ev in events]
    cut = len(routed) * 2 // 5
    pipeline = setup.pipelines["web_activity"]
    partition = (DEFAULT_START_MS // pipeline.window.step_ms) % 6
    topic = merge_topic(f"it-{setup.suffix}", pipeline.name)

    def worker(slot: str) -> WorkerProcess:
        return start_worker(
            setup, kafka_bootstrap, tmp_path, instance_id=slot, idle_close_seconds=30.0,
            extra_env=SHARDED,
        )  # fmt: skip

    workers = [worker(f"slot-{i}") for i in range(3)]
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    try:
        asyncio.run(produce(kafka_bootstrap, routed[:cut]))
        deadline = time.monotonic() + 60
        victim = _owner_of(logs, topic, partition)
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.5)
            victim = _owner_of(logs, topic, partition)
        assert victim is not None, "no worker owns the open window's merge partition"
        time.sleep(3.0)
        assert not read_all_now(kafka_bootstrap, setup), "the window closed before the kill"
        workers[victim].kill()
        workers[victim] = worker(f"slot-{victim}")
        asyncio.run(produce(kafka_bootstrap, routed[cut:]))
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=240)
    finally:
        for w in workers:
            w.stop()
    assert_equal_to_replay(setup, events, records, kinds=("aggregate",))


def read_all_now(bootstrap: str, setup: Setup) -> list[dict[str, Any]]:
    """The web_activity releases out so far (read_committed)."""
    topics = [o.topic for o in setup.pipelines["web_activity"].outputs]
    got: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        asyncio.run(
            read_releases(
                bootstrap, topics, until=lambda _: False, timeout=3.0, on_record=got.append
            )
        )
    return got
