"""Red-team regression: k-mode noise is seeded by the release id *and* the cell's exact
numbers. Seeded by the release id alone, a window released twice with different data (a
backfill, a replay with one person more) carried the same noise, so the difference of
the two noisy records was exact: one person's presence and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import parse_pipeline
from anonstream.core.step import Message

ROOT = Path(__file__).resolve().parents[2]
NOW = 1796040000000  # 2026-11-30T12:40:00Z


def _pipeline() -> Any:
    doc = yaml.safe_load((ROOT / "pipelines" / "web_activity.yaml").read_text())
    doc["noise"] = {"mechanism": "laplace", "epsilon": 1.0}
    return parse_pipeline(doc)


PIPELINE = _pipeline()


def _release(n: int, extra: int | None) -> dict[str, Any]:
    events = [
        {"event_id": f"e{i}", "ts": "2026-11-30T10:15:00Z", "type": "page_view",
         "url": "https://ex.org/home", "visitor_id": f"v{i}", "duration_ms": 1000}
        for i in range(n)
    ]  # fmt: skip
    if extra is not None:
        target = {"event_id": "t", "ts": "2026-11-30T10:20:00Z", "type": "page_view"}
        target |= {"url": "https://ex.org/home", "visitor_id": "t", "duration_ms": extra}
        events.append(target)
    engine = PipelineEngine(PIPELINE, MasterSecret(b"s" * 32, "test"), clock_ms=lambda: NOW)
    engine.assign(["f"])
    msgs = [Message(orjson.dumps(e), "f", i) for i, e in enumerate(events)]
    recs = list(engine.process(msgs).releases) + list(engine.close_all().releases)
    (agg,) = [r for r in recs if r["kind"] == "aggregate"]
    return agg["metrics"]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=12, max_value=40), value=st.integers(min_value=1, max_value=9999))
def test_one_person_more_does_not_cancel_the_noise(n: int, value: int) -> None:
    a, b = _release(n, None), _release(n, value)
    # The sum is never clipped: with shared noise its difference is the person's value.
    assert abs(b["duration_ms_sum"] - a["duration_ms_sum"] - value) > 0.01


def test_same_data_same_noise() -> None:
    assert _release(20, 7) == _release(20, 7)
