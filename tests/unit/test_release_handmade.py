"""Release rules on hand-made events whose releases are known exactly.

A small pipeline over the web_activity contract (dimensions type and url, k = 3), a fixed
secret, and events of one hour. Each test states which cells are released at which roll-up
level with which numbers, and that nothing released describes a group of fewer than k
people, not even as a difference of released numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import parse_pipeline
from anonstream.core.records import STAR, rfc3339
from anonstream.core.step import Message, StepResult
from tests.unit.fields import web_test_fields

DAY = 86_400_000
HOUR = 3_600_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY  # start of a UTC day: one pseudonym period
K = 3
SECRET = load_secret({"ANONSTREAM_SECRET": "x" * 32})
HOST = "https://shop.example.com"


def make_pipeline(
    *,
    k: int = K,
    max_events: int = 1000,
    max_cells: int = 1000,
    dims: Sequence[str] = ("type", "url"),
    outputs: list[dict[str, Any]] | None = None,
    noise: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Any:
    doc: dict[str, Any] = {
        "pipeline": "handmade",
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": web_test_fields(),
        "window": {"size": "1h", "allowed_lateness": "0s"},
        "dimensions": list(dims),
        "metrics": metrics or {"sums": ["duration_ms"], "means": ["duration_ms"]},
        "contribution": {
            "max_events_per_unit_per_cell": max_events,
            "max_cells_per_unit_per_window": max_cells,
        },
        "k": k,
    }
    if outputs is not None:
        doc["outputs"] = outputs
    if noise is not None:
        doc["noise"] = noise
    return parse_pipeline(doc, "test_release_handmade")


_ids = itertools.count()


def event(
    user: str, typ: str, path: str, *, ts: int = T0 + 60_000, event_id: str | None = None,
    duration_ms: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    ev: dict[str, Any] = {
        "event_id": event_id or f"ev-{next(_ids)}",
        "ts": ts,
        "type": typ,
        "visitor_id": user,
        "url": HOST + path,
    }
    if duration_ms is not None:
        ev["duration_ms"] = duration_ms
    return ev


def users(prefix: str, n: int, typ: str, path: str, **kw: Any) -> list[dict[str, Any]]:
    """One event each from n distinct people."""
    return [event(f"{prefix}{i}", typ, path, **kw) for i in range(n)]


def url(path: str) -> str:
    return "shop.example.com" + path


def run(pipeline: Any, events: list[dict[str, Any]]) -> StepResult:
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    engine.assign([0])
    result = engine.process([Message(orjson.dumps(e), 0, i) for i, e in enumerate(events)])
    assert not result.dead_letters
    result.extend(engine.close_all())
    for _, _, acc in result.accounting:
        assert acc.balanced(), acc
    return result


def aggregates(result: StepResult, output: str = "default") -> dict[tuple[str, ...], dict]:
    out: dict[tuple[str, ...], dict] = {}
    for r in result.releases:
        if r["kind"] == "aggregate" and r["output"] == output:
            key = tuple(r["dims"].values())
            assert key not in out, f"two releases of {key}"
            out[key] = r
    return out


def summaries(result: StepResult) -> list[dict[str, Any]]:
    return [r for r in result.releases if r["kind"] == "window_summary"]


def numbers(rec: dict[str, Any]) -> tuple[int, int, int]:
    m = rec["metrics"]
    return m["events"], m["users"], rec["rollup_level"]


# -- k threshold and roll-up -----------------------------------------------------------------


def test_rollup_and_residuals() -> None:
    events = [
        # (page_view, /a): 3 people, 4 events: released as it is.
        *users("a", 3, "page_view", "/a"),
        event("a0", "page_view", "/a"),
        # (page_view, /b): 2 people, 3 events; the only other page_view cell.
        *users("b", 2, "page_view", "/b"),
        event("b1", "page_view", "/b"),
        # (click, /c): 1 person.
        event("c0", "click", "/c"),
        # (signup, /x) and (signup, /y): 2 people each, reaching k together.
        *users("x", 2, "signup", "/x"),
        *users("y", 2, "signup", "/y"),
        event("y0", "signup", "/y"),
    ]
    result = run(make_pipeline(), events)
    agg = aggregates(result)
    assert {key: numbers(rec) for key, rec in agg.items()} == {
        ("page_view", url("/a")): (4, 3, 0),
        ("signup", STAR): (5, 4, 1),
        # /b (2 people) could not be released as (page_view, *): with /a released, that
        # would be page_view minus /a. It merges with the click leftover at level 2.
        (STAR, STAR): (4, 3, 2),
    }
    # No page_view total and no (page_view, *) rest of /b alone.
    assert ("page_view", STAR) not in agg
    assert ("click", STAR) not in agg
    rec = agg[("page_view", url("/a"))]
    assert rec["dims"] == {"type": "page_view", "url": url("/a")}
    assert rec["window_start"] == rfc3339(T0)
    assert rec["window_end"] == rfc3339(T0 + HOUR)
    assert rec["k"] == K and rec["noise"] is None
    (summary,) = summaries(result)
    assert summary["cells_released"] == 3
    assert summary["cells_rolled_up"] == 4  # /x, /y into (signup, *); /b, /c into (*, *)
    assert summary["cells_suppressed"] == 0
    assert summary["k"] == K
    ((start, name, acc),) = result.accounting
    assert (start, name) == (T0, "default")
    assert acc.rows_in == len(events)
    assert (acc.released, acc.rolled_up, acc.suppressed) == (4, 9, 0)


def test_small_rest_is_suppressed_when_the_leftovers_stay_under_k() -> None:
    events = [*users("a", 3, "page_view", "/a"), *users("b", 2, "page_view", "/b")]
    result = run(make_pipeline(), events)
    agg = aggregates(result)
    # Only /a: neither (page_view, *) nor (*, *) would reach k, and either would give /b
    # as a difference.
    assert {key: numbers(rec) for key, rec in agg.items()} == {("page_view", url("/a")): (3, 3, 0)}
    (summary,) = summaries(result)
    assert (summary["cells_released"], summary["cells_rolled_up"]) == (1, 0)
    assert summary["cells_suppressed"] == 1
    ((_, _, acc),) = result.accounting
    assert (acc.released, acc.rolled_up, acc.suppressed) == (3, 0, 2)


def test_level_one_rest_of_several_small_siblings() -> None:
    events = [
        *users("a", 3, "page_view", "/a"),
        *users("b", 2, "page_view", "/b"),
        *users("c", 1, "page_view", "/c"),
        *users("d", 1, "click", "/d"),
    ]
    result = run(make_pipeline(), events)
    agg = aggregates(result)
    # /b and /c together are 3 people: the page_view rest; the click cell stays alone.
    assert {key: numbers(rec) for key, rec in agg.items()} == {
        ("page_view", url("/a")): (3, 3, 0),
        ("page_view", STAR): (3, 3, 1),
    }
    (summary,) = summaries(result)
    assert (summary["cells_released"], summary["cells_rolled_up"]) == (2, 2)
    assert summary["cells_suppressed"] == 1


def test_people_are_counted_once_across_merged_cells() -> None:
    # The same 2 people in /b and /c: 4 events but still only 2 people, under k.
    events = [
        *users("a", 3, "page_view", "/a"),
        *users("p", 2, "page_view", "/b"),
        *users("p", 2, "page_view", "/c"),
    ]
    agg = aggregates(run(make_pipeline(), events))
    assert set(agg) == {("page_view", url("/a"))}


def test_k_counts_people_not_events() -> None:
    # 12 events, but of K - 1 people.
    events = [event("solo", "page_view", "/a") for _ in range(10)] + users(
        "t", K - 2, "page_view", "/a"
    )
    result = run(make_pipeline(), events)
    assert aggregates(result) == {}
    (summary,) = summaries(result)
    assert summary["cells_suppressed"] == 1 and summary["cells_released"] == 0


def test_windows_are_released_separately() -> None:
    events = [
        *users("a", 3, "page_view", "/a", ts=T0 + 1),
        *users("b", 3, "page_view", "/a", ts=T0 + HOUR + 1),
        *users("c", 2, "page_view", "/a", ts=T0 + 2 * HOUR),
    ]
    result = run(make_pipeline(), events)
    recs = [r for r in result.releases if r["kind"] == "aggregate"]
    assert [(r["window_start"], r["metrics"]["users"]) for r in recs] == [
        (rfc3339(T0), 3),
        (rfc3339(T0 + HOUR), 3),
    ]
    assert [s["cells_suppressed"] for s in summaries(result)] == [0, 0, 1]
    assert [start for start, _, _ in result.accounting] == [T0, T0 + HOUR, T0 + 2 * HOUR]


# -- contribution bounding and measures ------------------------------------------------------


def test_one_unit_counts_at_most_L_events_per_cell() -> None:
    L = 5
    events = [event("heavy", "page_view", "/a") for _ in range(50)]
    events += users("o", 2, "page_view", "/a")
    result = run(make_pipeline(max_events=L), events)
    agg = aggregates(result)
    assert numbers(agg[("page_view", url("/a"))]) == (L + 2, 3, 0)
    ((_, _, acc),) = result.accounting
    assert acc.over_event_limit == 50 - L
    assert acc.released == L + 2


def test_L_keeps_the_same_events_however_they_arrive() -> None:
    """Which L events of a unit are kept is decided by the keyed event hash: the clamped
    sum of the kept ones is the same in any order."""
    evs = [event("heavy", "page_view", "/a", duration_ms=10 * i) for i in range(20)]
    evs += users("o", 2, "page_view", "/a", duration_ms=0)
    a = aggregates(run(make_pipeline(max_events=3), evs))
    b = aggregates(run(make_pipeline(max_events=3), evs[::-1]))
    assert a == b
    assert a[("page_view", url("/a"))]["metrics"]["events"] == 5


def test_one_unit_counts_in_at_most_M_cells() -> None:
    M, n_cells = 5, 30
    events = []
    for i in range(n_cells):
        events.append(event("heavy", "page_view", f"/p{i}"))
        events += users(f"o{i}-", 2, "page_view", f"/p{i}")
    result = run(make_pipeline(max_cells=M), events)
    agg = aggregates(result)
    level0 = {key: rec for key, rec in agg.items() if rec["rollup_level"] == 0}
    # The heavy unit makes exactly M cells reach k; the other 25 have 2 people each.
    assert len(level0) == M
    assert all(numbers(rec) == (3, 3, 0) for rec in level0.values())
    assert numbers(agg[("page_view", STAR)]) == (2 * (n_cells - M), 2 * (n_cells - M), 1)
    assert len(agg) == M + 1
    ((_, _, acc),) = result.accounting
    assert acc.over_cell_limit == n_cells - M
    assert sum(r["metrics"]["events"] for r in agg.values()) == 2 * n_cells + M
    (summary,) = summaries(result)
    assert summary["cells_released"] == M + 1
    assert summary["cells_rolled_up"] == n_cells - M


def test_measure_sum_is_clamped_per_event() -> None:
    events = [
        event("a", "page_view", "/a", duration_ms=200),
        event("b", "page_view", "/a", duration_ms=5000),  # clamped to 1000
        event("c", "page_view", "/a", duration_ms=600_000),  # clamped to 1000
        event("c", "page_view", "/a"),  # absent: not in the sum nor the mean
    ]
    m = aggregates(run(make_pipeline(), events))[("page_view", url("/a"))]["metrics"]
    assert m["events"] == 4 and m["users"] == 3
    assert m["duration_ms_sum"] == 2200.0
    assert m["duration_ms_mean"] == pytest.approx(2200 / 3, abs=1e-3)


def test_duplicate_event_id_counted_once() -> None:
    first = event("a0", "page_view", "/a", duration_ms=100)
    dup = dict(first)
    events = [first, *users("b", 2, "page_view", "/a", duration_ms=100), dup, dict(first)]
    result = run(make_pipeline(), events)
    m = aggregates(result)[("page_view", url("/a"))]["metrics"]
    assert (m["events"], m["users"], m["duration_ms_sum"]) == (3, 3, 300.0)
    ((_, _, acc),) = result.accounting
    assert acc.duplicates == 2
    assert acc.rows_in == 5


def test_histogram_bands_merge_until_k() -> None:
    p = make_pipeline(metrics={"histograms": ["duration_ms"]})  # edges 100, 500
    events = [
        *users("lo", 3, "page_view", "/a", duration_ms=50),  # band [-inf,100): 3 people
        *users("mid", 1, "page_view", "/a", duration_ms=200),  # band [100,500): 1
        *users("hi", 2, "page_view", "/a", duration_ms=900),  # band [500,inf): 2
    ]
    m = aggregates(run(p, events))[("page_view", url("/a"))]["metrics"]
    # [100,500) alone has 1 person: merged with the next band until k.
    assert m["duration_ms_histogram"] == {"[-inf,100)": 3, "[100,inf)": 3}


def test_histogram_small_tail_folds_into_the_last_band() -> None:
    p = make_pipeline(metrics={"histograms": ["duration_ms"]})
    events = [
        *users("lo", 3, "page_view", "/a", duration_ms=50),
        *users("mid", 3, "page_view", "/a", duration_ms=200),
        *users("hi", 1, "page_view", "/a", duration_ms=900),
    ]
    m = aggregates(run(p, events))[("page_view", url("/a"))]["metrics"]
    assert m["duration_ms_histogram"] == {"[-inf,100)": 3, "[100,inf)": 4}


# -- findings: leaks by difference or of a single person's value ---------------------------


def test_two_outputs_must_not_release_a_parent_and_its_child() -> None:
    """An output on [type] and one on [type, url]: (page_view) minus (page_view, /a) is /b,
    a group of 2 < k, unless the releases of the outputs are coordinated."""
    p = make_pipeline(outputs=[{"name": "default"}, {"name": "by_type", "dimensions": ["type"]}])
    events = [*users("a", 3, "page_view", "/a"), *users("b", 2, "page_view", "/b")]
    result = run(p, events)
    fine = aggregates(result, "default")
    coarse = aggregates(result, "by_type")
    for ckey, crec in coarse.items():
        children = [
            rec for key, rec in fine.items() if key[0] == ckey[0] and rec["rollup_level"] == 0
        ]
        if not children:
            continue
        diff_users = crec["metrics"]["users"] - sum(r["metrics"]["users"] for r in children)
        diff_events = crec["metrics"]["events"] - sum(r["metrics"]["events"] for r in children)
        assert diff_events == 0 or diff_users >= K, (
            f"{ckey} minus its released children leaves {diff_events} events of {diff_users} people"
        )


def test_mean_of_a_measure_present_for_fewer_than_k_people() -> None:
    """A released cell of 3 people where only one of them has a duration: the released
    sum and mean are that one person's value."""
    events = [
        *users("a", 2, "page_view", "/a"),
        event("only", "page_view", "/a", duration_ms=777),
    ]
    m = aggregates(run(make_pipeline(), events))[("page_view", url("/a"))]["metrics"]
    assert m["users"] == 3
    assert m["duration_ms_mean"] != 777.0 or m["duration_ms_sum"] != 777.0, (
        "sum/mean of a measure released although only 1 < k person has a value"
    )


def test_histogram_band_of_fewer_than_k_people() -> None:
    """Bands are merged until each holds k people, but when the people with a value never
    reach k the whole range is released anyway, as one band of 1 person."""
    p = make_pipeline(metrics={"histograms": ["duration_ms"]})
    events = [*users("a", 2, "page_view", "/a"), event("only", "page_view", "/a", duration_ms=7)]
    m = aggregates(run(p, events))[("page_view", url("/a"))]["metrics"]
    assert m["users"] == 3
    assert m["duration_ms_histogram"] is None, "a histogram band holds fewer than k people"


def test_raw_dimension_value_star_is_not_a_rollup() -> None:
    """A kept value "*" must not be confused with the roll-up marker: here (*, *) would be
    released twice, with the same release_id and (with noise) the same noise draws."""
    events = [
        *users("s", 2, STAR, "/a"),
        *users("t", 2, STAR, "/b"),
        *users("c", 1, "click", "/c"),
        *users("d", 2, "page_view", "/d"),
    ]
    result = run(make_pipeline(), events)
    ids = [r["release_id"] for r in result.releases if r["kind"] == "aggregate"]
    assert len(ids) == len(set(ids)), "two different releases share one release_id"
