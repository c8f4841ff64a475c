"""Hand-made attacks of issue 13 on the release rules, each with its exact expected release.

- k across key rotation: hopping windows cross pseudonym key periods; one person must
  still be one person in a window.
- A partner feed minus the primary: every number of a coarser output is derived from the
  primary's released numbers, so the difference isolates nobody (sum, histogram band,
  users), and the audit says so when a release breaks that.
- Bounds: one person's total in a released sum is clipped to the per-unit bound.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from anonstream.audit import audit_records
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import parse_pipeline
from anonstream.core.step import Message, StepResult
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
    # fast=False: every event down the per-event reference path
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + 7 * DAY, fast_path=fast)
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


# -- secondary outputs add nothing to the primary -------------------------------------------

PARTNER = [{"name": "default"}, {"name": "partner", "dimensions": ["type"]}]


def partner_pipeline(**changes: Any) -> Any:
    return make_pipeline(
        dimensions=["type", "url"], outputs=PARTNER, k=3,
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"],
                 "histograms": ["duration_ms"]},
        **changes,
    )  # fmt: skip


def by_url(result: StepResult) -> dict[str, dict[str, Any]]:
    return {r["dims"]["url"]: r["metrics"] for r in aggregates(result)}


def partner(result: StepResult) -> dict[str, Any]:
    (rec,) = aggregates(result, "partner")
    return dict(rec["metrics"])


def test_a_sum_withheld_in_a_primary_cell_is_withheld_in_the_partner_cell() -> None:
    """The issue's case: on /a three people, one with a duration (the primary withholds the
    sum); on /b the sum is released. The partner's page_view sum minus /b's sum would be
    the lone person's exact value."""
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a") for i in range(2)],
        event("a2", T0 + MINUTE, path="/a", duration_ms=777),
        *[event(f"b{i}", T0 + MINUTE, path="/b", duration_ms=100 * (i + 1)) for i in range(3)],
    ]
    result = run(partner_pipeline(), events)
    cells = by_url(result)
    assert cells["shop.example.com/a"]["duration_ms_sum"] is None
    assert cells["shop.example.com/b"]["duration_ms_sum"] == 600
    got = partner(result)
    assert (got["events"], got["duration_ms_sum"], got["duration_ms_mean"]) == (6, None, None)
    assert got["duration_ms_histogram"] is None
    assert audit_records(result.releases, k=3).ok


def test_partner_sums_means_and_histograms_are_totals_of_the_primary_cells() -> None:
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a", duration_ms=50 + i) for i in range(3)],
        *[event(f"b{i}", T0 + MINUTE, path="/b", duration_ms=600 + i) for i in range(3)],
        *[event(f"c{i}", T0 + MINUTE, path="/c", duration_ms=50 + 500 * (i % 2))
          for i in range(6)],
    ]  # fmt: skip
    result = run(partner_pipeline(), events)
    cells = by_url(result)
    got = partner(result)
    assert got["events"] == sum(c["events"] for c in cells.values()) == 12
    assert got["duration_ms_sum"] == sum(c["duration_ms_sum"] for c in cells.values())
    assert got["duration_ms_mean"] == round(got["duration_ms_sum"] / 12, 3)
    # /a has all values in [-inf,100), /b in [500,inf) and /c both halves: every band of
    # the partner is a union of whole bands of each part, with their total.
    assert cells["shop.example.com/a"]["duration_ms_histogram"] == {"[-inf,100)": 3}
    assert cells["shop.example.com/b"]["duration_ms_histogram"] == {"[-inf,inf)": 3}
    assert cells["shop.example.com/c"]["duration_ms_histogram"] == {
        "[-inf,100)": 3, "[100,inf)": 3,
    }  # fmt: skip
    assert got["duration_ms_histogram"] == {"[-inf,inf)": 12}
    assert audit_records(result.releases, k=3).ok


