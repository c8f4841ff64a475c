"""The `dp` privacy mode: user-level (epsilon, delta)-DP for each window of an output.

Every mechanism is OpenDP's, and every privacy loss reported here is read from OpenDP's
privacy maps of the very measurements that run (no loss formula is typed in this file):

- **Which cells exist, and `users`**: pre-threshold of k exact people (as Privacy on Beam),
  then OpenDP's Laplace threshold (`make_laplace_threshold`, discrete noise) over the map
  cell -> users - (k - 1). The shift by a constant changes no distance, so the map's
  (epsilon, delta) holds for the shifted counts; the released `users` is noisy + k - 1.
- **Every other number** of the released cells (events, integer sums of clamped measures,
  counts of values, fixed histogram bands): one discrete Laplace vector measurement
  (`make_laplace` on integer vectors, L1 distance) per quantity over all released cells.
- **Sensitivity** comes from the contribution bounds: a person is in at most M cells of a
  window with at most L events per cell, each clamped to [lo, hi]. Adding or removing one
  person changes at most M cells' user counts by 1 (d_in = (M, M, 1)), events and value
  counts by L*M in total (L1), sums by L*M*max(|lo|, |hi|) in total, histogram bands by L*M.
- **Composition** of a window's quantities: the selection runs first and the others run on
  the cells it chose (sequential, adaptive); their losses add up (basic composition, as
  OpenDP's `make_composition` of approximate-DP measurements: tests compare the two).

**Discrete Gaussian** (`dp: {mechanism: gaussian}`): the same quantities with OpenDP's
`make_gaussian` on integer vectors (L2 distance) and `make_gaussian_threshold` for the
selection, whose maps give zero-concentrated DP (rho, and delta for the selection). The
window's rhos add up (zCDP composition) and OpenDP converts the total to the window's
(epsilon, delta) (`make_zCDP_to_approxDP`, `make_fix_delta`); budgets and the ledger stay in
(epsilon, delta). L2 sensitivities: a person changes at most M entries of a vector by at
most L (times the clamp for sums), so by at most L*sqrt(M), rounded up to an integer.

No roll-up in dp mode: partition selection decides which cells exist, and a cell that is
not selected is in no released number. Histograms keep their declared bands (merging bands
to k people would be an exact, data-dependent choice).

Why this module is long: the plan and the release are one mechanism. The measurements the
plan's searches build and map are the very objects the release invokes (cached per scale),
and the sensitivities, plan and exact figures must agree line for line; one module keeps
that evident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from opendp.accuracy import (
    discrete_gaussian_scale_to_accuracy,
    discrete_laplacian_scale_to_accuracy,
    gaussian_scale_to_accuracy,
)
from opendp.combinators import make_fix_delta, make_zCDP_to_approxDP
from opendp.domains import atom_domain, map_domain, vector_domain
from opendp.measurements import (
    make_gaussian,
    make_gaussian_threshold,
    make_laplace,
    make_laplace_threshold,
    make_user_measurement,
)
from opendp.measures import approximate, zero_concentrated_divergence
from opendp.metrics import (
    absolute_distance,
    l01inf_distance,
    l02inf_distance,
    l1_distance,
    l2_distance,
    symmetric_distance,
)
from opendp.mod import Measurement, binary_search, enable_features
from opendp.typing import i64

from anonstream.core.budget import compose
from anonstream.core.cellstate import Rows, WindowState, group_starts
from anonstream.core.pipeline import Output, Pipeline
from anonstream.core.records import DP_SCHEMA_VERSION, aggregate_record

# Not opendp.prelude: it also imports OpenDP's optional extras, a slower start.
# honest-but-curious: only for `_window_zcdp`, a map-only measurement (see there).
enable_features("contrib", "honest-but-curious")

MECHANISMS = {"laplace": "discrete_laplace", "gaussian": "discrete_gaussian"}
ALPHA = 0.05  # error bounds are 95 %: |noise| <= error95 with probability 0.95


@cache
def _vec_domain() -> Any:
    return vector_domain(atom_domain(T=i64))


@cache
def _map_domain() -> Any:
    return map_domain(atom_domain(T=i64), atom_domain(T=i64))


@cache  # a measurement is reusable: built once per scale, not once per window
def laplace_vector(scale: float) -> Measurement:
    """Discrete Laplace noise on each entry of an integer vector (L1 distance)."""
    return make_laplace(_vec_domain(), l1_distance(T=i64), scale)


@cache
def laplace_threshold(scale: float, threshold: int) -> Measurement:
    """Partition selection: the cells of a map cell -> count whose noisy count reaches
    `threshold`, with their noisy counts."""
    return make_laplace_threshold(
        _map_domain(), l01inf_distance(absolute_distance(T=i64)), scale, threshold
    )


@cache
def gaussian_vector(scale: float) -> Measurement:
    """Discrete Gaussian noise on each entry of an integer vector (L2 distance, zCDP)."""
    return make_gaussian(_vec_domain(), l2_distance(T=i64), scale)


@cache
def gaussian_threshold(scale: float, threshold: int) -> Measurement:
    """Partition selection with discrete Gaussian noise (approximate zCDP)."""
    return make_gaussian_threshold(
        _map_domain(), l02inf_distance(absolute_distance(T=i64)), scale, threshold
    )


@cache
def zcdp_to_approx(rho: float, delta_inner: float, delta: float) -> tuple[float, float]:
    """(epsilon, delta) of a window whose composed loss is (rho, delta_inner)-approximate
    zCDP, by OpenDP's conversion at a total delta of `delta`. The composed loss is carried
    by a measurement that only has a privacy map (it is never invoked): OpenDP's
    conversions take a measurement, and the window's quantities have no common input
    domain for make_composition to compose them in."""
    carrier = make_user_measurement(
        atom_domain(T=bool), symmetric_distance(), approximate(zero_concentrated_divergence()),
        lambda x: x, lambda _: (rho, delta_inner),
    )  # fmt: skip
    e, d = make_fix_delta(make_zCDP_to_approxDP(carrier), delta).map(1)
    return float(e), float(d)


@dataclass(frozen=True, slots=True)
class Quantity:
    """One noisy quantity of an output: how it is measured and what it costs per window."""

    name: str  # users, events, <m>_sum, <m>_count, <m>_histogram
    d_in: Any  # the sensitivity, in the measurement's input metric
    scale: float
    epsilon: float  # from OpenDP's map at d_in
    delta: float
    error95: float  # |noise| <= error95 with probability 0.95 (per number)
    threshold: int | None = None  # selection only: noisy shifted users must reach this
    rho: float | None = None  # gaussian only: its zCDP loss (epsilon is then 0: see plan)

    def measurement(self) -> Measurement:
        if self.rho is not None:
            if self.threshold is not None:
                return gaussian_threshold(self.scale, self.threshold)
            return gaussian_vector(self.scale)
        if self.threshold is not None:
            return laplace_threshold(self.scale, self.threshold)
        return laplace_vector(self.scale)


@dataclass(frozen=True, slots=True)
class DpPlan:
    """What one window of a dp output releases and costs; data-independent, so explain,
    the ledger and the release all use the same plan."""

    output: str
    k: int
    quantities: tuple[Quantity, ...]
    epsilon: float  # the window's loss: basic composition of the quantities
    delta: float
    mechanism: str = "laplace"
    rho: float | None = None  # gaussian: the window's zCDP loss, before conversion

    def get(self, name: str) -> Quantity:
        return next(q for q in self.quantities if q.name == name)

    @property
    def min_cell_users(self) -> int:
        """Exact people at which a cell is released with probability about 1/2."""
        sel = self.quantities[0]
        assert sel.threshold is not None
        return sel.threshold + self.k - 1


def quantity_names(p: Pipeline) -> list[str]:
    names = ["users", "events"]
    for m in p.measures:
        if m in p.sums or m in p.means:
            names.append(f"{m}_sum")
        if m in p.means:
            names.append(f"{m}_count")
        if m in p.histograms:
            names.append(f"{m}_histogram")
    return names


def _ceil_sqrt(x: int) -> int:
    return math.isqrt(x - 1) + 1 if x > 0 else 0


def sensitivity(p: Pipeline, out: Output, name: str, mechanism: str = "laplace") -> Any:
    """d_in of a quantity of `out` when one person is added or removed (see the module
    docstring): L1 for Laplace, L2 (rounded up) for Gaussian."""
    c = p.contribution
    L, M = c.max_events_per_unit_per_cell, c.max_cells_per_unit_per_window
    l2 = mechanism == "gaussian"
    if name == "users":
        return (M, _ceil_sqrt(M), 1) if l2 else (M, M, 1)
    per_cell = L
    if name.endswith("_sum"):
        lo, hi = p.fields[name[: -len("_sum")]].clamp or (0.0, 0.0)
        per_cell = L * int(max(abs(lo), abs(hi)))
    if not l2:
        return per_cell * M
    if tuple(out.dimensions) != tuple(p.dimensions):
        # An output cell can merge several of the person's M pipeline cells, each holding up
        # to L of their events: at worst all M in one output cell, so L2 is L1.
        return per_cell * M
    return _ceil_sqrt(M * per_cell * per_cell)


def _boundary(pred: Any, guess: float, bounds: tuple[float, float], T: type = float) -> Any:
    """What OpenDP's `binary_search(pred, bounds)` returns (the passing value next to the
    boundary of a monotonic predicate), found faster: first within a narrow bracket around
    `guess`. The guess is a hint and never trusted: the bracket is searched only if `pred`
    (a check against OpenDP's privacy map) differs at its two ends, so the boundary lies
    inside it and the search ends on the same value; else the whole of `bounds` is
    searched. A plan is searched once per output at start: this makes it several times
    cheaper (tests/unit/test_dp.py compares both searches)."""
    if not math.isfinite(guess):
        return binary_search(pred, bounds=bounds, T=T)
    brackets: list[tuple[float, float]]
    if T is int:  # a threshold: brackets of 4, 32 and 256 around the guess
        brackets = [(round(guess) - w, round(guess) + w) for w in (2, 16, 128)]
    else:  # a scale or a rho: within 10^-12, 10^-6, 10^-3 of the guess
        brackets = [(guess * (1 - w), guess * (1 + w)) for w in (1e-12, 1e-6, 1e-3)]
    for lo, hi in brackets:
        if bounds[0] < lo < hi < bounds[1] and pred(lo) != pred(hi):
            return binary_search(pred, bounds=(lo, hi), T=T)
    return binary_search(pred, bounds=bounds, T=T)


def scale_guess(loss_at_1: float, target: float, power: int) -> float:
    """A hint for _boundary: the scale at which a loss of `loss_at_1` at scale 1 would fall
    to `target` if it fell as 1 / scale^power."""
    return float((loss_at_1 / target) ** (1 / power)) if target > 0 else math.nan


@cache  # events, counts and bands often share (d_in, epsilon): one search for them all
def _laplace_scale(d_in: int, eps: float) -> float:
    """The smallest discrete Laplace scale whose privacy map gives at most `eps` at `d_in`
    (OpenDP's `binary_search_param`); the guess assumes the loss falls as 1 / scale."""
    guess = scale_guess(float(laplace_vector(1.0).map(d_in)), eps, 1)
    return float(_boundary(lambda s: bool(laplace_vector(s).map(d_in) <= eps), guess, (1e-6, 1e15)))


def _vector_quantity(name: str, d_in: int, eps: float) -> Quantity:
    if d_in == 0:  # clamp [0, 0]: the sum is always 0 and needs no noise
        return Quantity(name, 0, 0.0, 0.0, 0.0, 0.0)
    scale = _laplace_scale(d_in, eps)
    spent = laplace_vector(scale).map(d_in)
    return Quantity(
        name, d_in, scale, float(spent), 0.0, discrete_laplacian_scale_to_accuracy(scale, ALPHA)
    )


def _selection(d_in: tuple[int, int, int], eps: float, delta: float) -> Quantity:
    # The threshold drives delta and the scale drives epsilon: first the smallest scale that
    # meets epsilon at a threshold so high that delta does not bind, then the smallest
    # threshold that meets delta at that scale. Both are searched against OpenDP's map.
    # (OpenDP's check cannot order two (epsilon, delta) pairs where one is larger in each,
    # so each search compares one coordinate of the map.)
    never = 2**30

    def eps_ok(s: float) -> bool:
        return bool(laplace_threshold(s, never).map(d_in)[0] <= eps)

    def delta_ok(t: float) -> bool:
        return bool(laplace_threshold(scale, int(t)).map(d_in)[1] <= delta)

    # Hints for _boundary only: epsilon falling as 1 / scale; delta, past the threshold's
    # first few steps, falling by a factor e per `scale` steps of the threshold.
    scale = _boundary(eps_ok, scale_guess(laplace_threshold(1.0, never).map(d_in)[0], eps, 1),
                      (1e-6, 1e9))  # fmt: skip
    t1 = max(2, round(scale * math.log(1 / delta)))
    d1 = laplace_threshold(scale, t1).map(d_in)[1]
    guess = t1 + scale * math.log(d1 / delta) if d1 > 0 else math.nan
    threshold = int(_boundary(delta_ok, guess, (1, never), int))
    e, d = laplace_threshold(scale, threshold).map(d_in)
    if e > eps or d > delta:  # the searches assume epsilon does not grow with the threshold
        raise ValueError(f"no threshold meets epsilon {eps:g}, delta {delta:g}")
    return Quantity(
        "users", d_in, scale, float(e), float(d),
        discrete_laplacian_scale_to_accuracy(scale, ALPHA), int(threshold),
    )  # fmt: skip


def plan_output(p: Pipeline, out: Output) -> DpPlan:
    """Split the output's per-window epsilon evenly over its quantities (delta all to the
    selection), and find each mechanism's scale with OpenDP's binary search."""
    assert out.privacy == "dp" and out.dp is not None
    names = quantity_names(p)
    return _plan(out, tuple((n, sensitivity(p, out, n, out.dp.mechanism)) for n in names))


def _gaussian_selection(d_in: tuple[int, int, int], rho: float, delta: float) -> Quantity:
    never = 2**30  # as in _selection: scale for rho first, then threshold for delta
    # Hints for _boundary: rho falling as 1 / scale^2; a Gaussian tail for delta.
    scale = _boundary(
        lambda s: bool(gaussian_threshold(s, never).map(d_in)[0] <= rho),
        scale_guess(gaussian_threshold(1.0, never).map(d_in)[0], rho, 2), (1e-6, 1e9),
    )  # fmt: skip
    threshold = int(_boundary(
        lambda t: bool(gaussian_threshold(scale, int(t)).map(d_in)[1] <= delta),
        d_in[2] + scale * math.sqrt(2 * math.log(1 / delta)), (1, never), int,
    ))  # fmt: skip
    r, d = gaussian_threshold(scale, threshold).map(d_in)
    if r > rho or d > delta:
        raise ValueError(f"no threshold meets rho {rho:g}, delta {delta:g}")
    acc = gaussian_error95(scale)
    return Quantity("users", d_in, scale, 0.0, float(d), acc, threshold, float(r))


@cache
def _gaussian_scale(d_in: int, rho: float) -> float:
    """As _laplace_scale, for the discrete Gaussian's rho (falling as 1 / scale^2)."""
    guess = scale_guess(float(gaussian_vector(1.0).map(d_in)), rho, 2)
    return float(
        _boundary(lambda s: bool(gaussian_vector(s).map(d_in) <= rho), guess, (1e-6, 1e15))
    )


# OpenDP's discrete Gaussian accuracy sums the distribution: its time grows with the scale
# (0.06 s at 1e5, 4 s at 1e7, 40 s at 1e8, the scale of a sum clamped to minutes of ms).
EXACT_GAUSSIAN_ACCURACY_UP_TO = 1e5


def gaussian_error95(scale: float) -> float:
    """The 95 % error bound of discrete Gaussian noise of `scale`: OpenDP's discrete bound;
    above EXACT_GAUSSIAN_ACCURACY_UP_TO, OpenDP's continuous Gaussian bound with a margin
    (10^-6 of it, plus 2), which is never below the discrete bound there (the discrete one
    exceeds the continuous by 0.6 to 1.4 from 1e5 to 2.5e7; tests/unit/test_dp.py checks)."""
    if scale <= EXACT_GAUSSIAN_ACCURACY_UP_TO:
        return float(discrete_gaussian_scale_to_accuracy(scale, ALPHA))
    return float(math.ceil(gaussian_scale_to_accuracy(scale, ALPHA) * (1 + 1e-6) + 2))


def _gaussian_vector(name: str, d_in: int, rho: float) -> Quantity:
    if d_in == 0:
        return Quantity(name, 0, 0.0, 0.0, 0.0, 0.0, rho=0.0)
    scale = _gaussian_scale(d_in, rho)
    spent = float(gaussian_vector(scale).map(d_in))
    acc = gaussian_error95(scale)
    return Quantity(name, d_in, scale, 0.0, 0.0, acc, rho=spent)


def _gaussian_plan(out: Output, sens: tuple[tuple[str, Any], ...]) -> DpPlan:
    """Half of delta to the selection, the rest to the conversion; the largest total rho
    whose conversion meets epsilon, split evenly over the quantities (each spends at most
    its share, so the window spends at most what the search allowed)."""
    assert out.dp is not None
    eps, delta = out.dp.epsilon, out.dp.delta

    # Hint for _boundary: epsilon = rho + 2 sqrt(rho ln(1/delta)) solved for rho, then
    # secant steps on OpenDP's conversion itself.
    def gap(r: float) -> float:
        return zcdp_to_approx(r, delta / 2, delta)[0] - eps

    log_d = math.log(1 / delta)
    a = (math.sqrt(log_d + eps) - math.sqrt(log_d)) ** 2
    b, fa = a * 1.01, gap(a)
    for _ in range(8):
        fb = gap(b)
        if fb == fa or abs(b - a) <= 1e-14 * b:
            break
        a, b, fa = b, b - fb * (b - a) / (fb - fa), fb
        if not 0 < b < 1e3:
            b = math.nan
            break
    guess = b
    rho = _boundary(lambda r: zcdp_to_approx(r, delta / 2, delta)[0] <= eps, guess, (1e-9, 1e3))
    share = rho / len(sens)
    qs = [_gaussian_selection(sens[0][1], share, delta / 2)]
    qs += [_gaussian_vector(n, d_in, share) for n, d_in in sens[1:]]
    total_rho = math.fsum(q.rho or 0.0 for q in qs)  # zCDP composition: rhos add up
    e, d = zcdp_to_approx(total_rho, qs[0].delta, delta)
    if e > eps or d > delta:
        raise ValueError(f"no gaussian plan meets epsilon {eps:g}, delta {delta:g}")
    return DpPlan(out.name, out.k, tuple(qs), e, d, "gaussian", total_rho)


@cache
def _plan(out: Output, sens: tuple[tuple[str, Any], ...]) -> DpPlan:
    assert out.dp is not None
    if out.dp.mechanism == "gaussian":
        return _gaussian_plan(out, sens)
    eps = out.dp.epsilon / len(sens)
    qs = [_selection(sens[0][1], eps, out.dp.delta)]
    qs += [_vector_quantity(n, d_in, eps) for n, d_in in sens[1:]]
    total = compose([(q.epsilon, q.delta) for q in qs])
    return DpPlan(out.name, out.k, tuple(qs), *total)


class DpPlanError(ValueError):
    """No noise scale or threshold within OpenDP's search range meets an output's epsilon
    and delta for the pipeline's bounds (a tiny epsilon, huge clamps or contribution
    bounds). The file is valid YAML with numbers in range; this says which output."""


def plans(p: Pipeline) -> dict[str, DpPlan]:
    """Every dp output's plan; DpPlanError names the output that has none. A valid-looking
    file (`epsilon: 1.0e-20`, `clamp: [0, 2**50]`) made OpenDP's binary search raise "the
    decision boundary of the predicate is outside the bounds" from explain, replay and
    the worker's start, a traceback, while validate said ok."""
    out: dict[str, DpPlan] = {}
    for i, o in enumerate(p.outputs):
        if o.privacy != "dp" or o.dp is None:
            continue
        try:
            out[o.name] = plan_output(p, o)
        except (ValueError, OverflowError) as exc:
            raise DpPlanError(
                f"{p.source_file}: outputs[{i}].dp: no noise meets epsilon {o.dp.epsilon:g},"
                f" delta {o.dp.delta:g} for these bounds ({exc}); raise epsilon or lower the"
                " clamps and contribution bounds"
            ) from None
    return out


def _noisy(q: Quantity, values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if not len(values) or q.scale == 0.0:
        return values
    return np.asarray(q.measurement()(values.tolist()), dtype=np.int64)


@dataclass
class DpResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    cells_released: int = 0
    rows_released: int = 0


def _band_labels(edges: tuple[float, ...]) -> list[str]:
    def f(x: float) -> str:
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return str(int(x)) if x == int(x) else str(x)

    bounds = (-math.inf, *edges, math.inf)
    return [f"[{f(a)},{f(b)})" for a, b in pairwise(bounds)]


@dataclass
class ExactCells:
    """A window's exact figures per output cell, before any noise: internal, never released.
    Histograms are flattened per cell (cell * bands + band)."""

    keys: list[tuple[str, ...]]
    users: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]  # bounded rows (events) per cell
    numbers: dict[str, npt.NDArray[np.int64]]

    def take(self, name: str, cells: list[int]) -> npt.NDArray[np.int64]:
        v = self.numbers[name]
        width = len(v) // len(self.keys)
        return v.reshape(len(self.keys), width)[cells].ravel()


SUM_LIMIT = 2**62  # exact sums are saturated here: OpenDP adds noise to i64 values


def integer_sums(
    g: npt.NDArray[np.int64], values: npt.NDArray[np.int64], n: int
) -> npt.NDArray[np.int64]:
    """Exact integer sums of `values` per group 0..n-1, saturated to +/-SUM_LIMIT.

    Not `np.bincount(weights=...)`: it sums in float64, which rounds above 2^53 (a person's
    value then moves the sum by more than the clamp, the sensitivity) and whose cast back to
    int64 wraps above 2^63 (one person more flips the sum's sign). Saturation is 1-Lipschitz
    per cell, so the sensitivity holds."""
    out = np.zeros(n, dtype=np.int64)
    if not len(values):
        return out
    bound = int(np.abs(values).max()) * int(np.bincount(g, minlength=n).max())
    if bound < SUM_LIMIT:  # no partial sum can leave int64: exact in numpy
        np.add.at(out, g, values)
        return out
    sums = [0] * n  # Python integers: exact at any size
    for gi, v in zip(g.tolist(), values.tolist(), strict=True):
        sums[gi] += v
    return np.array([min(max(x, -SUM_LIMIT), SUM_LIMIT) for x in sums], dtype=np.int64)


def exact_cells(p: Pipeline, out: Output, state: WindowState, rows: Rows) -> ExactCells:
    """Distinct units, events, integer sums of clamped values, counts of values and band
    counts per cell of `out`, from rows already bounded per unit (at most L events per
    pipeline cell, M cells per window): the figures whose sensitivity `sensitivity` states."""
    dim_idx = [p.dimensions.index(d) for d in out.dimensions]
    codes: dict[tuple[str, ...], int] = {}
    cell_ids, row_cell = np.unique(rows.cell, return_inverse=True)
    cell_code = np.fromiter(
        (codes.setdefault(tuple(state.cells[c][j] for j in dim_idx), len(codes))
         for c in cell_ids.tolist()),
        dtype=np.int64, count=len(cell_ids),
    )  # fmt: skip
    g = cell_code[row_cell.ravel()] if len(rows) else np.zeros(0, dtype=np.int64)
    n = len(codes)
    order = np.lexsort((rows.unit, g))  # distinct (cell, unit) pairs: starts of runs
    gs = g[order]
    users = np.bincount(gs[group_starts(gs.astype(np.uint64), rows.unit[order])], minlength=n)
    events = np.bincount(g, minlength=n).astype(np.int64)
    numbers: dict[str, npt.NDArray[np.int64]] = {"events": events}
    col = {m: i for i, m in enumerate(p.measures)}
    for m in p.measures:
        fa = p.fields[m]
        assert fa.clamp is not None
        vals = rows.measures[:, col[m]]
        has = ~np.isnan(vals)
        gh = g[has]
        clamped = np.clip(vals[has], fa.clamp[0], fa.clamp[1]).astype(np.int64)
        if m in p.sums or m in p.means:
            numbers[f"{m}_sum"] = integer_sums(gh, clamped, n)
        if m in p.means:
            numbers[f"{m}_count"] = np.bincount(gh, minlength=n).astype(np.int64)
        if m in p.histograms:
            nb = len(fa.edges) + 1
            band = np.searchsorted(np.asarray(fa.edges), vals[has], side="right")
            numbers[f"{m}_histogram"] = np.bincount(gh * nb + band, minlength=n * nb).astype(
                np.int64
            )
    return ExactCells(list(codes), users.astype(np.int64), events, numbers)


def release_dp(p: Pipeline, out: Output, state: WindowState, rows: Rows) -> DpResult:
    """One window of a dp output. `rows` are bounded per unit (at most L events per cell,
    M cells per window): that is what the sensitivities assume."""
    plan = plan_output(p, out)
    res = DpResult()
    exact = exact_cells(p, out, state, rows)
    keys = exact.keys
    # Pre-threshold of k exact people, then DP selection on the shifted counts.
    pre = np.flatnonzero(exact.users >= out.k)
    shifted = {int(c): int(exact.users[c]) - (out.k - 1) for c in pre}
    chosen = plan.quantities[0].measurement()(shifted) if shifted else {}
    released = sorted(chosen, key=lambda c: keys[c])  # a stable order, by dims
    if not released:
        return res
    res.cells_released = len(released)
    res.rows_released = int(exact.rows[released].sum())
    numbers = {name: exact.take(name, released) for name in exact.numbers}
    noisy = {name: _noisy(plan.get(name), v) for name, v in numbers.items()}
    noisy["users"] = np.array([chosen[c] + out.k - 1 for c in released], dtype=np.int64)
    meta = noise_meta(plan, out)
    for i, c in enumerate(released):
        dims = dict(zip(out.dimensions, keys[c], strict=True))
        metrics: dict[str, Any] = {
            "events": max(0, int(noisy["events"][i])),
            "users": int(noisy["users"][i]),
        }
        for m in p.measures:
            fa = p.fields[m]
            assert fa.clamp is not None
            if m in p.sums:
                metrics[f"{m}_sum"] = int(noisy[f"{m}_sum"][i])
            if m in p.means:
                cnt = int(noisy[f"{m}_count"][i])
                mean = noisy[f"{m}_sum"][i] / cnt if cnt > 0 else (fa.clamp[0] + fa.clamp[1]) / 2
                metrics[f"{m}_mean"] = round(min(max(float(mean), fa.clamp[0]), fa.clamp[1]), 3)
            if m in p.histograms:
                nb = len(fa.edges) + 1
                band_counts = noisy[f"{m}_histogram"][i * nb : (i + 1) * nb]
                metrics[f"{m}_histogram"] = {
                    label: max(0, int(v))
                    for label, v in zip(_band_labels(fa.edges), band_counts, strict=True)
                }
        rec = aggregate_record(
            pipeline=p.name, version=p.version, output=out.name, start_ms=state.start_ms,
            end_ms=state.end_ms, dims=dims, metrics=metrics, k=out.k, level=0, noise=meta,
        )  # fmt: skip
        rec["schema_version"] = DP_SCHEMA_VERSION
        res.records.append(rec)
    return res


@cache
def _noise_meta(plan: DpPlan) -> dict[str, Any]:
    return {
        "mechanism": MECHANISMS[plan.mechanism],
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        **({"rho": plan.rho} if plan.rho is not None else {}),
        "quantities": {
            q.name: {
                "scale": q.scale,
                "error95": q.error95,
                **({"rho": q.rho} if q.rho is not None else {"epsilon": q.epsilon}),
                **({"threshold": q.threshold + plan.k - 1} if q.threshold is not None else {}),
            }
            for q in plan.quantities
        },
    }


def noise_meta(plan: DpPlan, out: Output) -> dict[str, Any]:
    """The record's `noise` object: mechanism, the window's loss, and per quantity its
    scale, 95 % error bound and share of epsilon (laplace) or its rho (gaussian) (a copy:
    records must not share it)."""
    m = _noise_meta(plan)
    return {**m, "quantities": {k: dict(v) for k, v in m["quantities"].items()}}
