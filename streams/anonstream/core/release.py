"""Release rules: contribution bounding, k-threshold, roll-up, histogram coarsening, noise.

Released cells of one window are disjoint sets of (bounded) events: a leaf cell with at
least k distinct units is released as it is; the others are merged with their small
siblings one dimension at a time (the least important dimension first becomes "*"), and a
merged cell is released once it reaches k. A "*" cell therefore holds exactly the events not
released at a finer level, and no window total is published, so no difference of released
numbers (parent minus children, total minus cells) can describe a group under k. What never
reaches k is suppressed and appears in no released number except the count of suppressed
cells.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.accumulators import distinct_count
from anonstream.core.budget import Ledger
from anonstream.core.cellstate import Rows, WindowState, group_starts, rank_in_group
from anonstream.core.contribution import bound_cells_per_unit  # also re-exported here
from anonstream.core.exactsum import exact_sums_float
from anonstream.core.pipeline import Noise, Output, Pipeline
from anonstream.core.records import STAR, aggregate_record, release_id

U64 = npt.NDArray[np.uint64]


def _non_decreasing(a: npt.NDArray[Any], within: npt.NDArray[Any] | None = None) -> bool:
    """Whether `a` never decreases (with `within`: inside each run of equal `within`)."""
    if len(a) < 2:
        return True
    up = a[1:] >= a[:-1]
    if within is not None:
        up |= within[1:] != within[:-1]
    return bool(up.all())


def bound_events_per_released_cell(
    rows: Rows, emits: list[_Emit], max_events: int, leaves_are_finest: bool = False
) -> tuple[list[_Emit], list[int]]:
    """Keep at most `max_events` rows per (released cell, unit): a cell that merges several
    finest cells (roll-up, or an output with fewer dimensions) would otherwise take L
    events from a person per merged cell. As in `compact`, the smallest keyed event hashes
    are kept, so the choice does not depend on arrival. Returns the cells and the rows
    dropped from each. With `leaves_are_finest`, unmerged cells are skipped: compaction
    already bounded them."""
    cell_of = np.full(len(rows), -1, dtype=np.int64)
    for i, e in enumerate(emits):
        if e.level or not leaves_are_finest:
            cell_of[e.idx] = i
    sel = np.flatnonzero(cell_of >= 0)
    order = np.lexsort((rows.event[sel], rows.unit[sel], cell_of[sel]))
    start = group_starts(cell_of[sel][order].astype(np.uint64), rows.unit[sel][order])
    over = rank_in_group(start) >= max_events
    if not over.any():
        return emits, [0] * len(emits)
    keep = np.ones(len(rows), dtype=bool)
    keep[sel[order][over]] = False
    out: list[_Emit] = []
    dropped: list[int] = []
    for e in emits:
        idx = e.idx[keep[e.idx]]
        dropped.append(len(e.idx) - len(idx))
        out.append(_Emit(e.key, idx, e.users, e.level) if dropped[-1] else e)
    return out, dropped


@dataclass
class Accounting:
    """Where every accepted row of a window went; internal, never released."""

    rows_in: int = 0
    duplicates: int = 0
    over_event_limit: int = 0
    over_cell_limit: int = 0
    released: int = 0
    rolled_up: int = 0
    suppressed: int = 0

    def balanced(self) -> bool:
        out = self.duplicates + self.over_event_limit + self.over_cell_limit
        return self.rows_in == out + self.released + self.rolled_up + self.suppressed


@dataclass
class OutputRelease:
    output: Output
    records: list[dict[str, Any]] = field(default_factory=list)
    cells_released: int = 0
    cells_rolled_up: int = 0
    cells_suppressed: int = 0
    accounting: Accounting = field(default_factory=Accounting)
    privacy: dict[str, Any] | None = None  # dp mode: the window summary's privacy block
    publish_summary: bool = True  # dp mode: False for a window already released


def _band_label(lo: float, hi: float) -> str:
    def f(x: float) -> str:
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return str(int(x)) if x == int(x) else str(x)

    return f"[{f(lo)},{f(hi)})"


@dataclass(frozen=True, slots=True)
class _Emit:
    """A cell to release: its key, its rows, its distinct units, its roll-up level."""

    key: tuple[str, ...]
    idx: npt.NDArray[np.intp]
    users: int
    level: int


def _distinct_per_group(
    g: npt.NDArray[np.int64], units: U64, n_groups: int, presorted: bool = False
) -> npt.NDArray[np.int64]:
    """Distinct units in each group 0..n_groups-1 (`presorted`: rows already in (group,
    unit) order, no sort needed)."""
    if presorted:
        gs, us = g, units
    else:
        order = np.lexsort((units, g))
        gs, us = g[order], units[order]
    starts = group_starts(gs.astype(np.uint64), us)
    return np.bincount(gs[starts], minlength=n_groups)


def band_histograms(
    g: npt.NDArray[np.int64],
    bands: npt.NDArray[np.intp],
    units: U64,
    n_groups: int,
    edges: tuple[float, ...],
    k: int,
) -> list[dict[str, int] | None]:
    """`Releaser._histogram` for every group at once (None would mean: ask it).

    Bands are walked left to right for all groups together; a group cuts a band (closing
    the bands since its last cut) once the distinct units with a value in them reach k. Each
    (group, unit) carries the set of bands it has values in as bits, so that count is one
    masked bincount per band; the too-small tail folds into the last cut.
    """
    n_bands = len(edges) + 1
    counts = np.bincount(g * n_bands + bands, minlength=n_groups * n_bands).reshape(
        n_groups, n_bands
    )
    pair_g, bits = band_bits(g, bands, units)
    return band_walk(counts, pair_g, bits, None, edges, k)


def band_bits(
    g: npt.NDArray[np.int64], bands: npt.NDArray[np.intp], units: U64
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each (group, unit) pair's group and the set of bands it has values in, as bits."""
    order = np.lexsort((units, g))
    gs, bs = g[order], bands[order].astype(np.int64)
    start = group_starts(gs.astype(np.uint64), units[order])
    pair = np.cumsum(start) - 1
    bits = np.zeros(int(pair[-1]) + 1 if len(pair) else 0, dtype=np.int64)
    np.bitwise_or.at(bits, pair, np.left_shift(np.int64(1), bs))
    return gs[start], bits


