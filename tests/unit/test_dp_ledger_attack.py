"""Red-team regressions: a privacy ledger edited by a hostile or careless operator.

Each test plays the attacker: it writes the ledger a worker or `anonstream replay --ledger`
reads back, then checks that the edit neither lowers nor hides the period's spending (the
load refuses a damaged charge; a charge counts in the period its window starts in).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.budget import Charge, JsonlLedgerStore, Ledger
from anonstream.core.pipeline import Pipeline, parse_pipeline
from anonstream.core.reader import PipelineError

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01, a period start

PIPELINE = """
pipeline: atk_dp
version: 1
contract: web_activity
privacy_unit: [visitor_id]
pseudonym_rotation: daily
fields:
  event_id: dedupe
  ts: window
  customer_id: drop
  reseller_id: drop
  type: keep
  visitor_id: pseudonymize
  user_email: drop
  ip: drop
  user_agent: drop
  url: drop
  referrer: drop
  campaign_id: drop
  duration_ms: {measure: true, clamp: [0, 100], edges: [10, 50]}
window: {size: 1h, step: 1h}
dimensions: [type]
metrics: {sums: [duration_ms]}
contribution: {max_events_per_unit_per_cell: 1, max_cells_per_unit_per_window: 1}
k: 2
outputs:
  - name: default
    topic: anon.aggregates.atk
    privacy: dp
    dp: {epsilon: 1.0, delta: 1.0e-6}
dp_budget: {epsilon: 2.0, delta: 2.0e-6}
"""


def pipeline(rotation: str = "daily") -> Pipeline:
    doc = yaml.safe_load(PIPELINE)
    doc["pseudonym_rotation"] = rotation
    return parse_pipeline(doc)


COST = (1.0, 1.0e-6)


def honest(path: Path, rotation: str = "daily") -> Ledger:
    """A ledger that released the period's two affordable windows (00:00, 01:00)."""
    book = Ledger(pipeline(rotation), JsonlLedgerStore(path))
    for h in range(2):
        assert book.request(
            "atk_dp", "default", T0 + h * HOUR, T0 + (h + 1) * HOUR, COST
        ).status == ("released")
    return book


def charge_line(**changes: object) -> str:
    c = asdict(Charge("atk_dp", "default", T0 + 9 * HOUR, T0 + 10 * HOUR, T0, 0.5, 0.0))
    c.update(changes)
    return json.dumps(c)


BAD_LOSSES = st.sampled_from(
    [math.nan, math.inf, -math.inf, -2.0, -1e-12, "1e9", None, True, [1.0]]
)


@settings(max_examples=40, deadline=None)
@given(field=st.sampled_from(["epsilon", "delta"]), value=BAD_LOSSES)
def test_a_charge_with_a_loss_that_is_not_a_finite_number_stops_the_ledger(
    tmp_path_factory: pytest.TempPathFactory, field: str, value: object
) -> None:
    # NaN made every later comparison with the budget false (unlimited release); a
    # negative charge cancelled real ones; a string crashed with a TypeError.
    path = tmp_path_factory.mktemp("l") / "ledger.jsonl"
    honest(path)
    with path.open("a") as f:
        f.write(charge_line(**{field: value}) + "\n")
    with pytest.raises(ValueError, match="line 3: not a ledger charge"):
        Ledger(pipeline(), JsonlLedgerStore(path))


@pytest.mark.parametrize(
    "changes",
    [
        {"delta": 1.5},  # delta above 1 is no probability
        {"start_ms": "0"},
        {"start_ms": T0 + 10 * HOUR},  # empty window
        {"period": 1.5},
        {"pipeline": 7},
        {"rerelease": "no"},
    ],
)
def test_a_charge_with_malformed_fields_stops_the_ledger(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    path = tmp_path / "ledger.jsonl"
    honest(path)
    with path.open("a") as f:
        f.write(charge_line(**changes) + "\n")
    with pytest.raises(ValueError, match="not a ledger charge"):
        Ledger(pipeline(), JsonlLedgerStore(path))


@settings(max_examples=30, deadline=None)
@given(period=st.integers(min_value=-(2**62), max_value=2**62))
def test_a_charge_edited_to_name_another_period_still_counts_in_its_windows_period(
    tmp_path_factory: pytest.TempPathFactory, period: int
) -> None:
    # The attacker moves the day's charges to another period to free the day's budget.
    path = tmp_path_factory.mktemp("l") / "ledger.jsonl"
    honest(path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**c, "period": period}) + "\n" for c in lines))
    book = Ledger(pipeline(), JsonlLedgerStore(path))
    assert book.spent(T0) == pytest.approx((2.0, 2.0e-6))
    d = book.request("atk_dp", "default", T0 + 5 * HOUR, T0 + 6 * HOUR, COST)
    assert d.status == "budget_exhausted"


def test_a_rotation_made_longer_mid_period_keeps_what_the_shorter_periods_spent(
    tmp_path: Path,
) -> None:
    # Hourly rotation released the windows of hours 0 and 1 (each in its own period);
    # the operator switches to daily rotation: the day's period must not start again at 0
    # (charges stored with hourly period starts used to be invisible to the daily period).
    path = tmp_path / "ledger.jsonl"
    book = Ledger(pipeline("hourly"), JsonlLedgerStore(path))
    for h in range(2):
        assert book.request(
            "atk_dp", "default", T0 + h * HOUR, T0 + (h + 1) * HOUR, COST
        ).status == ("released")
    daily = Ledger(pipeline("daily"), JsonlLedgerStore(path))
    assert daily.spent(T0) == pytest.approx((2.0, 2.0e-6))
    assert daily.request("atk_dp", "default", T0 + 7 * HOUR, T0 + 8 * HOUR, COST).status == (
        "budget_exhausted"
    )


def test_an_honest_ledger_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    honest(path)
    book = Ledger(pipeline(), JsonlLedgerStore(path))
    assert book.spent(T0) == pytest.approx((2.0, 2.0e-6))
    assert [Charge.from_json(x) for x in path.read_text().splitlines()] == JsonlLedgerStore(
        path
    ).load()


@pytest.mark.parametrize("epsilon", [math.inf, 1e400, math.nan])
def test_an_infinite_budget_is_refused(epsilon: float) -> None:
    # `dp_budget: {epsilon: .inf}` is a YAML float: it used to load (the worker then
    # capped nothing) and crash `validate` and `explain` with a traceback.
    doc = yaml.safe_load(PIPELINE)
    doc["dp_budget"]["epsilon"] = epsilon
    with pytest.raises(PipelineError, match="dp_budget"):
        parse_pipeline(doc)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), max_size=20))
def test_holders_of_one_ledger_file_never_overspend_together(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int]]
) -> None:
    # Two or three replays run at once with the same --ledger FILE (or a replay next to a
    # PipelineEngine): each loaded the file once at start and then spent the whole budget,
    # and released the same windows, on its own view of it.
    path = tmp_path_factory.mktemp("l") / "ledger.jsonl"
    books = [Ledger(pipeline(), JsonlLedgerStore(path)) for _ in range(3)]
    released: list[int] = []
    for who, hour in steps:
        start = T0 + hour * HOUR
        if books[who].request("atk_dp", "default", start, start + HOUR, COST).status == (
            "released"
        ):
            released.append(hour)
    assert len(released) == len(set(released)) <= 2  # the budget pays for two windows
    assert Ledger(pipeline(), JsonlLedgerStore(path)).spent(T0) == pytest.approx(
        (len(released) * COST[0], len(released) * COST[1])
    )
