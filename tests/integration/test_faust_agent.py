"""anonstream.faust: a pipeline as an agent of the user's own Faust app (examples/faust_app.py)
on the real broker. Its releases equal replay's; after SIGKILLs, at least once: every
release is there, some twice with the same release_id and the same content."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anonstream.broker.local import free_ports
from anonstream.synthetic import EventGenerator, Workload
from anonstream.synthetic.produce import produce
from anonstream.testing import WorkerProcess, read_releases
from tests.integration.helpers import (
    ROOT,
    SECRET,
    Setup,
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
)

pytestmark = pytest.mark.integration

NAMES = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}


def start_app(setup: Setup, bootstrap: str, tmp: Path) -> WorkerProcess:
    """The example app, `python examples/faust_app.py worker`, as a child stopped by its pid."""
    n = len(list(tmp.glob("app-*.log")))
    app = WorkerProcess(
        bootstrap, pipelines_dir=setup.dir, secret=SECRET, group_id=f"it-{setup.suffix}",
        extra_env={
            "FAUST_APP_ID": f"shop-{setup.suffix}",
            "ANONSTREAM_DEAD_LETTER_TOPIC": setup.dead_letter_topic,
            "ANONSTREAM_IDLE_CLOSE_SECONDS": "3",
        },
        log_path=tmp / f"app-{n}.log",
    )  # fmt: skip
    app.cmd = [
        sys.executable, str(ROOT / "examples" / "faust_app.py"), "worker", "-l", "info",
        "--web-port", str(free_ports(1)[0]),
    ]  # fmt: skip
    app.start(wait=False)
    return app


def windows_complete(windows: dict[str, int]) -> Callable[[list[dict[str, Any]]], bool]:
    """Every pipeline's window summaries, each counted once (repeats are expected here)."""

    def check(records: list[dict[str, Any]]) -> bool:
        seen: dict[str, set[str]] = {}
        for r in records:
            if r["kind"] == "window_summary":
                seen.setdefault(r["pipeline"], set()).add(r["release_id"])
        return all(len(seen.get(p, ())) >= n for p, n in windows.items())

    return check


def _events(seed: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    gen = EventGenerator(Workload(users=250, events_per_second_of_event_time=4.0, seed=seed))
    return [(NAMES[t], ev) for t, ev in gen.mixed(n)]


def _read(bootstrap: str, setup: Setup, windows: dict[str, int]) -> list[dict[str, Any]]:
    return asyncio.run(
        read_releases(bootstrap, setup.output_topics, until=windows_complete(windows), timeout=180)
    )


def test_an_agent_in_a_faust_app_releases_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    events = _events(3, 12_000)
    windows = expected_windows(setup, events)
    asyncio.run(produce(kafka_bootstrap, [(setup.source(n), ev) for n, ev in events]))
    app = start_app(setup, kafka_bootstrap, tmp_path)
    try:
        records = _read(kafka_bootstrap, setup, windows)
    finally:
        app.stop()
    assert_equal_to_replay(setup, events, records)
    # One run, no crash: every release once.
    assert len({r["release_id"] for r in records}) == len(records)


@pytest.mark.parametrize("seed", [5, 17])
def test_sigkill_and_restart_at_least_once_with_repeated_release_ids(
    kafka_bootstrap: str, tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=6)
    events = _events(seed, 30_000)
    windows = expected_windows(setup, events)
    routed = [(setup.source(n), ev) for n, ev in events]
    arrivals: list[float] = []  # when each release became readable
    out: list[list[dict[str, Any]]] = []

    def reader() -> None:
        out.append(
            asyncio.run(
                read_releases(
                    kafka_bootstrap, setup.output_topics, until=windows_complete(windows),
                    timeout=240, on_record=lambda _: arrivals.append(time.monotonic()),
                )
            )
        )  # fmt: skip

    producer = threading.Thread(
        target=lambda: asyncio.run(produce(kafka_bootstrap, routed, rate=2500)), daemon=True
    )
    reading = threading.Thread(target=reader, daemon=True)
    app = start_app(setup, kafka_bootstrap, tmp_path)
    producer.start()
    reading.start()
    kills = 0
    try:
        for _ in range(2):
            started = time.monotonic()
            deadline = started + 90
            # Mid-stream: once this process has released something, at a random moment.
            while not [t for t in arrivals if t > started] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [t for t in arrivals if t > started], "nothing released before the kill"
            time.sleep(rnd.uniform(0.0, 2.0))
            app.kill()  # SIGKILL: releases sent, checkpoints and commits maybe not
            kills += 1
            app = start_app(setup, kafka_bootstrap, tmp_path)
        producer.join(60)
        reading.join(240)
    finally:
        app.stop()
    assert kills == 2 and out, "the releases were not complete"
    records = out[0]
    repeated = len(records) - len({r["release_id"] for r in records})
    print(f"\n{len(records)} releases read, {repeated} of them repeats of an earlier release_id")
    assert_equal_to_replay(setup, events, records)  # and each release_id one content