def band_walk(
    counts: npt.NDArray[np.int64],
    pair_g: npt.NDArray[np.int64],
    bits: npt.NDArray[np.int64],
    weight: npt.NDArray[np.int64] | None,
    edges: tuple[float, ...],
    k: int,
) -> list[dict[str, int] | None]:
    """The walk of `band_histograms` from its summable parts: values per (group, band)
    (`counts`), and band sets with how many units have each (`weight`, None: one each), so
    that parts of disjoint sets of units can be added up first (core/sharded.py)."""
    n_groups, n_bands = counts.shape
    bounds = (-math.inf, *edges, math.inf)
    lo = np.zeros(n_groups, dtype=np.int64)  # first band since the last cut
    acc = np.zeros(n_groups, dtype=np.int64)  # values since the last cut
    out: list[dict[str, int]] = [{} for _ in range(n_groups)]
    for b in range(n_bands):
        acc += counts[:, b]
        since_lo = ((np.int64(1) << (b + 1)) - 1) & ~((np.int64(1) << lo) - 1)
        hit = (bits & since_lo[pair_g]) != 0
        w = None if weight is None else weight[hit]
        cut = np.flatnonzero(np.bincount(pair_g[hit], weights=w, minlength=n_groups) >= k)
        for i, lo_b, c in zip(cut.tolist(), lo[cut].tolist(), acc[cut].tolist(), strict=True):
            out[i][_band_label(bounds[lo_b], bounds[b + 1])] = c
        acc[cut] = 0
        lo[cut] = b + 1
    for i in np.flatnonzero(acc).tolist():
        h = out[i]
        if h:  # fold the tail into the last band, widening its label
            last = next(reversed(h))
            h[last.split(",")[0] + ",inf)"] = h.pop(last) + int(acc[i])
    return list(out)


