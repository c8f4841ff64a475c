"""Red-team regressions for `anonstream audit --ledger`: a hostile operator who published
more dp windows than the ledger paid for, then edits the stream or the ledger so that the
audit passes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.audit import audit_records
from anonstream.audit.ledger import read_ledger_file
from tests.unit.test_audit_ledger import _ledger_findings, _stream


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[Any]]:
    return _stream(tmp_path_factory.mktemp("s"), hours=2)


def test_uncharged_aggregates_whose_summary_was_dropped_are_found(
    stream: tuple[list[Any], list[Any]],
) -> None:
    # The operator removes the second window's charge and its window summary: the ledger
    # rule used to look only at windows with a summary, so the audit passed.
    recs, charges = stream
    assert len(charges) == 2
    cut = [r for r in recs if not (r["kind"] == "window_summary" and r["window_start"] ==
                                   recs[-1]["window_start"])]  # fmt: skip
    found = _ledger_findings(cut, charges[:1])
    assert [f.severity for f in found] == ["error"]
    assert "not charged in the ledger" in found[0].message
    assert not audit_records(cut, ledger=charges[:1]).ok


def test_altered_aggregates_whose_summary_was_dropped_are_found(
    stream: tuple[list[Any], list[Any]],
) -> None:
    recs, charges = stream
    recs = [dict(r, metrics=dict(r["metrics"])) if r["kind"] == "aggregate" else r for r in recs]
    cut = [r for r in recs if r["kind"] == "aggregate"]
    cut[0]["metrics"]["events"] += 1
    (f,) = [f for f in _ledger_findings(cut, charges) if "content digest" in f.message]
    assert f.severity == "error"


def test_an_honest_stream_without_summaries_passes_the_ledger_rule(
    stream: tuple[list[Any], list[Any]],
) -> None:
    recs, charges = stream
    assert _ledger_findings([r for r in recs if r["kind"] == "aggregate"], charges) == []


@settings(max_examples=30, deadline=None)
@given(
    field=st.sampled_from(["epsilon", "delta"]),
    value=st.sampled_from([math.nan, math.inf, -1.0, -1e-9, "0", None, False]),
)
def test_a_ledger_charge_with_a_hiding_loss_is_refused(
    tmp_path_factory: pytest.TempPathFactory, field: str, value: object
) -> None:
    # A NaN sum compares false with the budget; a negative charge cancels real ones: the
    # audit's budget check would pass an overspent period.
    path = tmp_path_factory.mktemp("l") / "ledger.jsonl"
    charge = {"pipeline": "p", "output": "o", "start_ms": 0, "end_ms": 1, "period": 0,
              "epsilon": 1.0, "delta": 0.0, field: value}  # fmt: skip
    path.write_text(json.dumps(charge) + "\n")
    with pytest.raises(ValueError, match="line 1: "):
        read_ledger_file(path)