def test_histogram_band_of_the_partner_is_not_finer_than_any_primary_cell() -> None:
    """The issue's band case: a primary cell merged two bands to reach k; the partner
    must not split them again (its band minus the other cells' band would be a few
    people's values)."""
    events = [
        # /a: 3 people under 100, 1 in [100,500), 3 in [500,inf): that lone one merges.
        *[event(f"a{i}", T0 + MINUTE, path="/a", duration_ms=10) for i in range(3)],
        event("a3", T0 + MINUTE, path="/a", duration_ms=200),
        *[event(f"a{i}", T0 + MINUTE, path="/a", duration_ms=900) for i in range(4, 7)],
        # /b: 3 people in each of the three bands.
        *[event(f"b{i}", T0 + MINUTE, path="/b", duration_ms=(10, 200, 900)[i // 3])
          for i in range(9)],
    ]  # fmt: skip
    result = run(partner_pipeline(), events)
    cells = by_url(result)
    assert cells["shop.example.com/a"]["duration_ms_histogram"] == {
        "[-inf,100)": 3, "[100,inf)": 4,
    }  # fmt: skip
    assert cells["shop.example.com/b"]["duration_ms_histogram"] == {
        "[-inf,100)": 3, "[100,500)": 3, "[500,inf)": 3,
    }  # fmt: skip
    assert partner(result)["duration_ms_histogram"] == {"[-inf,100)": 6, "[100,inf)": 10}
    assert audit_records(result.releases, k=3).ok


def test_partner_users_cannot_be_differenced_to_fewer_than_k_people() -> None:
    """The issue's users case: one person in both primary cells. The partner's exact
    distinct count (5) against the cells' 3 + 3 gives 1: the person in both. The overlap
    is rounded down to a multiple of k: here 0, so users is 6."""
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a") for i in range(3)],
        *[event(f"b{i}", T0 + MINUTE, path="/b") for i in range(2)],
        event("a0", T0 + 2 * MINUTE, path="/b"),
    ]
    result = run(partner_pipeline(), events)
    assert [c["users"] for c in by_url(result).values()] == [3, 3]
    assert partner(result)["users"] == 6
    # Three people in both: an overlap of k is a group of k, released exactly.
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a") for i in range(4)],
        *[event(f"a{i}", T0 + MINUTE, path="/b") for i in range(3)],
    ]
    result = run(partner_pipeline(), events)
    assert partner(result)["users"] == 4
    assert audit_records(result.releases, k=3).ok


def _tamper(result: StepResult, **metrics: Any) -> list[dict[str, Any]]:
    out = []
    for r in result.releases:
        if r["kind"] == "aggregate" and r["output"] == "partner":
            r = {**r, "metrics": {**r["metrics"], **metrics}}
        out.append(r)
    return out


@pytest.mark.parametrize(
    ("metrics", "says"),
    [
        ({"users": 5}, "people in two of them"),
        ({"duration_ms_sum": 1377.0}, "withheld in a part"),
        ({"duration_ms_mean": 1.0}, "withheld in a part"),
        ({"duration_ms_histogram": {"[-inf,100)": 2, "[100,inf)": 4}}, "withheld in a part"),
    ],
)
def test_the_audit_flags_each_old_partner_leak(metrics: dict[str, Any], says: str) -> None:
    """The releases the old rules made, planted by hand: the audit's cross-output rule
    checks every quantity, not only events."""
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a") for i in range(2)],
        event("a2", T0 + MINUTE, path="/a", duration_ms=777),
        *[event(f"b{i}", T0 + MINUTE, path="/b", duration_ms=200) for i in range(2)],
        event("a0", T0 + MINUTE, path="/b", duration_ms=200),
    ]
    result = run(partner_pipeline(), events)
    assert audit_records(result.releases, k=3).ok
    report = audit_records(_tamper(result, **metrics), k=3)
    assert not report.ok
    assert any(f.rule == "differencing" and says in f.message for f in report.findings)


def test_the_audit_flags_a_sum_or_band_that_is_not_the_parts_total() -> None:
    events = [
        *[event(f"a{i}", T0 + MINUTE, path="/a", duration_ms=10) for i in range(3)],
        *[event(f"b{i}", T0 + MINUTE, path="/b", duration_ms=(10, 900)[i % 2])
          for i in range(6)],
    ]  # fmt: skip
    result = run(partner_pipeline(), events)
    assert audit_records(result.releases, k=3).ok
    for metrics in (
        {"duration_ms_sum": 10.0},
        {"duration_ms_histogram": {"[-inf,100)": 5, "[100,inf)": 4}},
        {"duration_ms_histogram": {"[-inf,100)": 6, "[100,500)": 1, "[500,inf)": 2}},
        {"duration_ms_histogram": {"[-inf,inf)": 8}},
    ):
        report = audit_records(_tamper(result, **metrics), k=3)
        assert any(f.rule == "differencing" for f in report.findings), metrics


# -- per-person bound on sums ----------------------------------------------------------------