def _bounds(edges: tuple[float, ...]) -> tuple[float, ...]:
    return (-math.inf, *edges, math.inf)


def _bound_index(edges: tuple[float, ...]) -> dict[str, int]:
    """Band bound as written in a label (see `_band_label`) -> its index in `_bounds`."""
    return {_band_label(b, b)[1:].split(",")[0]: i for i, b in enumerate(_bounds(edges))}


def merge_histograms(hists: list[dict[str, int]], edges: tuple[float, ...]) -> dict[str, int]:
    """The sum of several histograms of one measure (with bands merged differently): its
    bands are those between the bounds every one of them cuts at, so each is a union of
    whole bands of each, and its counts are totals of theirs."""
    at = _bound_index(edges)
    spans = [[(at[lab[1:-1].split(",")[0]], at[lab[1:-1].split(",")[1]], n)
              for lab, n in h.items()] for h in hists]  # fmt: skip
    # A histogram can be cut anywhere but inside one of its bands (outside them it has no
    # values); empty bands of the sum are left out, as a primary cell leaves them out.
    cuts = set(range(len(edges) + 2))
    for sp in spans:
        cuts -= {c for lo, hi, _ in sp for c in range(lo + 1, hi)}
    bounds = _bounds(edges)
    out: dict[str, int] = {}
    for lo, hi in pairwise(sorted(cuts)):
        n = sum(n for sp in spans for a, b, n in sp if lo <= a and b <= hi)
        if n:
            out[_band_label(bounds[lo], bounds[hi])] = n
    return out


@dataclass
class _CellFigures:
    """The exact numbers of one released cell, by measure (sums bounded per person)."""

    sums: dict[str, float]  # also the means' numerators: a mean adds nothing to the sum
    counts: dict[str, int]
    withheld: dict[str, bool]
    hists: dict[str, dict[str, int]]  # only those released


@dataclass
class _Figures:
    """The exact numbers of the released cells of the primary output, by cell index;
    `cell_of` is the index of the cell each row was released in (-1: none)."""

    cell_of: npt.NDArray[np.int64]
    events: npt.NDArray[np.int64]
    users: npt.NDArray[np.int64]
    sums: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    counts: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    withheld: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    hists: dict[str, list[dict[str, int] | None]] = field(default_factory=dict)
    edges: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def cell(self, i: int) -> _CellFigures:
        """Copies: noise is added to them in place."""
        return _CellFigures(
            {m: float(v[i]) for m, v in self.sums.items()},
            {m: int(v[i]) for m, v in self.counts.items()},
            {m: bool(v[i]) for m, v in self.withheld.items()},
            {m: dict(h) for m, per in self.hists.items() if (h := per[i]) is not None},
        )

    def union(self, cells: npt.NDArray[np.int64]) -> _CellFigures:
        """The figures of a union of cells: totals, withheld if withheld in any of them."""
        withheld = {m: bool(v[cells].any()) for m, v in self.withheld.items()}
        hists: dict[str, dict[str, int]] = {}
        for m, per in self.hists.items():
            if not withheld[m]:
                parts = [h for i in cells.tolist() if (h := per[i]) is not None]
                hists[m] = merge_histograms(parts, self.edges[m])
        return _CellFigures(
            {m: float(v[cells].sum()) for m, v in self.sums.items()},
            {m: int(v[cells].sum()) for m, v in self.counts.items()},
            withheld,
            hists,
        )


