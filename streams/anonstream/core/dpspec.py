"""Declarations of the `dp` privacy mode: what a pipeline file says, parsed and checked.

Kept apart from core/dp.py (the mechanisms, built on OpenDP) so that loading a pipeline
needs no OpenDP import, and so that pipeline.py only calls in here.

    outputs:
      - name: default
        privacy: dp
        dp: {epsilon: 1.0, delta: 1.0e-7}     # per window, for this output
    dp_budget: {epsilon: 24, delta: 1.0e-5}   # per pipeline and pseudonym period
    dp_budget: {name: people, epsilon: 24, delta: 1.0e-5}  # shared by every pipeline naming it
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anonstream.core.actions import Mechanism
from anonstream.core.reader import finite_number

PRIVACY_MODES = ("k", "dp")


@dataclass(frozen=True, slots=True)
class DpSpec:
    """(epsilon, delta)-DP for one window of one output, against one privacy unit."""

    epsilon: float
    delta: float
    mechanism: Mechanism = Mechanism.LAPLACE  # discrete, both (core/dp.py)


@dataclass(frozen=True, slots=True)
class DpBudget:
    """Cap on the total loss of all dp outputs in one pseudonym period: of one pipeline, or,
    when named, of every pipeline that names it (they share a privacy unit: the same people).
    Pipelines sharing a budget declare the same epsilon, delta and pseudonym period
    (core/budget.py `check_shared_budgets`)."""

    epsilon: float
    delta: float
    name: str | None = None  # None: the pipeline's own budget, named after the pipeline


Fail = Callable[[str, str], Exception]
_BUDGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _number(d: dict[str, Any], key: str, path: str, fail: Fail) -> float:
    """A finite number: an infinite budget (`.inf`) caps nothing, and made explain fail."""
    v = finite_number(d.get(key))
    if v is None:
        raise fail(f"{path}.{key}", "expected a finite number")
    return v


def _mapping(raw: object, path: str, keys: set[str], fail: Fail) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail(path, "expected a mapping")
    extra = sorted(set(raw) - keys)
    if extra:
        raise fail(f"{path}.{extra[0]}", "unknown key")
    return raw


def parse_dp(raw: object, path: str, fail: Fail) -> DpSpec:
    d = _mapping(raw, path, {"epsilon", "delta", "mechanism"}, fail)
    mech = d.get("mechanism", "laplace")
    if mech not in tuple(Mechanism):
        raise fail(f"{path}.mechanism", "expected laplace or gaussian (both discrete)")
    eps = _number(d, "epsilon", path, fail)
    if not 0 < eps <= 10:
        raise fail(f"{path}.epsilon", "expected a number in (0, 10] per window")
    delta = _number(d, "delta", path, fail)
    # delta pays for partition selection (which cells exist); 0 would release no cell.
    if not 0 < delta <= 1e-4:
        raise fail(f"{path}.delta", "expected 0 < delta <= 1e-4 (it pays for choosing cells)")
    return DpSpec(eps, delta, Mechanism(mech))


def parse_budget(raw: object, path: str, fail: Fail) -> DpBudget | None:
    if raw is None:
        return None
    d = _mapping(raw, path, {"epsilon", "delta", "name"}, fail)
    eps, delta = _number(d, "epsilon", path, fail), _number(d, "delta", path, fail)
    if not eps > 0 or not 0 < delta < 1:
        raise fail(path, "expected epsilon > 0 and 0 < delta < 1")
    name = d.get("name")
    if name is not None and not (isinstance(name, str) and _BUDGET_NAME.fullmatch(name)):
        raise fail(f"{path}.name", "expected a name of letters, digits, '_', '-' or '.'")
    return DpBudget(eps, delta, name)


def parse_mode(raw: object, path: str, fail: Fail) -> str:
    if raw not in PRIVACY_MODES:
        raise fail(path, f"expected one of {', '.join(PRIVACY_MODES)}")
    return str(raw)


# The largest sensitivity of a dp sum, L * M * max(|lo|, |hi|): exact as a float and an
# OpenDP i64. A clamp of [0, 2**63 - 1] passed validate, then explain and every release of
# the window failed ("not representable by i64"), and values cast to int64 wrapped to
# -2**63 (a huge duration counted in the lowest histogram band).
DP_SUM_SENSITIVITY_MAX = 2**53


def check_dp_pipeline(
    outputs: list[Any], budget: DpBudget | None, clamps: dict[str, tuple[float, float]],
    fail: Fail, contributions: int = 1,
) -> None:  # fmt: skip
    """Rules across the file: a dp output needs a period budget that fits one window; sums
    are released as integers, so clamps must be integers, small enough that one person's
    most (``contributions``, L * M, events times the clamp) is exact; a k-mode output
    cannot be built from a dp primary's cells (it has no exact cells to build from)."""
    dp_outs = [(i, o) for i, o in enumerate(outputs) if o.privacy == "dp"]
    if not dp_outs:
        if budget is not None:
            raise fail("dp_budget", "no output has privacy: dp")
        return
    if budget is None:
        raise fail("dp_budget", "a dp output needs dp_budget: {epsilon, delta} per period")
    assert all(o.dp is not None for _, o in dp_outs)
    per_window_eps = sum(o.dp.epsilon for _, o in dp_outs)
    per_window_delta = sum(o.dp.delta for _, o in dp_outs)
    if per_window_eps > budget.epsilon or per_window_delta > budget.delta:
        raise fail("dp_budget", "smaller than one window of the dp outputs")
    for name, (lo, hi) in clamps.items():
        if lo != int(lo) or hi != int(hi):
            raise fail(f"fields.{name}.clamp", "dp mode releases integer sums: integer clamps")
        if contributions * max(abs(lo), abs(hi)) > DP_SUM_SENSITIVITY_MAX:
            raise fail(
                f"fields.{name}.clamp",
                "in dp mode, max_events_per_unit_per_cell * max_cells_per_unit_per_window"
                " * the largest |clamp| must be at most 2**53",
            )
    if outputs[0].privacy == "dp":
        for i, o in enumerate(outputs[1:], start=1):
            if o.privacy != "dp":
                raise fail(f"outputs[{i}].privacy", "a secondary of a dp primary must be dp")
