"""Per-person bounds per released cell (red-team findings 2 and 3).

- A rolled-up cell merges several finest cells; one person still adds at most L events to
  its `events` and histogram bands, and at most the per-unit bound to its sum.
- The released mean is the bounded sum over the counted events, so mean x events minus
  the others' share never gives a person's unbounded total.
- Property: for random inputs, every released cell's numbers are exactly those of each
  person's events in it capped at L (and their sum at the per-unit bound), with ground
  truth built from the input and the released cell keys.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.audit import audit_records
from anonstream.core.records import STAR
from tests.unit.fields import web_test_fields
from tests.unit.test_release_privacy import MINUTE, T0, aggregates, event, make_pipeline, run

SITE = "shop.example.com"


def test_a_rolled_up_cell_takes_at_most_l_events_from_one_person() -> None:
    """The red team's t10: nine people with one event each on their own page, one target
    with 10 events on each of 20 pages. All roll up into {page_view, *}: the target adds
    L = 10 events to it, not 200."""
    p = make_pipeline(
        dimensions=["type", "url"], k=10,
        contribution={"max_events_per_unit_per_cell": 10, "max_cells_per_unit_per_window": 30},
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"],
                 "histograms": ["duration_ms"]},
    )  # fmt: skip
    others = [event(f"p{j}", T0 + MINUTE, path=f"/p{j}", duration_ms=50) for j in range(9)]
    target = [event("target", T0 + MINUTE + e, path=f"/t{m}", duration_ms=600)
              for m in range(20) for e in range(10)]  # fmt: skip
    result = run(p, others + target)
    (rec,) = aggregates(result)
    assert rec["dims"] == {"type": "page_view", "url": STAR}
    got = rec["metrics"]
    assert (got["events"], got["users"]) == (19, 10)
    assert sum(got["duration_ms_histogram"].values()) == 19
    assert got["duration_ms_sum"] == 9 * 50 + 1000  # the target's sum: one clamp
    assert got["duration_ms_mean"] == round((9 * 50 + 1000) / 19, 3)
    assert audit_records(result.releases, k=10).ok


def test_a_primary_with_fewer_dimensions_than_the_pipeline_takes_at_most_l() -> None:
    """A primary leaf cell over fewer dimensions also merges several finest cells."""
    p = make_pipeline(
        dimensions=["type", "url"], k=10, outputs=[{"name": "default", "dimensions": ["type"]}],
        contribution={"max_events_per_unit_per_cell": 10, "max_cells_per_unit_per_window": 30},
    )  # fmt: skip
    others = [event(f"p{j}", T0 + MINUTE, path=f"/p{j}", duration_ms=50) for j in range(9)]
    target = [event("target", T0 + MINUTE + e, path=f"/t{m}", duration_ms=600)
              for m in range(20) for e in range(10)]  # fmt: skip
    (rec,) = aggregates(run(p, others + target))
    assert rec["dims"] == {"type": "page_view"} and rec["rollup_level"] == 0
    assert (rec["metrics"]["events"], rec["metrics"]["users"]) == (19, 10)


def test_the_mean_times_events_minus_the_others_is_within_the_sum_bound() -> None:
    """The red team's mean attack: the target has 10 events at the clamp (10,000 in
    total) and a per-unit sum bound of 1,000; 11 others have 6 each. Before, mean x events
    - 66 gave 10,000 back."""
    p = make_pipeline(k=3, metrics={"sums": ["duration_ms"], "means": ["duration_ms"]})
    target = [event("target", T0 + i * MINUTE, duration_ms=1000) for i in range(10)]
    others = [event(f"v{i}", T0 + MINUTE, duration_ms=6) for i in range(11)]
    (rec,) = aggregates(run(p, target + others))
    got = rec["metrics"]
    assert got["events"] == 21 and got["duration_ms_sum"] == 1000 + 66
    assert got["duration_ms_mean"] == round(1066 / 21, 3)
    assert got["duration_ms_mean"] * got["events"] - 66 <= 1000 + 0.01


# -- property ------------------------------------------------------------------------------

L_BOUND, SUM_BOUND, K = 2, 1500, 2
PATHS = ["/a", "/b", "/c"]
TYPES = ["page_view", "click"]

person_events = st.tuples(
    st.sampled_from(TYPES), st.sampled_from(PATHS), st.integers(1, 2 * L_BOUND + 1)
)
people = st.lists(
    st.tuples(st.lists(person_events, min_size=1, max_size=4),
              st.integers(0, 1200)),  # one duration per person: band and kept values known
    min_size=1, max_size=8,
)  # fmt: skip


def _released_cell(keys: set[tuple[str, str]], typ: str, url: str) -> tuple[str, str] | None:
    """Where an event of (typ, url) is released: its leaf if released, else the roll-up."""
    for key in ((typ, url), (typ, STAR), (STAR, STAR)):
        if key in keys:
            return key
    return None


@settings(max_examples=60, deadline=None)
@given(people)
def test_each_persons_share_of_every_released_number_is_within_the_bound(
    spec: list[tuple[list[tuple[str, str, int]], int]],
) -> None:
    p = make_pipeline(
        dimensions=["type", "url"], k=K,
        outputs=[{"name": "default"}, {"name": "by_type", "dimensions": ["type"]}],
        fields=web_test_fields(duration_ms={"measure": True, "clamp": [0, 1000],
                                            "edges": [100, 500],
                                            "max_sum_per_unit": SUM_BOUND}),
        contribution={"max_events_per_unit_per_cell": L_BOUND,
                      "max_cells_per_unit_per_window": 100},
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"],
                 "histograms": ["duration_ms"]},
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    # Ground truth: events per (person, type, url), and each person's one value.
    n_of: dict[tuple[int, str, str], int] = defaultdict(int)
    for who, (evs, dur) in enumerate(spec):
        for typ, path, n in evs:
            for _ in range(n):
                ts = T0 + MINUTE + len(events)
                events.append(event(f"u{who}", ts, typ, path, duration_ms=dur))
                n_of[(who, typ, SITE + path)] += 1
    result = run(p, events)
    recs = aggregates(result)
    keys = {(r["dims"]["type"], r["dims"]["url"]) for r in recs}
    # Each person's events per released cell, before and after the per-cell cap.
    share: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for (who, typ, url), n in n_of.items():
        cell = _released_cell(keys, typ, url)
        if cell is not None:
            share[cell][who] += n
    for r in recs:
        cell = (r["dims"]["type"], r["dims"]["url"])
        got, mine = r["metrics"], share[cell]
        kept = {who: min(L_BOUND, n) for who, n in mine.items()}
        value = {who: min(1000, spec[who][1]) for who in mine}
        assert got["users"] == len(mine)
        assert got["events"] == sum(kept.values())
        assert got["duration_ms_sum"] == sum(min(SUM_BOUND, kept[w] * value[w]) for w in kept)
        assert got["duration_ms_mean"] == round(got["duration_ms_sum"] / got["events"], 3)
        for band, count in got["duration_ms_histogram"].items():
            lo, hi = (float(x) for x in band[1:-1].split(","))
            assert count == sum(kept[w] for w in kept if lo <= value[w] < hi)
        # The documented bounds themselves: at most L events, in each band too, and at
        # most the per-unit bound in the sum, from any one person.
        assert max(kept.values()) <= L_BOUND
        assert max(min(SUM_BOUND, kept[w] * value[w]) for w in kept) <= SUM_BOUND
    assert audit_records(result.releases, k=K).ok