class Releaser:
    """Turns one closed window's state into the records of each output."""

    def __init__(
        self,
        pipeline: Pipeline,
        noise_key: bytes,
        rng_factory: Any = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.p = pipeline
        self.ledger = ledger
        self._noise_key = noise_key
        # Injectable for tests; by default one generator per release, seeded from a secret
        # key, the release id and the cell's exact numbers: a re-run after a crash releases
        # the very same noise, and a release of the same cell with other data (a backfill,
        # a replay with one person more) fresh noise, which does not cancel in a difference.
        self._rng_factory: Any = rng_factory
        measures = pipeline.measures
        self._col = {m: i for i, m in enumerate(measures)}
        self._exact_limit = max(4096, *(o.k for o in pipeline.outputs))

    def _seeded_rng(self, rid: str, exact: bytes = b"") -> np.random.Generator:
        h = hashlib.blake2b(rid.encode(), key=self._noise_key, digest_size=16)
        h.update(exact)
        return np.random.default_rng(int.from_bytes(h.digest(), "little"))

    def release(self, state: WindowState) -> list[OutputRelease]:
        """Release every output of the pipeline for one closed window.

        The first output is the primary: it sees every (bounded) row. Each other output
        sees only the rows the primary released in a cell that names a value for every one
        of its dimensions, so each of its cells is a union of primary cells released on
        their own, and every number in it is derived from theirs (see `_emit_derived`).
        """
        rows = state.compact()
        bounded, over_cells = bound_cells_per_unit(
            rows, self.p.contribution.max_cells_per_unit_per_window
        )
        primary = self.p.outputs[0]
        results: list[OutputRelease] = []
        emits: list[_Emit] = []
        figures: _Figures | None = None
        over_released_cell = 0
        for i, out in enumerate(self.p.outputs):
            if out.privacy == "dp":
                # Every dp output sees all bounded rows (a k-primary's choice of cells is
                # exact, so building on it would void the guarantee); see core/dp.py.
                res = self._release_dp(state, bounded, out)
                res.accounting.rows_in = len(bounded)
            elif i == 0:
                res, emits = self._cells(state, bounded, primary)
                emits, dropped = bound_events_per_released_cell(
                    bounded,
                    emits,
                    self.p.contribution.max_events_per_unit_per_cell,
                    leaves_are_finest=primary.dimensions == self.p.dimensions,
                )
                for e, d in zip(emits, dropped, strict=True):
                    if e.level:
                        res.accounting.rolled_up -= d
                    else:
                        res.accounting.released -= d
                over_released_cell = sum(dropped)
                figures = self._emit_all(res, state, bounded, primary, emits)
            else:
                # A k secondary always has a k primary (check_dp_pipeline).
                assert figures is not None
                pos = [primary.dimensions.index(d) for d in out.dimensions]
                named = np.array([all(e.key[j] != STAR for j in pos) for e in emits] + [False])
                ok = named[figures.cell_of]  # cell_of -1 (not released) picks the False
                sub = bounded.take(ok)
                res, sub_emits = self._cells(state, sub, out)
                res.accounting.rows_in = int(ok.sum())
                self._emit_derived(res, state, sub, out, sub_emits, figures, figures.cell_of[ok])
            if i == 0:
                acc = res.accounting
                acc.rows_in = state.rows_in
                acc.duplicates = state.duplicates
                acc.over_event_limit = state.over_limit + over_released_cell
                acc.over_cell_limit = over_cells
            results.append(res)
        return results

    def _release_dp(self, state: WindowState, rows: Rows, out: Output) -> OutputRelease:
        """A dp output: released only if the ledger accepts the window's cost."""
        from anonstream.core.budget import content_digest
        from anonstream.core.dp import plan_output, release_dp  # OpenDP: dp pipelines only

        assert self.ledger is not None, "a pipeline with dp outputs needs a ledger"
        res = OutputRelease(out)
        plan = plan_output(self.p, out)
        cost = (plan.epsilon, plan.delta)
        # Drawn before the charge so that the ledger records what is published (its digest);
        # nothing of it leaves this function unless the ledger accepts.
        r = release_dp(self.p, out, state, rows)
        decision = self.ledger.request(
            self.p.name, out.name, state.start_ms, state.end_ms, cost, content_digest(r.records)
        )
        res.privacy = decision.summary(cost)
        if decision.status == "already_released":
            res.publish_summary = False
        if decision.status != "released":
            res.accounting.suppressed = len(rows)
            return res
        res.records = r.records
        res.cells_released = r.cells_released
        res.accounting.released = r.rows_released
        res.accounting.suppressed = len(rows) - r.rows_released
        return res

    def _cells(
        self, state: WindowState, rows: Rows, out: Output, more: dict[int, int] | None = None
    ) -> tuple[OutputRelease, list[_Emit]]:
        """The cells of one output to release (k, roll-up); the counts of `res`.
        `more` (the sharded release's merge, core/sharded.py): finest cells released for
        sure, by cell id, with the people they have besides `rows` (at least k)."""
        p = self.p
        res = OutputRelease(out)
        dim_idx = [p.dimensions.index(d) for d in out.dimensions]
        # Project each pipeline cell onto this output's dimensions.
        codes: dict[tuple[str, ...], int] = {}
        cell, unit = rows.cell, rows.unit
        # Compacted rows come sorted by (cell, unit): then no sort is needed below (each
        # shortcut is taken only where a check over the rows shows it is valid).
        if _non_decreasing(cell):
            starts = group_starts(cell)
            cell_ids = cell[starts]
            row_cell = np.cumsum(starts) - 1
        else:
            cell_ids = np.unique(cell)
            row_cell = np.searchsorted(cell_ids, cell)
        cell_code = np.empty(len(cell_ids), dtype=np.int64)
        for i, cid in enumerate(cell_ids.tolist()):
            full = state.cells[cid]
            key = tuple(full[j] for j in dim_idx)
            cell_code[i] = codes.setdefault(key, len(codes))
        row_code = cell_code[row_cell]
        codes_sorted = _non_decreasing(row_code)
        order = np.arange(len(row_code)) if codes_sorted else np.argsort(row_code, kind="stable")
        sorted_codes = row_code[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        groups = np.split(order, bounds) if len(order) else []
        leaf_keys = list(codes)
        by_code = {leaf_keys[int(row_code[g[0]])]: g for g in groups}
        # Distinct units per leaf cell in one pass: count (cell, unit) pair starts.
        presorted = codes_sorted and _non_decreasing(unit, within=row_code)
        users = _distinct_per_group(row_code, unit, len(codes), presorted=presorted)
        leaf_users = {key: int(users[c]) for key, c in codes.items()}
        for cid, n_more in (more or {}).items():
            key = tuple(state.cells[cid][j] for j in dim_idx)
            leaf_users[key] = leaf_users.get(key, 0) + n_more
            by_code.setdefault(key, np.empty(0, dtype=np.intp))

        n = len(out.dimensions)
        emits: list[_Emit] = []
        pending: dict[tuple[str, ...], list[npt.NDArray[np.intp]]] = {}
        leaf_count: dict[tuple[str, ...], int] = {}
        for key in sorted(by_code):
            idx = by_code[key]
            if leaf_users[key] >= out.k:
                emits.append(_Emit(key, idx, leaf_users[key], 0))
                res.cells_released += 1
                res.accounting.released += len(idx)
            else:
                pending[key] = [idx]
                leaf_count[key] = 1
        for level in range(1, n + 1):
            merged: dict[tuple[str, ...], list[npt.NDArray[np.intp]]] = defaultdict(list)
            merged_leaves: dict[tuple[str, ...], int] = defaultdict(int)
            for key, parts in pending.items():
                parent = key[: n - level] + (STAR,) * level
                merged[parent].extend(parts)
                merged_leaves[parent] += leaf_count[key]
            pending, leaf_count = {}, {}
            for key in sorted(merged):
                parts = merged[key]
                rolled = np.concatenate(parts) if len(parts) > 1 else parts[0]
                n_units = distinct_count(rows.unit[rolled], self._exact_limit)
                if n_units >= out.k:
                    emits.append(_Emit(key, rolled, n_units, level))
                    res.cells_released += 1
                    res.cells_rolled_up += merged_leaves[key]
                    res.accounting.rolled_up += sum(len(x) for x in parts)
                else:
                    pending[key] = parts
                    leaf_count[key] = merged_leaves[key]
        for key, parts in pending.items():
            res.cells_suppressed += leaf_count[key]
            res.accounting.suppressed += sum(len(x) for x in parts)
        return res, emits

    def _emit_all(
        self, res: OutputRelease, state: WindowState, rows: Rows, out: Output, emits: list[_Emit]
    ) -> _Figures:
        """The records of every released cell of the primary, and their exact figures. The
        per-cell figures come from one pass over all released rows (each row belongs to at
        most one released cell)."""
        p, k, n_cells = self.p, out.k, len(emits)
        cell_of = np.full(len(rows), -1, dtype=np.int64)
        for i, e in enumerate(emits):
            cell_of[e.idx] = i
        fig = _Figures(cell_of, np.zeros(n_cells, dtype=np.int64),
                       np.array([e.users for e in emits], dtype=np.int64))  # fmt: skip
        if not emits:
            return fig
        sel = np.flatnonzero(cell_of >= 0)
        g = cell_of[sel]
        units = rows.unit[sel]
        fig.events = np.bincount(g, minlength=n_cells)
        # (cell, person) pairs: a person's values in a cell are bounded together, and the
        # people with a value in a cell are the pairs that have one.
        order = np.lexsort((units, g))
        pair_first = group_starts(g[order].astype(np.uint64), units[order])
        pair = np.empty(len(order), dtype=np.int64)
        pair[order] = np.cumsum(pair_first) - 1
        pair_cell = g[order][pair_first]
        n_pairs = len(pair_cell)
        for m in p.measures:
            fa = p.fields[m]
            assert fa.clamp is not None and fa.max_sum_per_unit is not None
            vals = rows.measures[sel, self._col[m]]
            has = ~np.isnan(vals)
            gh, uh, ph = g[has], units[has], pair[has]
            # A sum, mean or histogram over fewer than k people with a value would describe
            # them, however many people the cell has: withhold it (null).
            with_value = np.bincount(ph, minlength=n_pairs) > 0
            fig.withheld[m] = np.bincount(pair_cell[with_value], minlength=n_cells) < k
            fig.counts[m] = np.bincount(gh, minlength=n_cells)
            per_pair = self._per_pair(m, vals[has], ph, n_pairs)
            # Exact, rounded once: the same float in whatever order or parts it is added.
            fig.sums[m] = exact_sums_float(per_pair, pair_cell, n_cells)
            if m in p.histograms:
                bands = np.searchsorted(np.asarray(fa.edges), vals[has], side="right")
                hists = band_histograms(gh, bands, uh, n_cells, fa.edges, k)
                fig.edges[m] = fa.edges
                fig.hists[m] = [
                    None if fig.withheld[m][i]
                    else h if h is not None else self._histogram(rows, e.idx, m, k)
                    for i, (h, e) in enumerate(zip(hists, emits, strict=True))
                ]  # fmt: skip
        for i, e in enumerate(emits):
            self._emit(res, state, out, e.key, int(fig.events[i]), e.users, e.level,
                       fig.cell(i))  # fmt: skip
        return fig

    def _per_pair(
        self, m: str, vals: npt.NDArray[np.float64], pair: npt.NDArray[np.int64], n_pairs: int
    ) -> npt.NDArray[np.float64]:
        """Each (cell, person) pair's total of measure `m` (`vals`: present values, `pair`:
        their pairs), values clamped, the total exact, then clipped to the per-unit bound."""
        fa = self.p.fields[m]
        assert fa.clamp is not None and fa.max_sum_per_unit is not None
        clamped = np.clip(vals, fa.clamp[0], fa.clamp[1])
        bound = fa.max_sum_per_unit
        return np.clip(exact_sums_float(clamped, pair, n_pairs), -bound, bound)

    def _emit_derived(
        self,
        res: OutputRelease,
        state: WindowState,
        rows: Rows,
        out: Output,
        emits: list[_Emit],
        primary: _Figures,
        primary_of_row: npt.NDArray[np.int64],
    ) -> None:
        """The records of a secondary output. Each of its cells is a union of released
        primary cells, and each of its numbers is derived from theirs: events, sums and
        histograms are their totals (a histogram over the bands all of them cut at); a
        measure withheld in one of them is withheld here; a mean is their total sum over
        their total count.
        Only `users` needs the rows: people in several of the primary cells count once,
        but the overlap is rounded down to a multiple of k, so that the primary cells'
        users minus this one is never a group of 1 to k-1 people."""
        p = self.p
        kk = max(out.k, p.outputs[0].k)
        for e in emits:
            prim = np.unique(primary_of_row[e.idx])
            total_users = int(primary.users[prim].sum())
            overlap = max(0, total_users - e.users)
            users = total_users - kk * (overlap // kk)
            fig = primary.union(prim)
            for m in p.measures:
                if fig.withheld[m]:
                    continue
                # An output with a larger k than the primary's has its own threshold.
                has = ~np.isnan(rows.measures[e.idx, self._col[m]])
                if distinct_count(rows.unit[e.idx][has], self._exact_limit) < out.k:
                    fig.withheld[m] = True
                    fig.hists.pop(m, None)
                elif m in fig.hists:
                    fig.hists[m] = self._coarsen(fig.hists[m], rows, e.idx, m, out.k)
            self._emit(res, state, out, e.key, int(primary.events[prim].sum()), users, e.level,
                       fig)  # fmt: skip

    def _coarsen(
        self, hist: dict[str, int], rows: Rows, idx: npt.NDArray[np.intp], m: str, k: int
    ) -> dict[str, int]:
        """Adjacent bands of a derived histogram merged until each holds >= k people (a
        no-op unless the output's k is larger than the primary's)."""
        edges = self.p.fields[m].edges
        vals = rows.measures[idx, self._col[m]]
        has = ~np.isnan(vals)
        band = np.searchsorted(np.asarray(edges), vals[has], side="right")
        units = rows.unit[idx][has]
        at = _bound_index(edges)
        out: dict[str, int] = {}
        acc, lo_i, last = 0, 0, None
        for label, count in hist.items():
            hi_i = at[label[:-1].split(",")[1]]
            acc += count
            if len(np.unique(units[(band >= lo_i) & (band < hi_i)])) >= k:
                last = _band_label(_bounds(edges)[lo_i], _bounds(edges)[hi_i])
                out[last] = acc
                acc, lo_i = 0, hi_i
        if acc and last is not None:
            out[last.split(",")[0] + ",inf)"] = out.pop(last) + acc
        return out

    def _emit(
        self,
        res: OutputRelease,
        state: WindowState,
        out: Output,
        key: tuple[str, ...],
        events: int,
        users: int,
        level: int,
        fig: _CellFigures,
    ) -> None:
        p = self.p
        dims = dict(zip(out.dimensions, key, strict=True))
        metrics: dict[str, Any] = {"events": events, "users": users}
        noise_meta: dict[str, Any] | None = None
        if out.noise is not None:
            rid = release_id(
                "aggregate", p.name, p.version, out.name, state.start_ms, state.end_ms, dims
            )
            noise_meta = self._add_noise(out.noise, rid, metrics, fig)
        for m in p.sums:
            metrics[f"{m}_sum"] = None if fig.withheld[m] else round(fig.sums[m], 3)
        for m in p.means:
            fa = p.fields[m]
            assert fa.clamp is not None
            count = fig.counts[m]
            # The bounded sum over the events with a value: mean x count is the released
            # sum, so the mean cannot undo the per-person sum bound.
            mean = fig.sums[m] / count if count else 0.0
            metrics[f"{m}_mean"] = (
                None if fig.withheld[m] else round(min(max(mean, fa.clamp[0]), fa.clamp[1]), 3)
            )
        for m in p.histograms:
            metrics[f"{m}_histogram"] = fig.hists.get(m)
        res.records.append(
            aggregate_record(
                pipeline=p.name,
                version=p.version,
                output=out.name,
                start_ms=state.start_ms,
                end_ms=state.end_ms,
                dims=dims,
                metrics=metrics,
                k=out.k,
                level=level,
                noise=noise_meta,
            )
        )

    def _histogram(self, rows: Rows, idx: npt.NDArray[np.intp], m: str, k: int) -> dict[str, int]:
        """Counts per band, with adjacent bands merged until each holds >= k units."""
        edges = self.p.fields[m].edges
        vals = rows.measures[idx, self._col[m]]
        present = ~np.isnan(vals)
        band = np.searchsorted(np.asarray(edges), vals[present], side="right")
        units = rows.unit[idx][present]
        bounds = (-math.inf, *edges, math.inf)
        out: dict[str, int] = {}
        acc_units: list[U64] = []
        acc_count, lo = 0, bounds[0]
        last_key: str | None = None
        for b in range(len(edges) + 1):
            sel = band == b
            acc_count += int(sel.sum())
            acc_units.append(units[sel])
            if len(np.unique(np.concatenate(acc_units))) >= k:
                last_key = _band_label(lo, bounds[b + 1])
                out[last_key] = acc_count
                acc_units, acc_count, lo = [], 0, bounds[b + 1]
        if acc_count:
            if last_key is None:  # cannot happen: callers withhold histograms under k people
                return {}
            else:
                # Fold the too-small tail into the last band, widening its label.
                prev = out.pop(last_key)
                start = last_key[1:].split(",")[0]
                out[f"[{start},inf)"] = prev + acc_count
        return out

    def _add_noise(
        self, noise: Noise, rid: str, metrics: dict[str, Any], fig: _CellFigures
    ) -> dict[str, Any]:
        """Noise on every released count and sum (in place); the declared epsilon is split
        evenly over them (basic composition), with sensitivities from the contribution
        bounds."""
        p = self.p
        c = p.contribution
        L, M = c.max_events_per_unit_per_cell, c.max_cells_per_unit_per_window
        n_metrics = 2 + len(p.sums) + 2 * len(p.means) + len(fig.hists)
        eps = noise.epsilon / n_metrics
        if self._rng_factory is not None:
            rng = self._rng_factory(rid)
        else:
            exact = orjson.dumps(
                [metrics["events"], metrics["users"], fig.sums, fig.counts, fig.hists],
                option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY,
            )
            rng = self._seeded_rng(rid, exact)

        def noisy(value: float, l1: float, l2: float) -> float:
            if noise.mechanism == "laplace":
                return value + float(rng.laplace(0.0, l1 / eps))
            sigma = l2 * math.sqrt(2 * math.log(1.25 / (noise.delta / n_metrics))) / eps
            return value + float(rng.normal(0.0, sigma))

        metrics["events"] = max(0, round(noisy(metrics["events"], L * M, L * math.sqrt(M))))
        metrics["users"] = max(0, round(noisy(metrics["users"], M, math.sqrt(M))))
        for m in p.measures:
            fa = p.fields[m]
            assert fa.clamp is not None and fa.max_sum_per_unit is not None
            bound = max(abs(fa.clamp[0]), abs(fa.clamp[1]))
            if m in p.sums or m in p.means:  # noised once: the mean's numerator is the sum
                # One person adds at most the per-unit bound to a cell's sum.
                per_cell = min(fa.max_sum_per_unit, L * bound)
                fig.sums[m] = noisy(fig.sums[m], M * per_cell, math.sqrt(M) * per_cell)
            if m in p.means:
                fig.counts[m] = max(1, round(noisy(fig.counts[m], L * M, L * math.sqrt(M))))
        for h in fig.hists.values():
            for band_key in h:
                h[band_key] = max(0, round(noisy(h[band_key], L * M, L * math.sqrt(M))))
        return {"mechanism": noise.mechanism, "epsilon": noise.epsilon, "delta": noise.delta}
