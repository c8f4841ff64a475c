"""Property tests of issue 13's release guarantees, against ground truth from the input.

(a) Over window size, step, allowed lateness and key rotation, with events around key
    period boundaries: every released cell holds at least k distinct PEOPLE (visitor ids
    of the raw input, not pseudonyms), and its `users` is exactly that number.
(b) Over random pipelines with several outputs: for every window, each secondary cell
    minus the primary cells inside it isolates nobody, for every released quantity:
    events and sums are equal, histograms bands are unions of the parts' bands with their
    totals, a measure withheld in a part is withheld, and the users difference (people
    in two parts) is 0 or at least k. The audit agrees (no finding).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.audit import audit_records
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import ROTATION_MS, load_secret
from anonstream.core.pipeline import parse_pipeline
from anonstream.core.records import STAR
from anonstream.core.step import Message, StepResult
from tests.unit.fields import web_test_fields

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY + DAY  # a UTC day boundary
SECRET = load_secret({"ANONSTREAM_SECRET": "q" * 32})
HOST = "https://shop.example.com"
TYPES = ("page_view", "click")
PATHS = ("/a", "/b", "/c")

# Window shapes that divide the key period: (rotation, size, step) in minutes.
SHAPES = [
    (rot, size, size // hops)
    for rot, sizes in (("hourly", (15, 30, 60)), ("daily", (60, 120, 240)))
    for size in sizes
    for hops in (1, 2, 3, 4)
    if size % hops == 0
]


def _run(pipeline: Any, events: list[dict[str, Any]], batch: int) -> StepResult:
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + 30 * DAY)
    engine.assign([0])
    msgs = [Message(orjson.dumps(e), 0, i) for i, e in enumerate(events)]
    result = StepResult()
    for i in range(0, len(msgs), batch):
        result.extend(engine.process(msgs[i : i + batch]))
    result.extend(engine.close_all())
    assert not result.dead_letters
    assert engine.counters["late"] == 0  # events come in time order
    return result


@st.composite
def boundary_events(draw: st.DrawFn, rotation: str) -> list[dict[str, Any]]:
    """Events of up to 12 people within a few hours around a key period boundary; a person
    often has events on both sides of it."""
    period = ROTATION_MS[rotation]
    boundary = T0 + period * draw(st.integers(1, 2))
    n = draw(st.integers(1, 60))
    events = []
    for i in range(n):
        offset = draw(st.integers(-150 * MINUTE, 150 * MINUTE - 1))
        events.append({
            "event_id": f"e{i}",
            "ts": boundary + offset,
            "type": draw(st.sampled_from(TYPES)),
            "visitor_id": f"visitor-{draw(st.integers(1, 12))}",
            "url": HOST + "/a",
        })  # fmt: skip
    return sorted(events, key=lambda e: e["ts"])


@settings(deadline=None, max_examples=80)
@given(
    shape=st.sampled_from(SHAPES),
    lateness=st.sampled_from(["0s", "1m", "10m", "2h"]),
    k=st.integers(2, 6),
    batch=st.sampled_from([1, 7, 1000]),
    data=st.data(),
)
def test_every_released_cell_has_k_people_whatever_the_window_and_rotation(
    shape: tuple[str, int, int], lateness: str, k: int, batch: int, data: st.DataObject
) -> None:
    rotation, size, step = shape
    events = data.draw(boundary_events(rotation))
    p = parse_pipeline({
        "pipeline": "kprop", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id"], "pseudonym_rotation": rotation,
        "fields": web_test_fields(),
        "window": {"size": f"{size}m", "step": f"{step}m", "allowed_lateness": lateness},
        "dimensions": ["type"], "k": k,
        "contribution": {"max_events_per_unit_per_cell": 1000,
                         "max_cells_per_unit_per_window": 1000},
    }, "kprop")  # fmt: skip
    result = _run(p, events, batch)
    by_window: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in aggregates(result):
        by_window[window_of(r)].append(r)
    for (start, end), recs in by_window.items():
        inside = [e for e in events if start <= e["ts"] < end]
        alone = {r["dims"]["type"] for r in recs if r["dims"]["type"] != STAR}
        for r in recs:
            t = r["dims"]["type"]
            rows = [e for e in inside if (e["type"] == t if t != STAR else e["type"] not in alone)]
            people = {e["visitor_id"] for e in rows}
            assert len(people) >= k, (r, len(people))
            assert r["metrics"]["users"] == len(people)
            assert r["metrics"]["events"] == len(rows)


def aggregates(result: StepResult, output: str | None = None) -> list[dict[str, Any]]:
    return [r for r in result.releases
            if r["kind"] == "aggregate" and output in (None, r["output"])]  # fmt: skip


def window_of(rec: dict[str, Any]) -> tuple[int, int]:
    def ms(s: str) -> int:
        return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)

    return ms(rec["window_start"]), ms(rec["window_end"])


@st.composite
def partner_setups(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]]]:
    """A pipeline with a primary [type, url] output and one to three coarser outputs with
    their own k, and events of up to 30 people in two hours."""
    k = draw(st.integers(2, 5))
    outs: list[dict[str, Any]] = [{"name": "default"}]
    for i, dims in enumerate(draw(st.lists(
        st.sampled_from([["type"], ["url"], ["type", "url"]]), min_size=1, max_size=3
    ))):  # fmt: skip
        outs.append({"name": f"partner{i}", "dimensions": dims, "k": k + draw(st.integers(0, 2))})
    fields = web_test_fields(
        duration_ms={"measure": True, "clamp": [0, 1000], "edges": [100, 500],
                     "max_sum_per_unit": draw(st.sampled_from([300, 1000, 5000]))}
    )  # fmt: skip
    p = parse_pipeline({
        "pipeline": "partners", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id"], "fields": fields,
        "window": {"size": "1h", "allowed_lateness": "2h"},
        "dimensions": ["type", "url"], "k": k,
        "metrics": {"sums": ["duration_ms"], "means": ["duration_ms"],
                    "histograms": ["duration_ms"]},
        "contribution": {"max_events_per_unit_per_cell": draw(st.integers(1, 4)),
                         "max_cells_per_unit_per_window": draw(st.integers(1, 6))},
        "outputs": outs,
    }, "partners")  # fmt: skip
    events = []
    for i in range(draw(st.integers(0, 120))):
        ev: dict[str, Any] = {
            "event_id": f"e{i}",
            "ts": T0 + draw(st.integers(0, 2 * HOUR - 1)),
            "type": draw(st.sampled_from(TYPES)),
            "visitor_id": f"visitor-{draw(st.integers(1, 30))}",
            "url": HOST + draw(st.sampled_from(PATHS)),
        }
        if draw(st.booleans()):
            ev["duration_ms"] = draw(st.integers(0, 1200))
        events.append(ev)
    return p, events


def _bands(hist: dict[str, int]) -> list[tuple[float, float, int]]:
    out = []
    for label, n in hist.items():
        lo, hi = label[1:-1].split(",")
        out.append((float(lo), float(hi), n))
    return out


@settings(deadline=None, max_examples=80)
@given(partner_setups())
def test_no_secondary_cell_minus_its_primary_cells_isolates_1_to_k_minus_1_people(
    setup: tuple[Any, list[dict[str, Any]]],
) -> None:
    p, events = setup
    result = _run(p, sorted(events, key=lambda e: e["ts"]), 1000)
    primary = aggregates(result, "default")
    for out in p.outputs[1:]:
        for cell in aggregates(result, out.name):
            if STAR in cell["dims"].values():
                continue
            parts = [c for c in primary if window_of(c) == window_of(cell)
                     and all(c["dims"][d] == v for d, v in cell["dims"].items())]  # fmt: skip
            assert parts  # a secondary cell is a union of released primary cells
            kk = max(out.k, p.k)
            m, ms = cell["metrics"], [c["metrics"] for c in parts]
            assert m["events"] == sum(x["events"] for x in ms)
            overlap = sum(x["users"] for x in ms) - m["users"]
            assert not 1 <= overlap <= kk - 1 and overlap % kk == 0
            for name in ("duration_ms_sum", "duration_ms_mean", "duration_ms_histogram"):
                if any(x[name] is None for x in ms):
                    assert m[name] is None, name
            if m["duration_ms_sum"] is not None:
                total = sum(x["duration_ms_sum"] for x in ms)
                assert abs(m["duration_ms_sum"] - total) < 0.01
            if m["duration_ms_mean"] is not None:
                means = [x["duration_ms_mean"] for x in ms]
                assert min(means) - 0.01 <= m["duration_ms_mean"] <= max(means) + 0.01
            if m["duration_ms_histogram"] is not None:
                part_bands = [b for x in ms for b in _bands(x["duration_ms_histogram"])]
                for lo, hi, n in _bands(m["duration_ms_histogram"]):
                    assert not any(a < hi and lo < b and not (lo <= a and b <= hi)
                                   for a, b, _ in part_bands)  # fmt: skip
                    assert n == sum(c for a, b, c in part_bands if lo <= a and b <= hi)
    report = audit_records(result.releases, k=p.k)
    assert report.ok, (
        report.render()
        + "\n"
        + "\n".join(
            f"{r['output']} {r['window_start']} {r['dims']} {r['metrics']['events']} "
            f"{r['metrics']['users']} {r['rollup_level']}"
            for r in aggregates(result)
        )
        + str([(o.name, o.dimensions, o.k) for o in p.outputs])
    )
