"""`anonstream explain`: what a pipeline does to each field and what it releases, written
for a privacy reviewer rather than a programmer."""

from __future__ import annotations

from collections.abc import Callable

from anonstream.core.actions import DIMENSION_ACTIONS, Action, FieldAction
from anonstream.core.generalizers import dimension_maker
from anonstream.core.keys import ROTATION_MS
from anonstream.core.pipeline import Pipeline
from anonstream.core.unit import describe_unit


def _fmt_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _pseudonymized(fa: FieldAction, p: Pipeline) -> str:
    rot = {v: k for k, v in ROTATION_MS.items()}[p.rotation_ms]
    use = "privacy unit (counted for k)" if fa.field in p.privacy_unit else "not used"
    return f"keyed BLAKE2b pseudonym, key rotated {rot}; {use}; never released"


def _measured(fa: FieldAction, p: Pipeline) -> str:
    lo, hi = fa.clamp or (0, 0)
    bands = f", bands {list(fa.edges)}" if fa.edges else ""
    return (
        f"numeric measure clamped to [{lo:g}, {hi:g}] per event; one person adds at most "
        f"{fa.max_sum_per_unit:g} to a cell's sum{bands}"
    )


def _dimension(fa: FieldAction, p: Pipeline) -> str:
    return dimension_maker(fa).describe(fa)  # each generalizer describes itself


# What each action does to a field, for a privacy reviewer.
_DESCRIBE: dict[Action, Callable[[FieldAction, Pipeline], str]] = {
    Action.DROP: lambda fa, p: "dropped at the boundary; never stored or released",
    Action.DEDUPE: lambda fa, p: (
        "keyed hash kept only to count producer retries once; never released"
    ),
    Action.WINDOW: lambda fa, p: f"generalized to its {_fmt_ms(p.window.size_ms)} window",
    Action.PSEUDONYMIZE: _pseudonymized,
    Action.KEEP: _dimension,
    Action.MEASURE: _measured,
    Action.GENERALIZE: _dimension,
}


def _describe(fa: FieldAction, p: Pipeline) -> str:
    return _DESCRIBE[fa.action](fa, p)


def explain_pipeline(p: Pipeline) -> str:
    from anonstream import explain_dp  # loads OpenDP: not for `import anonstream.explain`

    lines = [
        f"Pipeline {p.name} v{p.version}  ({p.source_file})",
        f"  {p.description}" if p.description else "",
        "",
        f"Input: {p.source_topic}, contract {p.contract.name} v1. Fields not in the contract "
        "are dropped and counted.",
        "",
        "What happens to each field:",
    ]
    width = max(len(n) for n in p.fields)
    for spec in p.contract.fields:
        fa = p.fields[spec.name]
        what = _describe(fa, p)
        if fa.action in DIMENSION_ACTIONS and spec.name not in p.dimensions:
            what += "; not a dimension, so never released"
        lines.append(
            f"  {spec.name:<{width}}  [{spec.sensitivity.value:<10}] {fa.action:<12} {what}"
        )
    w = p.window
    kind = "tumbling" if not w.hopping else f"hopping every {_fmt_ms(w.step_ms)}"
    lines += [
        "",
        f"Privacy unit (a person, for k): {describe_unit(p.privacy_unit)}.",
        f"Windows: {_fmt_ms(w.size_ms)} {kind}, event time, allowed lateness "
        f"{_fmt_ms(w.allowed_lateness_ms)}; later events are counted late, never merged; "
        f"events more than {_fmt_ms(w.max_future_skew_ms)} ahead of the clock are rejected.",
        f"Contribution bounds: {p.contribution.describe()}.",
        "",
        "Releases:",
    ]
    for o in p.outputs:
        if o.privacy == "dp":
            lines += [
                f"  output {o.name} -> topic {o.topic}",
                f"    cells: window x ({', '.join(o.dimensions) or 'no dimension'})",
                *explain_dp.output_lines(p, o),
            ]
            continue
        noise = (
            f"{o.noise.mechanism} noise, epsilon {o.noise.epsilon:g} per window"
            + (f", delta {o.noise.delta:g}" if o.noise.delta else "")
            if o.noise
            else "no noise (exact counts of cells with at least k people)"
        )
        lines += [
            f"  output {o.name} -> topic {o.topic}",
            f"    cells: window x ({', '.join(o.dimensions) or 'no dimension'}), k = {o.k} "
            "distinct people",
            "    metrics: events, users"
            + "".join(f", {m}_sum" for m in p.sums)
            + "".join(f", {m}_mean" for m in p.means)
            + "".join(
                f", {m}_histogram (bands merged until each has >= k people)" for m in p.histograms
            ),
            f"    {noise}",
        ]
    lines += explain_dp.budget_lines(p)
    dims = list(p.dimensions)
    if len(p.outputs) > 1 and p.outputs[0].privacy == "k":
        lines += [
            f"  outputs after {p.outputs[0].name} are built from its released cells only: "
            "their events, sums and histograms are totals of those cells' numbers, a measure "
            "withheld in one of them is withheld, and users counts a person in several of "
            "them once only for overlaps of at least k (rounded down to a multiple of k).",
        ]
    k_rules = [
        "",
        "Release rules"
        + (" (k-mode outputs)" if any(o.privacy == "dp" for o in p.outputs) else "")
        + ":",
        "  1. a cell with at least k distinct people is released as it is;",
        f"  2. smaller cells are rolled up: {' then '.join(reversed(dims)) or '-'} becomes '*'"
        " in turn, merging small siblings; a merged cell is released once it reaches k;",
        "  3. '*' means 'the values not released on their own', so released cells never "
        "overlap and no window total is published: no difference of released numbers "
        "describes fewer than k people;",
        "  4. what never reaches k is suppressed; only the number of suppressed cells is "
        "reported, in the window summary.",
    ]
    if any(o.privacy == "k" for o in p.outputs):
        lines += k_rules
    warn = explain_dp.warnings(p)
    if warn:
        lines += ["", "Warnings:", *(f"  ! {w}" for w in warn)]
    return "\n".join(line for line in lines if line is not None)
