"""A slow output holds the input back in Kafka instead of in the worker's memory.

The worker's producer is throttled with a real Kafka client quota (producer_byte_rate) on
the broker, and a burst far larger than what can be released meanwhile is produced. The
batch loop delivers a batch's releases, awaits them and commits before it fetches again,
so consumption is paced by the output: the consumer lag grows, the RSS stays bounded.
Then the quota is removed and the releases must equal replay's, byte for byte.

All of it runs with every core busy (the `cpu_hog` fixture): the same input must give the
same releases whether the output is fast (the warm-up, the final catch-up) or throttled,
and however slow the machine. Before idle close rested on Kafka's evidence (see
runtime/quiet.py) and the warm-up ended at a window boundary, 3 runs of 3 failed under
such a load (events late in the warm-up's last window, and in one run mid-burst too).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from anonstream.broker.local import ensure_jars, find_java
from anonstream.core.decode import parse_ts
from anonstream.core.pipeline import WindowSpec, load_pipeline
from anonstream.core.windows import window_starts
from anonstream.synthetic import EventGenerator, Workload
from anonstream.testing import WorkerProcess
from anonstream_load.harness import KafkaProbe, metrics_value, proc_memory_kib
from tests.integration.cpu_hog import cpu_hog_fixture  # noqa: F401 (the fixture)
from tests.integration.helpers import (
    canonical,
    diff_summary,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
    replay_events,
    start_worker,
)

pytestmark = pytest.mark.integration

# The test's own producer (anonstream.synthetic.produce) uses this client id; it is exempted
# from the throttle, which applies to every other client (the worker's producer).
LOAD_CLIENT = "anonstream-load"
THROTTLE_BYTES_PER_S = 12_000  # a window releases ~130 KB: ~10 s a window
WARMUP = 20_000  # about: it is cut back to a window boundary
BURST = 300_000  # ~430 bytes each: ~125 MiB of JSON, ~42 hourly windows
MIB = 1024 * 1024
DAY = 86_400


def client_quota(bootstrap: str, rate: int | None, entity: str | None = None) -> None:
    """Set (or with ``rate=None`` remove) a producer_byte_rate quota for client ``entity``
    (None: the default of every client), with Kafka's own ConfigCommand."""
    change = (
        ["--delete-config", "producer_byte_rate"]
        if rate is None
        else ["--add-config", f"producer_byte_rate={rate}"]
    )
    target = ["--entity-default"] if entity is None else ["--entity-name", entity]
    cmd = [
        find_java(), "-Xmx128m", "-cp", f"{ensure_jars()}/*", "kafka.admin.ConfigCommand",
        "--bootstrap-server", bootstrap, "--alter", *change, "--entity-type", "clients", *target,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def rss_mib(worker: WorkerProcess) -> float:
    assert worker.proc is not None
    mem = proc_memory_kib(worker.proc.pid)
    assert mem is not None, "the worker is gone"
    return mem[0] / 1024


def ts_of(event: dict[str, Any]) -> int:
    ts = parse_ts(event["ts"])
    assert ts is not None
    return ts


def warmup_and_burst(start: int, spec: WindowSpec) -> tuple[list[Any], list[Any]]:
    """The test's input: two events per second of event time from `start`, all in the
    past (the decoder rejects events from the future), cut at a window boundary.

    Between the warm-up and the burst the input is silent while the quota commands run
    (seconds; a minute on a loaded machine): a real silence, longer than the idle close
    (3 s), which then releases every open window. Cut mid-window, the rest of that window
    would come late, where replay sees no silence; cut at a boundary, nothing can."""
    gen = EventGenerator(
        Workload(users=3000, events_per_second_of_event_time=2.0, seed=3, start_ms=start)
    )
    stream = list(gen.web_events(WARMUP + BURST))
    cut = window_starts(spec, ts_of(stream[WARMUP]))[0]
    return [ev for ev in stream if ts_of(ev) < cut], [ev for ev in stream if ts_of(ev) >= cut]


def replay_releases(pipeline_file: Path, start: int) -> list[dict[str, Any]]:
    """Replay's releases for the same input (run in another process, beside the worker)."""
    pipeline = load_pipeline(pipeline_file)
    warmup, burst = warmup_and_burst(start, pipeline.window)
    return replay_events(pipeline, warmup + burst)


def assert_same_releases(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Byte for byte replay's, with no release_id delivered with two different contents
    (a consumer keeps the first record per release_id)."""
    first: dict[str, bytes] = {}
    unique = []
    for r in got:
        body = orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
        seen = first.setdefault(r["release_id"], body)
        assert seen == body, f"release {r['release_id']} delivered with two contents"
        if seen is body:
            unique.append(r)
    kinds = ("aggregate", "window_summary")
    assert canonical(unique, kinds=kinds) == canonical(expected, kinds=kinds), diff_summary(
        unique, expected
    )


@pytest.mark.timeout(1200)  # every core is busy beside it, by design
def test_slow_output_paces_consumption_and_memory_stays_bounded(
    kafka_bootstrap: str, tmp_path: Path, cpu_hog: list[int]
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    # 7,200 events per hourly window, from four days ago.
    start = (int(time.time()) // DAY - 4) * DAY * 1000
    pipeline_file = setup.dir / "web_activity.yaml"
    replay_pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    expected = replay_pool.submit(replay_releases, pipeline_file, start)
    warmup_events, burst_events = warmup_and_burst(start, setup.pipelines["web_activity"].window)
    warmup = [("web_activity", ev) for ev in warmup_events]
    burst = [("web_activity", ev) for ev in burst_events]
    events = warmup + burst
    # All of the warm-up is in Kafka before the worker starts: no silence within it.
    produce_events(kafka_bootstrap, setup, warmup)
    worker = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="bp")
    metrics = worker.url + "/metrics"
    throttled = False
    try:
        # Warm up unthrottled (imports, caches, a first release), then measure the base.
        deadline = time.monotonic() + 60
        while (metrics_value(metrics, "anonstream_windows_released") or 0) < 1:
            assert time.monotonic() < deadline, "no window released during the warm-up"
            time.sleep(0.5)
        base = rss_mib(worker)

        client_quota(kafka_bootstrap, 10**12, LOAD_CLIENT)
        client_quota(kafka_bootstrap, THROTTLE_BYTES_PER_S)
        throttled = True
        before = metrics_value(metrics, "anonstream_windows_released") or 0
        produce_events(kafka_bootstrap, setup, burst)
        peak = base
        group, topic = f"it-{setup.suffix}", setup.source("web_activity")
        with KafkaProbe(kafka_bootstrap) as probe:
            for _ in range(30):  # ~15 s of a throttled worker under a full backlog
                peak = max(peak, rss_mib(worker))
                time.sleep(0.5)
            # Lag as the group's committed offsets show it (the worker's own gauge is only
            # refreshed between batches, and a throttled batch takes long).
            lag = sum(probe.end_offsets(topic).values()) - probe.committed(group, topic)
        released = (metrics_value(metrics, "anonstream_windows_released") or 0) - before
        burst_mib = sum(len(orjson.dumps(ev)) for _, ev in burst) / MIB
        print(
            f"RSS base {base:.0f} MiB, peak while throttled {peak:.0f} MiB; burst "
            f"{burst_mib:.0f} MiB; committed lag {lag} of {len(events)} events; windows "
            f"released while throttled {released:.0f} of {expected_windows(setup, events)}; "
            f"{len(cpu_hog)} busy processes beside it"
        )
        # Most of the burst waits in Kafka, not in the worker...
        assert lag > len(burst) / 2, lag
        # ...and memory is the base plus bounded buffers (the fetch buffer, up to 8 MiB a
        # partition, a batch, open windows), well below what holding the burst would take.
        assert peak - base < min(100, burst_mib * 0.8), (base, peak)

        client_quota(kafka_bootstrap, None)
        throttled = False
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, events), timeout=180)
        assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
    finally:
        if throttled:
            client_quota(kafka_bootstrap, None)
        client_quota(kafka_bootstrap, None, LOAD_CLIENT)
        worker.stop()
        replay_pool.shutdown(wait=False, cancel_futures=True)
    assert_same_releases(records, expected.result(timeout=600))
