"""Hand-made attacks of issue 13 on the release rules, each with its exact expected release.

- k across key rotation: hopping windows cross pseudonym key periods; one person must
  still be one person in a window.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from anonstream.core.engine import Message, PipelineEngine, StepResult
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import parse_pipeline
from tests.unit.fields import web_test_fields

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY  # start of a UTC day
SECRET = load_secret({"ANONSTREAM_SECRET": "p" * 32})
HOST = "https://shop.example.com"


def make_pipeline(**changes: Any) -> Any:
    doc: dict[str, Any] = {
        "pipeline": "attack",
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": web_test_fields(),
        "window": {"size": "1h", "allowed_lateness": "0s"},
        "dimensions": ["type"],
        "metrics": {"sums": ["duration_ms"]},
        "k": 3,
    }
    doc.update(changes)
    return parse_pipeline(doc, "test_release_privacy")


def run(pipeline: Any, events: list[dict[str, Any]], *, fast: bool = True) -> StepResult:
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + 7 * DAY)
    if not fast:  # every event down the per-event reference path
        run_columns = engine.columns.run
        engine.columns.run = lambda values: (  # type: ignore[method-assign]
            run_columns([])[0],
            list(range(len(values))),
        )
    engine.assign([0])
    result = engine.process([Message(orjson.dumps(e), 0, i) for i, e in enumerate(events)])
    assert not result.dead_letters
    result.extend(engine.close_all())
    return result


def aggregates(result: StepResult, output: str = "default") -> list[dict[str, Any]]:
    return [r for r in result.releases if r["kind"] == "aggregate" and r["output"] == output]


def event(user: str, ts: int, typ: str = "page_view", path: str = "/", **kw: Any) -> dict:
    ev: dict[str, Any] = {"event_id": f"{user}-{ts}-{typ}-{path}", "ts": ts, "type": typ,
                          "visitor_id": user, "url": HOST + path}  # fmt: skip
    ev.update(kw)
    return ev


# -- one pseudonym per person per window ---------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_hourly_keys_with_half_hour_hops_count_each_person_once(fast: bool) -> None:
    """The issue's case: five people at 00:40 and 01:10, hourly keys, 1 h window every
    30 min. The window 00:30-01:30 spans two key periods and must count 5 people, not 10."""
    p = make_pipeline(pseudonym_rotation="hourly", window={"size": "1h", "step": "30m"}, k=3)
    events = [event(f"v{i}", T0 + m * MINUTE) for i in range(5) for m in (40, 70)]
    got = {r["window_start"]: r["metrics"] for r in aggregates(run(p, events, fast=fast))}
    assert [(m["events"], m["users"]) for _, m in sorted(got.items())] == [(5, 5), (10, 5), (5, 5)]
    # With k above the true number of people, nothing is released at all.
    assert aggregates(run(make_pipeline(
        pseudonym_rotation="hourly", window={"size": "1h", "step": "30m"}, k=6
    ), events, fast=fast)) == []  # fmt: skip


@pytest.mark.parametrize("fast", [True, False])
def test_daily_keys_with_two_hour_windows_hopping_hourly_around_midnight(fast: bool) -> None:
    p = make_pipeline(pseudonym_rotation="daily", window={"size": "2h", "step": "1h"}, k=5)
    midnight = T0 + DAY
    events = [event(f"v{i}", midnight + d) for i in range(4) for d in (-30 * MINUTE, 30 * MINUTE)]
    # 4 people: the 23:00-01:00 window must not see 8 and release.
    assert aggregates(run(p, events, fast=fast)) == []
    p3 = make_pipeline(pseudonym_rotation="daily", window={"size": "2h", "step": "1h"}, k=3)
    got = {r["window_start"]: r["metrics"] for r in aggregates(run(p3, events, fast=fast))}
    assert [(m["events"], m["users"]) for _, m in sorted(got.items())] == [(4, 4), (8, 4), (4, 4)]


def test_key_rotation_between_windows_stays() -> None:
    """Tumbling windows keep per-period keys: a person on two days is a different pseudonym
    each day (nothing links them), and each day's window counts them once."""
    p = make_pipeline(pseudonym_rotation="daily", window={"size": "1d"}, k=2)
    events = [event(f"v{i}", T0 + d * DAY + HOUR) for i in range(2) for d in (0, 1)]
    engine = PipelineEngine(p, SECRET, clock_ms=lambda: T0 + 7 * DAY)
    a = engine.policy.pseudonyms.pseudonym("visitor_id", "v0", T0)
    b = engine.policy.pseudonyms.pseudonym("visitor_id", "v0", T0 + DAY)
    assert a != b
    assert [r["metrics"]["users"] for r in aggregates(run(p, events))] == [2, 2]
