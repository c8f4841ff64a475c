"""The dp-mode part of `anonstream explain`, and the warnings `validate` shares with it.

Every number shown comes from the plan (core/dp.py), which reads OpenDP's privacy maps; the
ledger charges the same plan, so what explain says a window costs is what it is charged.
"""

from __future__ import annotations

import math

from anonstream.core.actions import Mechanism
from anonstream.core.dp import DpPlan, plan_output, plans
from anonstream.core.keys import ROTATION_MS
from anonstream.core.pipeline import Output, Pipeline

_KIND: dict[tuple[str, bool], str] = {  # Mechanism members: equal to dp.py's names
    (Mechanism.LAPLACE, True): "Laplace threshold (selects cells)",
    (Mechanism.LAPLACE, False): "discrete Laplace",
    (Mechanism.GAUSSIAN, True): "Gaussian threshold (selects cells)",
    (Mechanism.GAUSSIAN, False): "discrete Gaussian",
}


def _smallest(p: Pipeline, name: str, k: int) -> float:
    """The quantity in the smallest cell that can be released (k people, one event each):
    what an error has to be compared with."""
    if name.endswith("_sum"):
        lo, hi = p.fields[name[: -len("_sum")]].clamp or (0.0, 0.0)
        return k * max(abs(lo), abs(hi))
    return float(k)


def output_lines(p: Pipeline, o: Output) -> list[str]:
    plan = plan_output(p, o)
    c = p.contribution
    L, M = c.max_events_per_unit_per_cell, c.max_cells_per_unit_per_window
    gauss = plan.rho is not None
    zcdp = f" (zCDP rho {plan.rho:.4g}, converted by OpenDP)" if plan.rho is not None else ""
    lines = [
        f"    dp mode: user-level differential privacy, epsilon {plan.epsilon:.4g}, delta "
        f"{plan.delta:.3g} per window{zcdp} (read from OpenDP's privacy maps); one person = "
        f"at most {M} cells x {L} events per window",
        f"    which cells: chosen by a {'Gaussian' if gauss else 'Laplace'} threshold after a "
        f"pre-threshold of k = {o.k} exact people; a cell of about {plan.min_cell_users} "
        "people is released half of the time, larger ones almost always; no roll-up, nothing "
        "else about unselected cells",
        f"    quantity                 {'rho' if gauss else 'epsilon':>7}  mechanism"
        "                          scale  95% error",
    ]
    for q in plan.quantities:
        share = q.rho if q.rho is not None else q.epsilon
        kind = _KIND[(plan.mechanism, q.threshold is not None)]
        lines.append(
            f"      {q.name:<22} {share:>7.4g}  {kind:<33} {q.scale:>6.4g}  +/-{q.error95:.4g}"
        )
    n = plan.min_cell_users
    lines.append(
        f"    at a cell of {n} people (one event each): users +/-"
        f"{100 * plan.get('users').error95 / n:.0f}%, events +/-"
        f"{100 * plan.get('events').error95 / n:.0f}% (95%); larger cells have the same "
        "absolute error"
    )
    return lines


def budget_lines(p: Pipeline) -> list[str]:
    ps = plans(p)
    if not ps or p.dp_budget is None:
        return []
    b = p.dp_budget
    rot = {v: k for k, v in ROTATION_MS.items()}[p.rotation_ms]
    per_period = p.rotation_ms // p.window.step_ms
    eps = sum(pl.epsilon for pl in ps.values())
    delta = sum(pl.delta for pl in ps.values())
    fits = min(int(b.epsilon // eps), int(b.delta // delta) if delta else per_period)
    shared = (
        [
            f"  shared budget '{b.name}': every pipeline that names it spends it too, so "
            "fewer windows may be released than below (one worker group enforces it)."
        ]
        if b.name is not None
        else []
    )
    return [
        "",
        f"Privacy budget (dp outputs together, per {rot} pseudonym period): epsilon "
        f"{b.epsilon:g}, delta {b.delta:g}, spent by basic composition over windows and "
        "outputs.",
        *shared,
        f"  one window of all dp outputs costs epsilon {eps:.4g}, delta {delta:.3g}; a period "
        f"has {per_period} window(s); {min(fits, per_period)} can be released, later "
        "ones are not (their window summary says budget_exhausted).",
    ]


def _plan_warnings(p: Pipeline, o: Output, plan: DpPlan) -> list[str]:
    out = []
    assert o.dp is not None
    for q in plan.quantities:
        smallest = _smallest(p, q.name, o.k)
        if q.error95 <= smallest:
            continue
        ratio = q.error95 / smallest
        c = p.contribution
        # The error is about proportional to the sensitivity over the epsilon share: a
        # guide, not a map. The sensitivity grows with L x M (Laplace), L x sqrt(M) (Gaussian).
        lm = c.max_events_per_unit_per_cell * c.max_cells_per_unit_per_window
        if o.dp.mechanism == Mechanism.GAUSSIAN:
            now = c.max_events_per_unit_per_cell * math.sqrt(c.max_cells_per_unit_per_window)
            bound = (
                f"events x sqrt(cells) per person <= {max(1.0, now / ratio):.3g} (now {now:.3g})"
            )
        else:
            bound = f"events x cells per person <= {max(1, int(lm / ratio))} (now {lm})"
        out.append(
            f"output {o.name}: {q.name} has a 95% error of {q.error95:.4g}, more than the "
            f"smallest releasable cell ({smallest:g} for k = {o.k} people); about epsilon "
            f"{o.dp.epsilon * ratio:.3g} per window, or bounds with {bound}, or a larger k "
            "would make it useful"
        )
    return out


def warnings(p: Pipeline) -> list[str]:
    """Quantities too noisy for the cells they describe, and budgets that cannot pay for
    every window of a period."""
    out: list[str] = []
    for o in p.outputs:
        if o.privacy == "dp":
            out += _plan_warnings(p, o, plan_output(p, o))
    ps = plans(p)
    if ps and p.dp_budget is not None:
        eps = sum(pl.epsilon for pl in ps.values())
        per_period = p.rotation_ms // p.window.step_ms
        fits = int(p.dp_budget.epsilon // eps)
        if fits < per_period:
            out.append(
                f"dp_budget pays for {fits} of the {per_period} windows of each period: the "
                "rest are not released"
            )
    return out
