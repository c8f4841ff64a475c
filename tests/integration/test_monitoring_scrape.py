"""A real worker's /metrics names exactly the metrics that the docs, the alert rules and the
dashboard name (tests/monitoring.py), and its only directory is under $TMPDIR."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, isolated_pipelines, produce_events, start_worker
from tests.monitoring import Exposed, problems

pytestmark = pytest.mark.integration

BASE_MS = 1_796_000_400_000  # 2026-11-30T01:00:00Z


def test_a_running_worker_exposes_what_the_docs_rules_and_dashboard_name(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    before = set(ROOT.iterdir())
    events = [
        ("web_activity", {
            "event_id": f"m-{i}", "ts": BASE_MS + i, "type": "page_view",
            "visitor_id": f"visitor-{i:04d}", "ip": "192.0.2.7",
            "url": "https://www.example.com/",
        })
        for i in range(20)
    ] + [("web_activity", b"not json")]  # fmt: skip
    worker = start_worker(setup, kafka_bootstrap, tmp_path, extra_env={"TMPDIR": str(tmpdir)})
    try:
        produce_events(kafka_bootstrap, setup, events)
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = worker.get("/metrics").decode()
            exposed = Exposed.parse(text)
            if "anonstream_events_rejected_total" in exposed.samples and (
                "anonstream_consumer_lag" in exposed.samples
            ):
                break
            time.sleep(0.5)
    finally:
        assert worker.stop() == 0
    assert "anonstream_events_rejected_total" in Exposed.parse(text).samples, text
    assert problems(text) == []
    # Faust's data directory is under $TMPDIR; the working directory gets nothing new.
    group = f"it-{setup.suffix}"
    assert (tmpdir / "anonstream-faust" / group).is_dir()
    assert {p.name for p in set(ROOT.iterdir()) - before if group in p.name} == set()
