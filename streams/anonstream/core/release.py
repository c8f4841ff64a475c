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
from typing import Any

import numpy as np
import numpy.typing as npt

from anonstream.core.accumulators import distinct_count
from anonstream.core.budget import Ledger
from anonstream.core.cellstate import Rows, WindowState, group_starts, rank_in_group
from anonstream.core.pipeline import Noise, Output, Pipeline
from anonstream.core.records import STAR, aggregate_record, release_id

U64 = npt.NDArray[np.uint64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: U64) -> U64:
    """splitmix64 finaliser: a fixed, well-spread order for deterministic choices."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _non_decreasing(a: npt.NDArray[Any], within: npt.NDArray[Any] | None = None) -> bool:
    """Whether `a` never decreases (with `within`: inside each run of equal `within`)."""
    if len(a) < 2:
        return True
    up = a[1:] >= a[:-1]
    if within is not None:
        up |= within[1:] != within[:-1]
    return bool(up.all())


def bound_cells_per_unit(rows: Rows, max_cells: int) -> tuple[Rows, int]:
    """Keep each unit's rows in at most `max_cells` cells, chosen by a hash of (unit, cell)
    rather than by arrival, so the choice is the same however events were batched."""
    if not len(rows):
        return rows, 0
    order = np.lexsort((rows.cell, rows.unit))
    r = rows.take(order)
    pair_start = group_starts(r.unit, r.cell)
    pair_id = np.cumsum(pair_start) - 1
    pu, pc = r.unit[pair_start], r.cell[pair_start]
    with np.errstate(over="ignore"):
        prio = _mix64(pu ^ (pc * _GOLDEN))
    porder = np.lexsort((prio, pu))
    rank_sorted = rank_in_group(group_starts(pu[porder]))
    keep_pair = np.empty(len(pu), dtype=bool)
    keep_pair[porder] = rank_sorted < max_cells
    keep = np.empty(len(order), dtype=bool)
    keep[order] = keep_pair[pair_id]
    dropped = int(len(keep) - keep.sum())
    # In the rows' own order: compacted rows stay sorted by cell, which release reuses.
    return (rows.take(keep) if dropped else rows), dropped


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
    bounds = (-math.inf, *edges, math.inf)
    counts = np.bincount(g * n_bands + bands, minlength=n_groups * n_bands).reshape(
        n_groups, n_bands
    )
    order = np.lexsort((units, g))
    gs, bs = g[order], bands[order].astype(np.int64)
    start = group_starts(gs.astype(np.uint64), units[order])
    pair = np.cumsum(start) - 1
    bits = np.zeros(int(pair[-1]) + 1 if len(pair) else 0, dtype=np.int64)
    np.bitwise_or.at(bits, pair, np.left_shift(np.int64(1), bs))
    pair_g = gs[start]
    lo = np.zeros(n_groups, dtype=np.int64)  # first band since the last cut
    acc = np.zeros(n_groups, dtype=np.int64)  # values since the last cut
    out: list[dict[str, int]] = [{} for _ in range(n_groups)]
    for b in range(n_bands):
        acc += counts[:, b]
        since_lo = ((np.int64(1) << (b + 1)) - 1) & ~((np.int64(1) << lo) - 1)
        hit = (bits & since_lo[pair_g]) != 0
        cut = np.flatnonzero(np.bincount(pair_g[hit], minlength=n_groups) >= k)
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
        # key and the release id, so a re-run after a crash releases the very same noise.
        self._rng_factory = rng_factory or self._seeded_rng
        measures = pipeline.measures
        self._col = {m: i for i, m in enumerate(measures)}
        self._exact_limit = max(4096, *(o.k for o in pipeline.outputs))

    def _seeded_rng(self, rid: str) -> np.random.Generator:
        seed = hashlib.blake2b(rid.encode(), key=self._noise_key, digest_size=16).digest()
        return np.random.default_rng(int.from_bytes(seed, "little"))

    def release(self, state: WindowState) -> list[OutputRelease]:
        """Release every output of the pipeline for one closed window.

        The first output is the primary: it sees every (bounded) row. Each other output
        sees only the rows the primary released in a cell that names a value for every one
        of its dimensions, so each of its cells is a sum of primary cells already released
        on their own, and subtracting one output from another reveals nothing new.
        """
        rows = state.compact()
        bounded, over_cells = bound_cells_per_unit(
            rows, self.p.contribution.max_cells_per_unit_per_window
        )
        results: list[OutputRelease] = []
        primary_cell: list[tuple[str, ...] | None] = []
        for i, out in enumerate(self.p.outputs):
            if out.privacy == "dp":
                # Every dp output sees all bounded rows (a k-primary's choice of cells is
                # exact, so building on it would void the guarantee); see core/dp.py.
                res = self._release_dp(state, bounded, out)
                if i == 0:
                    res.accounting.rows_in = state.rows_in
                    res.accounting.duplicates = state.duplicates
                    res.accounting.over_event_limit = state.over_limit
                    res.accounting.over_cell_limit = over_cells
                else:
                    res.accounting.rows_in = len(bounded)
            elif i == 0:
                res, primary_cell = self._release_output(
                    state, bounded, out, track=len(self.p.outputs) > 1
                )
                acc = res.accounting
                acc.rows_in = state.rows_in
                acc.duplicates = state.duplicates
                acc.over_event_limit = state.over_limit
                acc.over_cell_limit = over_cells
            else:
                primary = self.p.outputs[0]
                pos = [primary.dimensions.index(d) for d in out.dimensions]
                ok = np.fromiter(
                    (c is not None and all(c[j] != STAR for j in pos) for c in primary_cell),
                    dtype=bool,
                    count=len(primary_cell),
                )
                res, _ = self._release_output(state, bounded.take(ok), out)
                res.accounting.rows_in = int(ok.sum())
            results.append(res)
        return results

    def _release_dp(self, state: WindowState, rows: Rows, out: Output) -> OutputRelease:
        """A dp output: released only if the ledger accepts the window's cost."""
        from anonstream.core.dp import plan_output, release_dp  # OpenDP: dp pipelines only

        assert self.ledger is not None, "a pipeline with dp outputs needs a ledger"
        res = OutputRelease(out)
        plan = plan_output(self.p, out)
        cost = (plan.epsilon, plan.delta)
        decision = self.ledger.request(out.name, state.start_ms, state.end_ms, cost)
        res.privacy = decision.summary(cost)
        if decision.status == "already_released":
            res.publish_summary = False
        if decision.status != "released":
            res.accounting.suppressed = len(rows)
            return res
        r = release_dp(self.p, out, state, rows)
        res.records = r.records
        res.cells_released = r.cells_released
        res.accounting.released = r.rows_released
        res.accounting.suppressed = len(rows) - r.rows_released
        return res

    def _release_output(
        self, state: WindowState, rows: Rows, out: Output, track: bool = False
    ) -> tuple[OutputRelease, list[tuple[str, ...] | None]]:
        """Releases of one output, and with `track` for each row the key of the cell it was
        released in (None where suppressed)."""
        p = self.p
        res = OutputRelease(out)
        # Only the secondary outputs need to know where each row went.
        released_in: list[tuple[str, ...] | None] = [None] * len(rows) if track else []
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
                if track:
                    for r in idx.tolist():
                        released_in[r] = key
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
                    for part in parts if track else ():
                        for r in part.tolist():
                            released_in[r] = key
                else:
                    pending[key] = parts
                    leaf_count[key] = merged_leaves[key]
        for key, parts in pending.items():
            res.cells_suppressed += leaf_count[key]
            res.accounting.suppressed += sum(len(x) for x in parts)
        self._emit_all(res, state, rows, out, emits)
        return res, released_in

    def _emit_all(
        self, res: OutputRelease, state: WindowState, rows: Rows, out: Output, emits: list[_Emit]
    ) -> None:
        """The records of every released cell. The per-cell figures come from one pass
        over all released rows (each row belongs to at most one released cell)."""
        if not emits:
            return
        p, k, n_cells = self.p, out.k, len(emits)
        cell_of = np.full(len(rows), -1, dtype=np.int64)
        for i, e in enumerate(emits):
            cell_of[e.idx] = i
        sel = np.flatnonzero(cell_of >= 0)
        g = cell_of[sel]
        units = rows.unit[sel]
        events = np.bincount(g, minlength=n_cells)
        sums: dict[str, npt.NDArray[Any]] = {}
        counts: dict[str, npt.NDArray[Any]] = {}
        withheld: dict[str, npt.NDArray[np.bool_]] = {}
        hists: dict[str, list[dict[str, int] | None]] = {}
        for m in p.measures:
            fa = p.fields[m]
            assert fa.clamp is not None
            vals = rows.measures[sel, self._col[m]]
            has = ~np.isnan(vals)
            gh, uh = g[has], units[has]
            # A sum, mean or histogram over fewer than k people with a value would describe
            # them, however many people the cell has: withhold it (null).
            withheld[m] = _distinct_per_group(gh, uh, n_cells) < k
            clamped = np.clip(vals[has], fa.clamp[0], fa.clamp[1])
            sums[m] = np.bincount(gh, weights=clamped, minlength=n_cells)
            counts[m] = np.bincount(gh, minlength=n_cells)
            if m in p.histograms:
                bands = np.searchsorted(np.asarray(fa.edges), vals[has], side="right")
                hists[m] = band_histograms(gh, bands, uh, n_cells, fa.edges, k)
        for i, e in enumerate(emits):
            cell_hists: dict[str, dict[str, int]] = {}
            for m, per_cell in hists.items():
                if withheld[m][i]:
                    continue
                h = per_cell[i]
                # None only where a test asks for the per-cell reference path.
                cell_hists[m] = h if h is not None else self._histogram(rows, e.idx, m, k)
            self._emit(
                res, state, out, e.key, int(events[i]), e.users, e.level,
                {m: float(v[i]) for m, v in sums.items()},
                {m: int(v[i]) for m, v in counts.items()},
                {m for m, w in withheld.items() if w[i]},
                cell_hists,
            )  # fmt: skip

    def _emit(
        self,
        res: OutputRelease,
        state: WindowState,
        out: Output,
        key: tuple[str, ...],
        events: int,
        users: int,
        level: int,
        sums: dict[str, float],
        counts: dict[str, int],
        withheld: set[str],
        hists: dict[str, dict[str, int]],
    ) -> None:
        p = self.p
        dims = dict(zip(out.dimensions, key, strict=True))
        metrics: dict[str, Any] = {"events": events, "users": users}
        noise_meta: dict[str, Any] | None = None
        if out.noise is not None:
            rid = release_id(
                "aggregate", p.name, p.version, out.name, state.start_ms, state.end_ms, dims
            )
            noise_meta = self._add_noise(out.noise, rid, metrics, sums, counts, hists)
        for m in p.sums:
            metrics[f"{m}_sum"] = None if m in withheld else round(sums[m], 3)
        for m in p.means:
            fa = p.fields[m]
            assert fa.clamp is not None
            mean = sums[m] / counts[m] if counts[m] else 0.0
            metrics[f"{m}_mean"] = (
                None if m in withheld else round(min(max(mean, fa.clamp[0]), fa.clamp[1]), 3)
            )
        for m in p.histograms:
            metrics[f"{m}_histogram"] = hists.get(m)
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
        self,
        noise: Noise,
        rid: str,
        metrics: dict[str, Any],
        sums: dict[str, float],
        counts: dict[str, int],
        hists: dict[str, dict[str, int]],
    ) -> dict[str, Any]:
        """Noise on every released count and sum; the declared epsilon is split evenly over
        them (basic composition), with sensitivities from the contribution bounds."""
        c = self.p.contribution
        L, M = c.max_events_per_unit_per_cell, c.max_cells_per_unit_per_window
        n_metrics = 2 + 2 * len(sums) + len(hists)
        eps = noise.epsilon / n_metrics
        rng = self._rng_factory(rid)

        def noisy(value: float, l1: float, l2: float) -> float:
            if noise.mechanism == "laplace":
                return value + float(rng.laplace(0.0, l1 / eps))
            sigma = l2 * math.sqrt(2 * math.log(1.25 / (noise.delta / n_metrics))) / eps
            return value + float(rng.normal(0.0, sigma))

        metrics["events"] = max(0, round(noisy(metrics["events"], L * M, L * math.sqrt(M))))
        metrics["users"] = max(0, round(noisy(metrics["users"], M, math.sqrt(M))))
        for m in sums:
            fa = self.p.fields[m]
            assert fa.clamp is not None
            bound = max(abs(fa.clamp[0]), abs(fa.clamp[1]))
            sums[m] = noisy(sums[m], L * M * bound, L * math.sqrt(M) * bound)
            counts[m] = max(1, round(noisy(counts[m], L * M, L * math.sqrt(M))))
        for h in hists.values():
            for band_key in h:
                h[band_key] = max(0, round(noisy(h[band_key], L * M, L * math.sqrt(M))))
        return {"mechanism": noise.mechanism, "epsilon": noise.epsilon, "delta": noise.delta}
