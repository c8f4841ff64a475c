"""A slow output holds the input back in Kafka instead of in the worker's memory.

The worker's producer is throttled with a real Kafka client quota (producer_byte_rate) on
the broker, and a burst far larger than what can be released meanwhile is produced. The
batch loop delivers a batch's releases, awaits them and commits before it fetches again,
so consumption is paced by the output: the consumer lag grows, the RSS stays bounded.
Then the quota is removed and the releases must equal replay's.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest

from anonstream.broker.local import ensure_jars, find_java
from anonstream.testing import WorkerProcess
from anonstream_load.generator import EventGenerator, Workload
from anonstream_load.harness import KafkaProbe, metrics_value, proc_memory_kib
from tests.integration.helpers import (
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration

# The test's own producer (anonstream_load.produce) uses this client id; it is exempted
# from the throttle, which applies to every other client (the worker's producer).
LOAD_CLIENT = "anonstream-load"
THROTTLE_BYTES_PER_S = 12_000  # a window releases ~130 KB: ~10 s a window
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


def test_slow_output_paces_consumption_and_memory_stays_bounded(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    # Two events per second of event time: 7,200 events per hourly window, all in the past
    # (the decoder rejects events from the future).
    start = (int(time.time()) // DAY - 4) * DAY * 1000
    gen = EventGenerator(
        Workload(users=3000, events_per_second_of_event_time=2.0, seed=3, start_ms=start)
    )
    warmup = [("web_activity", ev) for ev in gen.web_events(20_000)]
    burst = [("web_activity", ev) for ev in gen.web_events(BURST)]
    events = warmup + burst
    worker = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="bp")
    metrics = worker.url + "/metrics"
    throttled = False
    try:
        # Warm up unthrottled (imports, caches, a first release), then measure the base.
        produce_events(kafka_bootstrap, setup, warmup)
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
            f"released while throttled {released:.0f} of {expected_windows(setup, events)}"
        )
        # Most of the burst waits in Kafka, not in the worker...
        assert lag > BURST / 2, lag
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
    assert_equal_to_replay(setup, events, records)