def test_one_visitor_with_10_of_21_events_adds_at_most_the_per_unit_bound() -> None:
    """The issue's replay: one visitor makes 10 of a cell's 21 events at the per-event
    clamp. Their share of the released sum is the per-unit bound, not 10 clamps."""
    fields = web_test_fields(
        duration_ms={"measure": True, "clamp": [0, 600000], "max_sum_per_unit": 900000}
    )
    p = make_pipeline(fields=fields, k=3, contribution={"max_events_per_unit_per_cell": 10})
    heavy = [event("heavy", T0 + i * MINUTE, duration_ms=600000) for i in range(10)]
    others = [event(f"v{i}", T0 + MINUTE, duration_ms=6000) for i in range(11)]
    (rec,) = aggregates(run(p, heavy + others))
    assert rec["metrics"]["events"] == 21
    assert rec["metrics"]["duration_ms_sum"] == 900000 + 11 * 6000
    # The default bound is one event's clamp.
    p = make_pipeline(
        fields=web_test_fields(duration_ms={"measure": True, "clamp": [0, 600000]}), k=3
    )
    (rec,) = aggregates(run(p, heavy + others))
    assert rec["metrics"]["duration_ms_sum"] == 600000 + 11 * 6000


# -- allow-lists of kept fields ---------------------------------------------------------------

TYPES = ["page_view", "email_open"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_kept_field_with_an_allow_list_releases_only_listed_values(fast: bool) -> None:
    fields = web_test_fields(type={"keep": {"values": TYPES}})
    p = make_pipeline(fields=fields, k=2)
    odd = ["jane\u200b@example.com", "page_view\u200b", "Page_View", "free text here"]
    events = [
        *[event(f"v{i}", T0 + MINUTE, typ="page_view") for i in range(2)],
        *[event(f"w{i}", T0 + MINUTE, typ=t) for i, t in enumerate(odd)],
    ]
    got = {r["dims"]["type"]: r["metrics"]["users"] for r in aggregates(run(p, events, fast=fast))}
    assert got == {"page_view": 2, "(other)": 4}


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ({"type": {"keep": {"values": []}}}, "fields.type.keep.values", "non-empty list"),
        ({"type": {"keep": {"values": "page_view"}}}, "fields.type.keep.values", "list"),
        ({"type": {"keep": {"values": ["a", "a"]}}}, "fields.type.keep.values", "twice"),
        ({"type": {"keep": {"values": ["(other)"]}}}, "fields.type.keep.values", "marker"),
        ({"type": {"keep": {"values": ["*"]}}}, "fields.type.keep.values", "marker"),
        ({"type": {"keep": {"values": ["a\u200bb"]}}}, "fields.type.keep.values", "printable"),
        ({"type": {"keep": {"values": ["jane@example.com"]}}}, "fields.type.keep.values",
         "identifier"),
        ({"type": {"keep": {"values": [1]}}}, "fields.type.keep.values", "printable strings"),
        ({"type": {"keep": {"valuez": ["a"]}}}, "fields.type.valuez", "unknown option"),
        ({"type": {"keep": ["a"]}}, "fields.type.keep", "mapping"),
        ({"duration_ms": {"measure": True, "clamp": [0, 1], "max_sum_per_unit": 0}},
         "fields.duration_ms.max_sum_per_unit", "positive number"),
        ({"duration_ms": {"measure": True, "clamp": [0, 1], "max_sum_per_unit": "big"}},
         "fields.duration_ms.max_sum_per_unit", "positive number"),
    ],
)  # fmt: skip
def test_bad_allow_lists_and_bounds_fail_at_load_naming_file_and_path(
    change: dict[str, Any], where: str, says: str
) -> None:
    from anonstream.core.pipeline import PipelineError

    with pytest.raises(PipelineError) as exc:
        make_pipeline(fields=web_test_fields(**change))
    assert exc.value.source == "test_release_privacy"
    assert exc.value.path == where
    assert says in exc.value.reason


def test_shipped_pipelines_list_the_values_the_generator_produces() -> None:
    from anonstream.core.pipeline import load_pipeline
    from anonstream.synthetic import SERVICES_FOR_TYPE, USAGE_TYPES, WEB_TYPES

    web = load_pipeline("pipelines/web_activity.yaml")
    usage = load_pipeline("pipelines/service_usage.yaml")
    assert set(web.fields["type"].values or ()) == set(WEB_TYPES)
    assert set(usage.fields["type"].values or ()) == set(USAGE_TYPES)
    services = {s for ss in SERVICES_FOR_TYPE.values() for s in ss}
    assert set(usage.fields["service"].values or ()) == services
