"""Raw events through a real broker and a real worker process come out as aggregates."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from anonstream.synthetic import EventGenerator, Workload, identifiers_of
from tests.integration.helpers import (
    canonical,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
    replay_events,
    start_worker,
)

pytestmark = pytest.mark.integration

BASE_MS = 1_796_000_400_000  # 2026-11-30T01:00:00Z


def test_known_counts_come_out_of_the_output_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap)
    ua = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    )
    events = []
    for i in range(12):  # 12 people, 2 page views each of /pricing: one cell of 12 users
        for j in range(2):
            events.append(("web_activity", {
                "event_id": f"e-{i}-{j}", "ts": BASE_MS + 60_000 * i + j, "type": "page_view",
                "visitor_id": f"visitor-{i:04d}", "user_email": f"person{i}@example.org",
                "ip": f"198.51.100.{i + 1}", "user_agent": ua,
                "url": f"https://www.example.com/pricing?ref=person{i}@example.org",
            }))  # fmt: skip
    for i in range(3):  # 3 people on another page: under k, rolled up, then suppressed
        events.append(("web_activity", {
            "event_id": f"x-{i}", "ts": BASE_MS + 1000 * i, "type": "page_view",
            "visitor_id": f"lonely-{i}", "ip": "203.0.113.9", "user_agent": ua,
            "url": "https://www.example.com/careers",
        }))  # fmt: skip
    worker = start_worker(setup, kafka_bootstrap, tmp_path)
    try:
        produce_events(kafka_bootstrap, setup, events)
        records = read_all(kafka_bootstrap, setup, {"web_activity": 1})
    finally:
        worker.stop()
    aggs = [r for r in records if r["kind"] == "aggregate"]
    assert len(aggs) == 1
    agg = aggs[0]
    assert agg["dims"] == {
        "type": "page_view", "url": "www.example.com/pricing", "user_agent": "Chrome 131 / Windows"
    }  # fmt: skip
    assert agg["metrics"]["events"] == 24
    assert agg["metrics"]["users"] == 12
    assert agg["window_start"] == "2026-11-30T01:00:00Z"
    summary = next(r for r in records if r["kind"] == "window_summary")
    assert (summary["cells_released"], summary["cells_suppressed"]) == (1, 1)
    text = orjson.dumps(records).decode()
    for _, ev in events:
        for ident in identifiers_of(ev):
            assert ident not in text


def test_worker_releases_equal_replay_and_carry_no_identifier(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap)
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=1.5, seed=21))
    topic_to_name = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events = [(topic_to_name[t], ev) for t, ev in gen.mixed(8000)]
    windows = expected_windows(setup, events)
    assert windows["web_activity"] >= 2  # the run spans several windows
    worker = start_worker(setup, kafka_bootstrap, tmp_path)
    try:
        produce_events(kafka_bootstrap, setup, events)
        records = read_all(kafka_bootstrap, setup, windows)
        metrics = worker.get("/metrics").decode()
        health = orjson.loads(worker.get("/health"))
    finally:
        worker.stop()
    # Health: consuming, and it has released.
    assert health["status"] == "ok" and health["consuming"] is True
    assert health["seconds_since_last_release"] is not None
    # Metrics: the counters agree with what went in and what came out.
    for name in ("web_activity", "service_usage"):
        n_in = sum(1 for n, _ in events if n == name)
        n_agg = sum(1 for r in records if r["pipeline"] == name and r["kind"] == "aggregate")
        assert _metric(metrics, "anonstream_events_in_total", name) == n_in
        assert _metric(metrics, "anonstream_events_accepted_total", name) == n_in
        assert _metric(metrics, "anonstream_cells_released_total", name) == n_agg
        assert _metric(metrics, "anonstream_open_windows", name) == 0
    assert "anonstream_batch_seconds_count" in metrics
    assert sum(r["kind"] == "aggregate" for r in records) > 10
    for name, pipeline in setup.pipelines.items():
        expected = replay_events(pipeline, [ev for n, ev in events if n == name])
        got = [r for r in records if r["pipeline"] == name]
        assert canonical(got, kinds=("aggregate", "window_summary")) == canonical(
            expected, kinds=("aggregate", "window_summary")
        )
    text = orjson.dumps(records).decode()
    leaked = {i for _, ev in events for i in identifiers_of(ev) if len(i) >= 6 and i in text}
    assert not leaked
    assert 'anonstream_events_accepted_total{pipeline="web_activity"}' in metrics


def _metric(text: str, name: str, pipeline: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'pipeline="{pipeline}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {pipeline} not in the metrics")
