"""Red-team regressions: numbers in a pipeline file that no float holds. An integer of
400 digits as an epsilon, a delta, a budget, a clamp bound, a band edge or a sum bound
made `validate` and `explain` end in an OverflowError traceback; `dp_budget: {epsilon:
.inf}` was valid (a budget that caps nothing) and made `explain` fail on NaN; a boolean
was read as 0 or 1 in a clamp or an edge list. Each is now one PipelineError that names
the key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.pipeline import PipelineError, load_pipeline, parse_pipeline

_ROOT = Path(__file__).resolve().parents[2]
_DP = yaml.safe_load((_ROOT / "pipelines/examples/web_activity_dp.yaml").read_text())
_K = yaml.safe_load((_ROOT / "pipelines/web_activity.yaml").read_text())

Doc = dict[str, Any]


def _set(path: str) -> Callable[[Doc, object], None]:
    """A setter for one numeric key of a pipeline document ("a.b.0.c")."""

    def put(doc: Doc, value: object) -> None:
        *head, last = path.split(".")
        node: Any = doc
        for key in head:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return put


_DP_SPOTS = {
    "outputs.0.dp.epsilon", "outputs.0.dp.delta", "dp_budget.epsilon", "dp_budget.delta",
    "fields.duration_ms.clamp.0", "fields.duration_ms.clamp.1", "fields.duration_ms.edges.2",
}  # fmt: skip
_K_SPOTS = {"fields.duration_ms.clamp.1", "fields.duration_ms.edges.1", "noise.epsilon"}

_HOSTILE = st.one_of(
    st.integers(310, 2000).map(lambda n: 10**n),  # past the largest float
    st.integers(310, 2000).map(lambda n: -(10**n)),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), True, False]),
)


def _k_doc() -> Doc:
    doc = copy.deepcopy(_K)
    doc["noise"] = {"mechanism": "laplace", "epsilon": 1.0}
    return doc


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_DP_SPOTS)), _HOSTILE)
def test_dp_pipeline_number_no_float_holds_is_a_pipeline_error(spot: str, value: object) -> None:
    doc = copy.deepcopy(_DP)
    _set(spot)(doc, value)
    with pytest.raises(PipelineError) as err:
        parse_pipeline(doc)
    assert spot.split(".")[0] in err.value.path


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(_K_SPOTS)), _HOSTILE)
def test_k_pipeline_number_no_float_holds_is_a_pipeline_error(spot: str, value: object) -> None:
    doc = _k_doc()
    _set(spot)(doc, value)
    with pytest.raises(PipelineError):
        parse_pipeline(doc)


def test_a_huge_integer_in_a_file_is_one_error_line(tmp_path: Path) -> None:
    text = (_ROOT / "pipelines/examples/web_activity_dp.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(
        text.replace(
            "epsilon: 3.0, delta: 1.0e-8}  #", "epsilon: 1" + "0" * 400 + ", delta: 1.0e-8}  #"
        )
    )
    with pytest.raises(PipelineError, match=r"dp_budget\.epsilon"):
        load_pipeline(path)


def test_ordinary_numbers_still_load() -> None:
    assert parse_pipeline(copy.deepcopy(_DP)).dp_budget is not None
    assert parse_pipeline(_k_doc()).noise is not None


@settings(max_examples=60)
@given(
    st.one_of(
        st.integers(8, 10**30).map(lambda d: f"{d}d"),
        st.integers(7 * 86_400_000 + 1, 10**30).map(lambda ms: f"{ms}ms"),
        st.integers(169, 10**20).map(lambda h: f"{h}h"),
    )
)
def test_allowed_lateness_past_a_week_is_a_pipeline_error(lateness: str) -> None:
    """`allowed_lateness: 99999999999999999999999d` passed validate: no window would ever be
    released and every window's state would be held for ever."""
    doc = copy.deepcopy(_K)
    doc["window"]["allowed_lateness"] = lateness
    with pytest.raises(PipelineError, match=r"window\.allowed_lateness.*0s to 7d"):
        parse_pipeline(doc)


def test_allowed_lateness_up_to_a_week_loads() -> None:
    for lateness in ("0s", "2m", "7d", f"{7 * 86_400_000}ms"):
        doc = copy.deepcopy(_K)
        doc["window"]["allowed_lateness"] = lateness
        assert parse_pipeline(doc).window.allowed_lateness_ms >= 0
