"""The audit's ledger rule: a dp stream checked against the ledger that paid for it, and
the tampering it must catch (content changed after charging, a window not charged, a window
charged twice with other content, a ledger over its budget)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from anonstream.audit import audit_records
from anonstream.audit.ledger import LedgerCheck, content_digest
from anonstream.core import budget
from anonstream.core.budget import JsonlLedgerStore, Ledger
from anonstream.core.engine import PipelineEngine
from tests.unit.test_dp import HOUR, SECRET, T0, crowd, make_pipeline, run


def _stream(tmp_path: Path, hours: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    path = tmp_path / "ledger.jsonl"
    engine = PipelineEngine(p, SECRET, ledger=Ledger(p, JsonlLedgerStore(path)))
    recs: list[dict[str, Any]] = []
    for h in range(hours):
        recs += run(engine, crowd(200, "/a", ts=T0 + h * HOUR + 60_000)).releases
    recs = json.loads(json.dumps(recs))  # as a consumer reads them
    return recs, [asdict(c) for c in JsonlLedgerStore(path).load()]


def _ledger_findings(recs: list[dict[str, Any]], charges: list[dict[str, Any]]) -> list[Any]:
    return [f for f in audit_records(recs, ledger=charges).findings if f.rule == "ledger"]


def test_the_audit_recomputes_the_ledger_digest(tmp_path: Path) -> None:
    """Two definitions on purpose (the audit imports no release code): they must agree,
    also after a JSON round trip and in any order."""
    recs, charges = _stream(tmp_path, hours=1)
    aggs = [r for r in recs if r["kind"] == "aggregate"]
    assert aggs and charges[0]["digest"] == budget.content_digest(aggs)
    assert content_digest(reversed(json.loads(json.dumps(aggs)))) == charges[0]["digest"]


def test_a_clean_dp_stream_matches_its_ledger(tmp_path: Path) -> None:
    recs, charges = _stream(tmp_path)
    assert len(charges) == 2 and all(c["digest"] for c in charges)
    report = audit_records(recs, ledger=charges)
    assert report.ok, report.render()
    assert _ledger_findings(recs, charges) == []


def test_content_changed_after_charging_is_found(tmp_path: Path) -> None:
    recs, charges = _stream(tmp_path)
    agg = next(r for r in recs if r["kind"] == "aggregate")
    agg["metrics"]["events"] += 1
    (f,) = _ledger_findings(recs, charges)
    assert f.severity == "error" and "differ from what the ledger charged" in f.message


def test_a_window_missing_from_the_ledger_is_found(tmp_path: Path) -> None:
    recs, charges = _stream(tmp_path)
    (f,) = _ledger_findings(recs, charges[1:])
    assert "released but not charged" in f.message and f.severity == "error"


def _without_window(recs: list[dict[str, Any]], charge: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream without the records of the window `charge` paid for."""

    def start_ms(r: dict[str, Any]) -> int:
        return int(datetime.fromisoformat(r["window_start"]).timestamp() * 1000)

    kept = [r for r in recs if start_ms(r) != charge["start_ms"]]
    assert len(kept) < len(recs)
    return kept


def test_a_charged_window_missing_from_the_stream_is_found(tmp_path: Path) -> None:
    """The worker writes a charge and its window's records in one transaction: a charged
    window absent from a topic read from its beginning was paid for and not published (or
    deleted). A file may be part of the stream, and retention removes a topic's oldest
    windows: warnings there."""
    recs, charges = _stream(tmp_path, hours=4)  # 2 windows charged, the 3rd over budget
    assert len(charges) == 2
    middle = _without_window(recs, charges[1])  # the stream holds windows 1 and 3

    # A file (or records handed over): a warning that says why it is not an error.
    (f,) = _ledger_findings(middle, charges)
    assert f.severity == "warning" and "the stream is a file" in f.message
    assert "1 window(s) charged in the ledger are not in the stream" in f.message
    assert audit_records(middle, ledger=charges).ok

    def on_topic(stream: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
        check = LedgerCheck(charges, complete=True)
        for r in stream:
            check.add(r)
        return check.findings()

    # The whole topic: a hole after its oldest window is an error ...
    ((_, msg, sev),) = on_topic(middle)
    assert sev == "error" and "paid for but not published" in msg
    # ... windows before it may have gone to retention: a warning.
    ((_, msg, sev),) = on_topic(_without_window(recs, charges[0]))
    assert sev == "warning" and "retention may have deleted them" in msg
    assert on_topic(recs) == []
    # Charges to outputs the stream does not hold (a pipeline sharing the budget) are for
    # other topics: not judged.
    other = [dict(c, pipeline="usage", budget="elsewhere") for c in charges]
    assert _ledger_findings(recs, [*charges, *other]) == []
    check = LedgerCheck([*charges, *other], complete=True)
    for r in recs:
        check.add(r)
    assert check.findings() == []


def test_a_window_charged_twice_with_other_content(tmp_path: Path) -> None:
    recs, charges = _stream(tmp_path)
    second = dict(charges[0], digest="0" * 32, epsilon=0.5)  # within the budget
    (f,) = _ledger_findings(recs, [*charges, second])
    assert f.severity == "error" and "charged 2 times with different content" in f.message
    (f,) = _ledger_findings(recs, [*charges, dict(second, rerelease=True)])
    assert f.severity == "warning" and "operator-allowed" in f.message


def test_a_ledger_over_its_budget_is_found(tmp_path: Path) -> None:
    """Charges of another pipeline sharing the budget count: the whole ledger is summed."""
    recs, charges = _stream(tmp_path)
    other = dict(charges[0], pipeline="usage", budget="dptest", epsilon=2.0)
    found = _ledger_findings(recs, [*charges, other])
    assert any("over the budget" in f.message and f.severity == "error" for f in found)
    # A budget the audited stream does not declare is not judged.
    assert _ledger_findings(recs, [*charges, dict(other, budget="elsewhere")]) == []


def test_audit_cli_with_a_ledger_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anonstream.cli import app

    recs, _ = _stream(tmp_path)
    stream = tmp_path / "stream.jsonl"
    stream.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ledger = tmp_path / "ledger.jsonl"
    result = CliRunner().invoke(app, ["audit", "-i", str(stream), "--ledger", str(ledger)])
    assert result.exit_code == 0, result.output
    ledger.write_text(ledger.read_text().splitlines()[1] + "\n")  # the first charge lost
    result = CliRunner().invoke(app, ["audit", "-i", str(stream), "--ledger", str(ledger)])
    assert result.exit_code == 1 and "released but not charged" in result.output
    ledger.write_text("{}\n")
    result = CliRunner().invoke(app, ["audit", "-i", str(stream), "--ledger", str(ledger)])
    assert result.exit_code == 2
