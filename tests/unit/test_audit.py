"""Unit tests for the independent release audit (anonstream.audit) and the v1 schema."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from anonstream.audit import SCHEMA_PATH, AuditReport, audit_file, audit_records, run_audit_cli

W1 = ("2026-11-30T00:00:00Z", "2026-11-30T01:00:00Z")
W2 = ("2026-11-30T01:00:00Z", "2026-11-30T02:00:00Z")

EXAMPLE_AGGREGATE: dict[str, Any] = {
    "kind": "aggregate", "schema_version": 1, "pipeline": "web_activity",
    "pipeline_version": 1, "output": "default", "window_start": W1[0], "window_end": W1[1],
    "dims": {
        "type": "page_view", "url": "www.example.com/pricing",
        "user_agent": "Chrome 120 / Windows",
    },
    "metrics": {
        "events": 123, "users": 45, "duration_ms_sum": 1234.0, "duration_ms_mean": 10.0,
        "duration_ms_histogram": {"[-inf,1000)": 60, "[1000,inf)": 63},
    },
    "k": 10, "rollup_level": 0, "noise": None, "release_id": "0123456789abcdef0123456789abcdef",
}  # fmt: skip
EXAMPLE_SUMMARY: dict[str, Any] = {
    "kind": "window_summary", "schema_version": 1, "pipeline": "web_activity",
    "pipeline_version": 1, "output": "default", "window_start": W1[0], "window_end": W1[1],
    "cells_released": 1, "cells_rolled_up": 30, "cells_suppressed": 4, "late_events": 0,
    "rejected_events": 3, "k": 10, "release_id": "fedcba9876543210fedcba9876543210",
}  # fmt: skip


def _rid(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


def agg(
    dims: dict[str, str], events: int, users: int, *, output: str = "default",
    window: tuple[str, str] = W1, k: int = 10, noise: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    values = list(dims.values())
    level = 0
    while level < len(values) and values[-1 - level] == "*":
        level += 1
    return {
        "kind": "aggregate", "schema_version": 1, "pipeline": "web_activity",
        "pipeline_version": 1, "output": output, "window_start": window[0],
        "window_end": window[1], "dims": dims, "metrics": {"events": events, "users": users},
        "k": k, "rollup_level": level, "noise": noise,
        "release_id": _rid("aggregate", output, window, sorted(dims.items())),
    }  # fmt: skip


def summary(
    cells: int, *, output: str = "default", window: tuple[str, str] = W1, k: int = 10
) -> dict[str, Any]:
    return {
        "kind": "window_summary", "schema_version": 1, "pipeline": "web_activity",
        "pipeline_version": 1, "output": output, "window_start": window[0],
        "window_end": window[1], "cells_released": cells, "cells_rolled_up": 0,
        "cells_suppressed": 0, "late_events": 0, "rejected_events": 0, "k": k,
        "release_id": _rid("window_summary", output, window),
    }  # fmt: skip


def clean_stream() -> list[dict[str, Any]]:
    """Two windows, two outputs, residual cells that are smaller than their siblings."""
    out: list[dict[str, Any]] = []
    for w in (W1, W2):
        out += [
            agg({"type": "page_view", "url": "www.example.com/pricing"}, 50, 20, window=w),
            agg({"type": "page_view", "url": "*"}, 30, 12, window=w),
            agg({"type": "*", "url": "*"}, 40, 15, window=w),
            summary(3, window=w),
            agg({"type": "page_view"}, 80, 32, output="by_type", window=w),
            agg({"type": "*"}, 40, 15, output="by_type", window=w),
            summary(2, output="by_type", window=w),
        ]
    return out


def rules(report: AuditReport, severity: str = "error") -> set[str]:
    return {f.rule for f in report.findings if f.severity == severity}


# ------------------------------------------------------------------------------ schema


def test_schema_is_valid_draft_2020_12_and_accepts_the_examples() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for rec in (EXAMPLE_AGGREGATE, EXAMPLE_SUMMARY, *clean_stream()):
        assert list(validator.iter_errors(rec)) == []
    noised = copy.deepcopy(EXAMPLE_AGGREGATE)
    noised["noise"] = {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-6}
    assert list(validator.iter_errors(noised)) == []


def test_example_records_pass_the_audit() -> None:
    report = audit_records([EXAMPLE_AGGREGATE, EXAMPLE_SUMMARY])
    assert report.ok, report.render()
    assert report.findings == []
    assert (report.records, report.aggregates, report.summaries, report.windows) == (2, 1, 1, 1)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda r: r.update(extra=1), "unexpected field(s) extra"),
        (lambda r: r.pop("k"), "missing k"),
        (lambda r: r.update(schema_version=3), "schema_version: expected 1"),
        (lambda r: r["metrics"].update(bogus=3), "metrics: unexpected field(s) bogus"),
        (lambda r: r["metrics"].update(users=-1), "metrics.users"),
        (lambda r: r.update(noise={"mechanism": "laplace", "epsilon": 0, "delta": 0}), "noise"),
        (lambda r: r.update(kind="total"), "kind"),
    ],
)
def test_schema_rejects_off_contract_records(change: Any, expect: str) -> None:
    rec = copy.deepcopy(EXAMPLE_AGGREGATE)
    change(rec)
    report = audit_records([rec])
    assert "schema" in rules(report)
    assert any(expect in f.message for f in report.findings if f.rule == "schema"), report.render()


def test_schema_messages_do_not_echo_identifiers() -> None:
    rec = copy.deepcopy(EXAMPLE_AGGREGATE)
    rec["window_start"] = "alice.smith@example.com"
    rec["alice.smith@example.com"] = 1
    report = audit_records([rec])
    assert {"schema", "identifier"} <= rules(report)
    assert "alice.smith" not in report.render()
    assert "alice.smith" not in report.to_json()


# ------------------------------------------------------------------------------ rules


def test_clean_stream_passes() -> None:
    report = audit_records(clean_stream(), k=10)
    assert report.ok, report.render()
    assert report.findings == []
    assert report.windows == 4 and report.aggregates == 10 and report.summaries == 4


def test_users_below_k_fails() -> None:
    report = audit_records([agg({"type": "page_view"}, 30, 9), summary(1)])
    assert rules(report) == {"k"}
    assert not report.ok


def test_required_k_is_enforced() -> None:
    report = audit_records([agg({"type": "page_view"}, 30, 12), summary(1)], k=15)
    messages = [f.message for f in report.findings if f.rule == "k"]
    assert any("record k 10 < required k 15" in m for m in messages)
    assert any("users 12 < k 15" in m for m in messages)
    assert any("window k 10 < required k 15" in m for m in messages)


def test_noisy_users_below_k_is_a_warning_that_names_the_noise() -> None:
    noise = {"mechanism": "laplace", "epsilon": 1.0, "delta": 0.0}
    report = audit_records([agg({"type": "page_view"}, 30, 8, noise=noise), summary(1)])
    assert report.ok
    (finding,) = report.findings
    assert finding.rule == "k" and finding.severity == "warning"
    assert "noisy users 8" in finding.message and "laplace" in finding.message


def test_email_in_dims_fails_and_is_masked() -> None:
    rec = agg({"type": "page_view", "url": "x.com/u/bob.jones@example.org"}, 30, 12)
    report = audit_records([rec, summary(1)])
    assert rules(report) == {"identifier"}
    text = report.render() + report.to_json()
    assert "bob.jones" not in text and "example.org" not in text
    assert "an email address" in report.findings[0].message


def test_pseudonym_in_dims_fails() -> None:
    rec = agg({"type": "page_view", "visitor": "9f86d081884c7d65"}, 30, 12)
    report = audit_records([rec, summary(1)])
    assert rules(report) == {"identifier"}
    assert "hex token" in report.findings[0].message
    assert "9f86d081884c7d65" not in report.render()


@pytest.mark.parametrize(
    "value",
    ["aZ3_kq9-Lm2Xp0Qw", "203.0.113.7", "+44 20 7946 0958", "order 12345678", "4111111111111111"],
)
def test_other_identifiers_in_dims_fail(value: str) -> None:
    report = audit_records([agg({"type": "page_view", "ref": value}, 30, 12), summary(1)])
    assert rules(report) == {"identifier"}, report.render()


@pytest.mark.parametrize(
    "value",
    [
        "203.0.113.0/24",
        "2001:db8::/48",
        "[100000,1000000)",
        "(-inf,0)",
        "x.com/blog/iphone15-pro-review-2024",
        "api.example.com/users/:num/orders",
        "Chrome 120 / Windows",
    ],
)
def test_generalized_values_are_not_identifiers(value: str) -> None:
    report = audit_records([agg({"type": "page_view", "v": value}, 30, 12), summary(1)])
    assert report.findings == [], report.render()


def test_identifier_in_a_key_or_other_field_fails() -> None:
    rec = agg({"type": "page_view"}, 30, 12)
    rec["metrics"]["carol@example.net_sum"] = 1.0
    report = audit_records([rec, summary(1)])
    assert "identifier" in rules(report)
    assert "carol" not in report.render()


def test_same_release_id_with_different_content_fails() -> None:
    first = agg({"type": "page_view"}, 30, 12)
    second = copy.deepcopy(first)
    second["metrics"]["events"] = 31
    report = audit_records([first, second, summary(1)])
    assert rules(report) == {"duplicate"}


def test_same_content_twice_is_a_duplicate_delivery_not_a_failure() -> None:
    stream = clean_stream()
    report = audit_records(stream + stream[:4])
    assert report.ok, report.render()
    assert report.duplicate_deliveries == 4
    assert rules(report, "info") == {"duplicate"}


def test_two_aggregates_with_the_same_dims_fail() -> None:
    a = agg({"type": "page_view", "url": "x"}, 30, 12)
    b = agg({"type": "page_view", "url": "x"}, 25, 11)
    b["release_id"] = "1" * 32
    report = audit_records([a, b, summary(2)])
    assert rules(report) == {"differencing"}
    assert "same dims" in report.findings[0].message


def test_cross_output_leak_fails() -> None:
    stream = [
        agg({"type": "page_view", "url": "x"}, 60, 25),
        agg({"type": "page_view", "url": "*"}, 35, 14),
        summary(2),
        agg({"type": "page_view"}, 100, 40, output="by_type"),
        summary(1, output="by_type"),
    ]
    report = audit_records(stream)
    assert rules(report) == {"differencing"}
    (finding,) = report.failures
    assert "leaves 5 events" in finding.message and "by_type" in finding.message
    assert finding.release_id == stream[3]["release_id"]


def test_cross_output_without_a_small_rest_passes() -> None:
    stream = [
        agg({"type": "page_view", "url": "x"}, 60, 25),
        agg({"type": "page_view", "url": "*"}, 25, 14),  # rest of 15 events: not under k
        summary(2),
        agg({"type": "page_view"}, 100, 40, output="by_type"),
        summary(1, output="by_type"),
    ]
    assert audit_records(stream).findings == []


def test_total_style_parent_is_flagged_and_fails_with_assume_totals() -> None:
    stream = [
        agg({"type": "a"}, 50, 20),
        agg({"type": "b"}, 45, 15),
        agg({"type": "*"}, 100, 40),
        summary(3),
    ]
    default = audit_records(stream)
    assert rules(default, "warning") == {"differencing"}
    assert "exceeds its 2 released sub-cells together (95 events) by 5" in (
        default.findings[0].message
    )
    totals = audit_records(stream, assume_totals=True)
    assert not totals.ok
    assert rules(totals) == {"differencing"}


def test_totals_mode_uses_direct_children_only() -> None:
    stream = [
        agg({"type": "a", "url": "x"}, 30, 12),
        agg({"type": "a", "url": "*"}, 50, 20),  # a total of type a, containing (a, x)
        agg({"type": "b", "url": "*"}, 45, 15),
        agg({"type": "*", "url": "*"}, 100, 40),
        summary(4),
    ]
    report = audit_records(stream, assume_totals=True)
    failing = [f for f in report.failures if f.rule == "differencing"]
    assert [f.release_id for f in failing] == [stream[3]["release_id"]]
    assert "2 released sub-cells" in failing[0].message


def test_summary_count_mismatch_fails_except_for_a_possibly_truncated_first_window() -> None:
    stream = clean_stream()
    del stream[7]  # one aggregate of the second window of the default output
    report = audit_records(stream)
    assert rules(report) == {"differencing"}
    assert "summary says 3 aggregates but the stream holds 2" in report.failures[0].message
    head = clean_stream()[1:]  # the stream starts inside the first window
    report = audit_records(head)
    assert report.ok
    assert any("may begin inside this window" in f.message for f in report.findings)


def test_more_aggregates_than_the_summary_says_fails() -> None:
    stream = [agg({"type": "a"}, 30, 12), agg({"type": "b"}, 30, 12), summary(1)]
    assert rules(audit_records(stream)) == {"differencing"}


def test_exact_counts_must_be_consistent() -> None:
    rec = agg({"type": "page_view"}, 10, 12)
    rec["metrics"]["d_histogram"] = {"[-inf,5)": 6, "[5,inf)": 6}
    report = audit_records([rec, summary(1)])
    messages = [f.message for f in report.findings if f.rule == "sanity"]
    assert any("events 10 < users 12" in m for m in messages)
    assert any("d_histogram counts sum to 12 > events 10" in m for m in messages)


def test_rollup_level_must_match_the_trailing_stars() -> None:
    rec = agg({"type": "*", "url": "x"}, 30, 12)
    report = audit_records([rec, summary(1)])
    assert rules(report) == {"sanity"}


def test_gaussian_noise_without_delta_fails() -> None:
    noise = {"mechanism": "gaussian", "epsilon": 1.0, "delta": 0.0}
    report = audit_records([agg({"type": "page_view"}, 30, 12, noise=noise), summary(1)])
    assert rules(report) == {"noise"}


# ------------------------------------------------------------------------------ files, CLI


def write_jsonl(path: Path, records: list[Any], bad_line_at: int | None = None) -> Path:
    lines = [json.dumps(r) for r in records]
    if bad_line_at is not None:
        lines.insert(bad_line_at - 1, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_audit_file_reports_line_numbers(tmp_path: Path) -> None:
    stream = clean_stream()
    stream[4] = agg({"type": "page_view"}, 80, 9, output="by_type")
    path = write_jsonl(tmp_path / "releases.jsonl", stream, bad_line_at=2)
    report = audit_file(path)
    assert not report.ok
    by_rule = {f.rule: f.line for f in report.failures}
    assert by_rule["schema"] == 2
    assert by_rule["k"] == 6  # record 5, pushed down one line by the bad line
    text = report.render()
    assert "line 2" in text and "line 6" in text and "[k]" in text and "[schema]" in text


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write_jsonl(tmp_path / "clean.jsonl", clean_stream())
    leaky = write_jsonl(tmp_path / "leaky.jsonl", [agg({"type": "a"}, 30, 3), summary(1)])
    assert run_audit_cli(clean, None, None, 10, False, False) == 0
    assert "OK" in capsys.readouterr().out
    assert run_audit_cli(leaky, None, None, None, False, True) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["findings"][0]["rule"] == "k"
    assert run_audit_cli(None, None, None, None, False, False) == 2
    assert run_audit_cli(clean, "topic", "localhost:9092", None, False, False) == 2
    assert run_audit_cli(tmp_path / "missing.jsonl", None, None, None, False, False) == 2


def test_real_engine_output_passes() -> None:
    """The releases of the actual engine on synthetic traffic meet the contract."""
    from anonstream.core.engine import PipelineEngine
    from anonstream.core.keys import MasterSecret
    from anonstream.core.pipeline import load_pipeline
    from anonstream.runtime.replay import replay
    from anonstream_load.generator import EventGenerator, Workload

    root = Path(__file__).resolve().parents[2]
    gen = EventGenerator(Workload(users=400, seed=5))
    events = [orjson.dumps(e) for e in gen.web_events(20_000)]
    pipeline = load_pipeline(root / "pipelines" / "web_activity.yaml")
    records: list[dict[str, Any]] = []
    replay(PipelineEngine(pipeline, MasterSecret(b"k" * 32, "test")), events, records.append)
    report = audit_records(records)
    assert report.aggregates > 0
    assert report.ok, report.render()


def test_resent_summary_with_other_operational_counters_is_only_a_warning() -> None:
    first = summary(1)
    again = {**first, "late_events": 7}
    report = audit_records([agg({"type": "a"}, 30, 12), first, again])
    assert report.ok
    assert rules(report, "warning") == {"duplicate"}
    changed = {**first, "cells_suppressed": 2}
    assert rules(audit_records([agg({"type": "a"}, 30, 12), first, changed])) == {"duplicate"}


def test_k_is_checked_on_off_contract_records_too() -> None:
    rec = agg({"type": "a"}, 30, 4)
    rec["extra"] = True
    assert rules(audit_records([rec, summary(1)])) >= {"schema", "k"}
