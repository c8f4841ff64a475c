"""On the real broker, whatever one producer sends: a poison message mid-stream is set aside
and the worker keeps releasing, across a SIGKILL and restart; a far-future time is set
aside and makes no other event late."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from anonstream.core import generalizers as generalizers_module
from anonstream.core.engine import wall_clock_ms
from anonstream.core.records import rfc3339
from anonstream.synthetic import EventGenerator, Workload
from tests.integration.helpers import (
    Setup,
    assert_equal_to_replay,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
    start_worker,
)

pytestmark = pytest.mark.integration

MARKER = "internal-error-probe"
# Loaded by the worker's interpreter at start (PYTHONPATH): a generalizer bug that one
# value meets, standing for any error nothing foresaw. The test process applies the same
# fault to its replay.
SITECUSTOMIZE = f"""
from anonstream.core import generalizers

_real = generalizers.url_template


def url_template(value):
    if {MARKER!r} in value:
        raise RuntimeError("injected fault")
    return _real(value)


generalizers.url_template = url_template
"""


async def _dead_letters(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
        isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    out: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        for _ in range(40):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [(m.value, dict(m.headers)) for m in msgs]
            if len(out) >= n:
                # Anything more (a second copy) would be in the next fetches.
                for msgs in (await consumer.getmany(timeout_ms=2000)).values():
                    out += [(m.value, dict(m.headers)) for m in msgs]
                break
    finally:
        await consumer.stop()
    return out


def _rejected(metrics: str, pipeline: str, reason: str) -> float:
    m = re.search(
        rf'anonstream_events_rejected_total{{pipeline="{pipeline}",reason="{reason}"}} (\S+)',
        metrics,
    )
    return float(m.group(1)) if m else 0.0


def _events_in(metrics: str) -> float:
    m = re.search(r'anonstream_events_in_total{pipeline="web_activity"[^}]*} (\S+)', metrics)
    return float(m.group(1)) if m else 0.0


def _variant(ev: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**ev, "event_id": f"{ev['event_id']}-x", **changes}


def test_poison_messages_then_sigkill_the_worker_keeps_releasing_what_replay_does(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=3)
    gen = EventGenerator(Workload(users=200, events_per_second_of_event_time=3.0, seed=41))
    names = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events: list[tuple[str, Any]] = [(names[t], ev) for t, ev in gen.mixed(12_000)]
    web = next(ev for n, ev in events if n == "web_activity")
    usage = next(ev for n, ev in events if n == "service_usage")
    poison: list[tuple[str, Any]] = [
        ("web_activity", _variant(web, ts="0001-01-01T00:00:00+01:00")),
        ("web_activity", _variant(web, ts="0001-01-01T00:00:00Z")),
        ("service_usage", _variant(usage, ts="0001-01-01T00:00:00Z")),
        ("web_activity", _variant(web, url=f"https://shop.example.com/{MARKER}")),
    ]
    half = len(events) // 2
    first = [*events[: half // 2], *poison, *events[half // 2 : half]]
    second = events[half:]
    stream = [*first, *second]

    hook = tmp_path / "fault"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"PYTHONPATH": str(hook)}
    worker = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="slot-0", extra_env=env)
    try:
        produce_events(kafka_bootstrap, setup, first)
        # The poison has been met (and set aside) before the kill.
        seen: tuple[float, ...] = ()
        deadline = time.monotonic() + 60
        while seen != (1, 2, 1) and time.monotonic() < deadline:
            time.sleep(0.3)
            metrics = worker.get("/metrics").decode()
            seen = (
                _rejected(metrics, "web_activity", "internal_error"),
                _rejected(metrics, "web_activity", "bad_timestamp"),
                _rejected(metrics, "service_usage", "bad_timestamp"),
            )
        assert seen == (1, 2, 1)
        worker.kill()  # SIGKILL, mid-stream: windows open, maybe a transaction too
        worker = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="slot-0", extra_env=env)
        produce_events(kafka_bootstrap, setup, second)
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, stream), timeout=150)
        assert worker.proc is not None and worker.proc.poll() is None  # still running
    finally:
        worker.stop()
    log = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker-*.log")))
    assert "Traceback" not in log
    assert MARKER not in log  # the message is never logged
    # Replay, with the same fault, releases exactly what the worker released.
    real = generalizers_module.url_template

    def url_template(value: str) -> str:
        if MARKER in value:
            raise RuntimeError("injected fault")
        return real(value)

    monkeypatch.setattr(generalizers_module, "url_template", url_template)
    assert_equal_to_replay(setup, stream, records)
    # Every poison message is on the dead-letter topic exactly once, with its reason.
    dls = asyncio.run(_dead_letters(kafka_bootstrap, setup.dead_letter_topic, len(poison)))
    got = Counter(
        (h["anonstream.pipeline"].decode(), h["anonstream.reason"].decode()) for _, h in dls
    )
    assert got == Counter(
        {("web_activity", "bad_timestamp"): 2, ("service_usage", "bad_timestamp"): 1,
         ("web_activity", "internal_error"): 1}
    )  # fmt: skip
    assert sorted(v for v, _ in dls) == sorted(orjson.dumps(ev) for _, ev in poison)


def _summaries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "window_summary"]


def test_a_far_future_event_is_dead_lettered_and_makes_nothing_late(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # One partition: every event after the future one is on the partition that carried it.
    setup: Setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=1)
    gen = EventGenerator(Workload(users=200, events_per_second_of_event_time=2.0, seed=43))
    good = [("web_activity", ev) for ev in gen.web_events(6000)]
    # An hour ahead: accepted before (the limit was 24 h) and enough to close every window.
    future = _variant(good[0][1], ts=rfc3339(wall_clock_ms() + 3_600_000))
    stream = [*good[:1000], ("web_activity", future), *good[1000:]]
    worker = start_worker(setup, kafka_bootstrap, tmp_path)
    try:
        # The future event is read before the events behind it: in one batch with them it
        # could not make them late, whatever the rule.
        produce_events(kafka_bootstrap, setup, stream[:1001])
        deadline = time.monotonic() + 60
        while _events_in(worker.get("/metrics").decode()) < 1001:
            assert time.monotonic() < deadline, "the worker did not read the first events"
            time.sleep(0.3)
        produce_events(kafka_bootstrap, setup, stream[1001:])
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, good))
        assert worker.proc is not None and worker.proc.poll() is None
        metrics = worker.get("/metrics").decode()
    finally:
        worker.stop()
    late = re.search(r'anonstream_events_late_total{pipeline="web_activity"} (\S+)', metrics)
    assert late is not None and float(late.group(1)) == 0
    assert _rejected(metrics, "web_activity", "future_timestamp") == 1
    summaries = _summaries(records)
    assert summaries and all(s["late_events"] == 0 for s in summaries)
    assert sum(s["rejected_events"] for s in summaries) == 1
    assert_equal_to_replay(setup, stream, records)
    dls = asyncio.run(_dead_letters(kafka_bootstrap, setup.dead_letter_topic, 1))
    assert [(v, h["anonstream.reason"], h["anonstream.field"]) for v, h in dls] == [
        (orjson.dumps(future), b"future_timestamp", b"ts")
    ]
