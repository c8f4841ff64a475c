"""Red-team regressions: dp pipelines that are valid YAML with every number in range,
yet whose noise OpenDP cannot plan. `epsilon: 1.0e-20` per window, or a clamp of 2**50
on a summed measure, passed `validate` ("ok"); then `explain`, `replay` and the worker's
start ended in a traceback from OpenDP's binary search ("the decision boundary of the
predicate is outside the bounds"). A clamp of [0, 2**63 - 1] also cast every large value
to -2**63 (counted in the lowest band). Now the clamp rule refuses what no i64 holds, and
an output without a plan is one error line naming the output, from every command."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anonstream import cli
from anonstream.core.dp import DpPlanError, plans
from anonstream.core.pipeline import PipelineError, parse_pipeline

_ROOT = Path(__file__).resolve().parents[2]
_DP = yaml.safe_load((_ROOT / "pipelines/examples/web_activity_dp.yaml").read_text())


def _doc(epsilon: float = 3.0, clamp_hi: int = 60_000, sums: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(_DP)
    doc["outputs"][0]["dp"]["epsilon"] = epsilon
    doc["fields"]["duration_ms"]["clamp"] = [0, clamp_hi]
    if sums:
        doc["metrics"]["sums"] = ["duration_ms"]
    return doc


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=1e-300, max_value=1e-9), st.booleans())
def test_tiny_epsilon_has_no_plan_and_says_so(epsilon: float, gaussian: bool) -> None:
    doc = _doc(epsilon)
    if gaussian:
        doc["outputs"][0]["dp"]["mechanism"] = "gaussian"
    p = parse_pipeline(doc)
    with pytest.raises(DpPlanError, match=r"outputs\[0\]\.dp"):
        plans(p)


@settings(max_examples=20, deadline=None)
@given(st.integers(50, 62))
def test_a_sum_clamp_no_noise_covers_is_refused(bits: int) -> None:
    doc = _doc(clamp_hi=2**bits, sums=True)
    try:
        p = parse_pipeline(doc)
    except PipelineError as exc:
        assert "clamp" in exc.path
        return
    with pytest.raises(DpPlanError):
        plans(p)


def test_a_clamp_past_int64_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError, match="2\\*\\*53"):
        parse_pipeline(_doc(clamp_hi=2**63 - 1))


@pytest.mark.parametrize("command", ["validate", "explain"])
def test_cli_reports_one_line_not_a_traceback(tmp_path: Path, command: str) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_doc(1e-20)))
    args = [command, "-p", str(path)] + (["--no-check-secret"] if command == "validate" else [])
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "outputs[0].dp" in result.stderr


def test_the_shipped_dp_example_still_plans() -> None:
    assert set(plans(parse_pipeline(copy.deepcopy(_DP)))) == {"default"}
