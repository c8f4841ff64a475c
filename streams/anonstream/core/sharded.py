"""Sharded release of one window: person shards reduce, one merge releases.

The release of a window splits by a keyed hash of the person (the privacy unit's pseudonym,
`shard_of`): each shard holds every row of its persons for the window, so it applies the
dedupe, L events per (cell, person) and M cells per person exactly as single mode does on
the whole window (each bound is per person). Persons are disjoint across shards, so per
finest cell the distinct persons, events, value counts, people with a value, per-person
clipped sums (exact, core/exactsum.py) and the band figures of histograms (values per band,
and how many people have each set of bands) add up over shards (`CellParts`).

A finest cell with at least k persons in one shard has at least k in the window: single mode
releases it on its own (level 0), whatever else happens, and the shard sends only its
figures. Every other cell's bounded rows are sent as they are: roll-up merges only cells
under k, and a cell under k in the window is under k in every shard, so the merge has every
row the roll-up reads. `release_merged` adds the figures, releases the cells that reach k
with them and runs single mode's roll-up (Releaser._cells), L per rolled-up cell and the
records on the rest.

Figures are sent only where the whole release of the window follows from them: a pipeline
with one output, in k mode, over all its dimensions (`figures_path`). A secondary output
counts distinct people over unions of primary cells, and a primary over fewer dimensions
bounds L over several finest cells: there the shards send every bounded row (still exact:
the merge skips no bound, and the bounds are done), which spreads the bounds but not the
release itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from anonstream.core.cellstate import Rows, WindowState, compact, group_starts
from anonstream.core.contribution import _mix64, bound_cells_per_unit
from anonstream.core.exactsum import Exact, exact_sums
from anonstream.core.pipeline import Pipeline
from anonstream.core.release import (
    OutputRelease,
    Releaser,
    _distinct_per_group,
    _Figures,
    band_bits,
    band_walk,
    bound_events_per_released_cell,
)

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
_SHARD_SALT = np.uint64(0x5AD5_1E5E_C0FF_EE01)  # apart from the cells bound's own mixing


def shard_of(units: U64, shards: int) -> I64:
    """Each person's shard: a fixed mix of the keyed pseudonym, so the split does not
    depend on arrival, batching or the worker."""
    return (_mix64(units ^ _SHARD_SALT) % np.uint64(shards)).astype(np.int64)


def figures_path(p: Pipeline) -> bool:
    """Whether shards may send figures for cells with k people (see the module doc)."""
    return (
        len(p.outputs) == 1
        and p.outputs[0].privacy == "k"
        and p.outputs[0].dimensions == p.dimensions
    )


@dataclass
class CellParts:
    """Summable figures of some finest cells over a set of persons no other part has."""

    cells: U64  # cell ids, ascending
    users: I64
    events: I64
    counts: dict[str, I64] = field(default_factory=dict)  # values present
    valued: dict[str, I64] = field(default_factory=dict)  # persons with a value
    sums: dict[str, list[Exact]] = field(default_factory=dict)  # per-person clipped, exact
    bands: dict[str, I64] = field(default_factory=dict)  # (cells, bands): values per band
    # Distinct (cell index, band set) with how many persons have that set in that cell.
    band_cell: dict[str, I64] = field(default_factory=dict)
    band_set: dict[str, I64] = field(default_factory=dict)
    band_n: dict[str, I64] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cells)


def cell_parts(r: Releaser, rows: Rows, g: I64, ids: U64) -> CellParts:
    """The summable figures of the groups `g` (0..len(ids)-1) of `rows`."""
    p, n = r.p, len(ids)
    units = rows.unit
    out = CellParts(ids, _distinct_per_group(g, units, n), np.bincount(g, minlength=n))
    order = np.lexsort((units, g))
    pair_first = group_starts(g[order].astype(np.uint64), units[order])
    pair = np.empty(len(order), dtype=np.int64)
    pair[order] = np.cumsum(pair_first) - 1
    pair_cell = g[order][pair_first]
    n_pairs = len(pair_cell)
    for m in p.measures:
        vals = rows.measures[:, r._col[m]]
        has = ~np.isnan(vals)
        gh, ph = g[has], pair[has]
        out.counts[m] = np.bincount(gh, minlength=n)
        with_value = np.bincount(ph, minlength=n_pairs) > 0
        out.valued[m] = np.bincount(pair_cell[with_value], minlength=n)
        out.sums[m] = exact_sums(r._per_pair(m, vals[has], ph, n_pairs), pair_cell, n)
        if m in p.histograms:
            edges = p.fields[m].edges
            nb = len(edges) + 1
            bands = np.searchsorted(np.asarray(edges), vals[has], side="right")
            out.bands[m] = np.bincount(gh * nb + bands, minlength=n * nb).reshape(n, nb)
            pg, bits = band_bits(gh, bands, units[has])
            out.band_cell[m], out.band_set[m], out.band_n[m] = _count_sets(pg, bits, None)
    return out


def _count_sets(g: I64, bits: I64, n: I64 | None) -> tuple[I64, I64, I64]:
    """(cell, band set) pairs made distinct, with their persons added up."""
    if not len(g):
        e = np.empty(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    both = np.stack([g, bits], axis=1)
    uniq, inv = np.unique(both, axis=0, return_inverse=True)
    weights = np.ones(len(g), dtype=np.int64) if n is None else n
    total = np.bincount(inv.reshape(-1), weights=weights, minlength=len(uniq))
    return uniq[:, 0].copy(), uniq[:, 1].copy(), total.astype(np.int64)


def add_parts(parts: list[CellParts], p: Pipeline) -> CellParts:
    """The figures of the union of disjoint sets of persons, by cell."""
    parts = [x for x in parts if len(x)]
    if len(parts) <= 1:
        return parts[0] if parts else _empty(0, p)
    all_ids = np.concatenate([x.cells for x in parts])
    ids, inv = np.unique(all_ids, return_inverse=True)
    n = len(ids)
    at, pos = [], 0
    for x in parts:
        at.append(inv[pos : pos + len(x)].astype(np.int64))
        pos += len(x)

    def add(arrs: list[I64]) -> I64:
        total = np.zeros(n, dtype=np.int64)
        for a, ix in zip(arrs, at, strict=True):
            np.add.at(total, ix, a)
        return total

    out = CellParts(ids, add([x.users for x in parts]), add([x.events for x in parts]))
    for m in p.measures:
        out.counts[m] = add([x.counts[m] for x in parts])
        out.valued[m] = add([x.valued[m] for x in parts])
        sums: list[Exact] = [0] * n
        for x, ix in zip(parts, at, strict=True):
            for i, s in zip(ix.tolist(), x.sums[m], strict=True):
                sums[i] += s
        out.sums[m] = sums
        if m in p.histograms:
            bands = np.zeros((n, parts[0].bands[m].shape[1]), dtype=np.int64)
            for x, ix in zip(parts, at, strict=True):
                np.add.at(bands, ix, x.bands[m])
            out.bands[m] = bands
            g = np.concatenate([ix[x.band_cell[m]] for x, ix in zip(parts, at, strict=True)])
            bits = np.concatenate([x.band_set[m] for x in parts])
            cnt = np.concatenate([x.band_n[m] for x in parts])
            out.band_cell[m], out.band_set[m], out.band_n[m] = _count_sets(g, bits, cnt)
    return out


@dataclass
class ShardWindow:
    """What one person shard sends the merge for one window (see the module doc)."""

    start_ms: int
    end_ms: int
    names: dict[int, tuple[str, ...]]  # every cell of `big` and `rows`
    big: CellParts | None
    rows: Rows  # bounded rows of the other cells, sorted by (cell, person, event)
    rows_in: int = 0
    duplicates: int = 0
    over_limit: int = 0
    over_cells: int = 0


def reduce_shard(r: Releaser, state: WindowState) -> ShardWindow:
    """One shard's window: every bound applied, cells with k persons as figures."""
    p = r.p
    rows = state.compact()
    bounded, over_cells = bound_cells_per_unit(rows, p.contribution.max_cells_per_unit_per_window)
    big: CellParts | None = None
    if figures_path(p) and len(bounded):
        order = np.lexsort((bounded.unit, bounded.cell))
        if not (order == np.arange(len(order))).all():
            bounded = bounded.take(order)
        starts = group_starts(bounded.cell)
        ids = bounded.cell[starts]
        row_cell = np.cumsum(starts) - 1
        users = _distinct_per_group(row_cell, bounded.unit, len(ids), presorted=True)
        is_big = users >= p.outputs[0].k
        if is_big.any():
            sel = is_big[row_cell]
            new_index = np.cumsum(is_big) - 1
            big = cell_parts(r, bounded.take(sel), new_index[row_cell[sel]], ids[is_big])
            bounded = bounded.take(~sel)
    named = set(np.unique(bounded.cell).tolist())
    if big is not None:
        named.update(big.cells.tolist())
    return ShardWindow(
        state.start_ms, state.end_ms, {c: state.cells[c] for c in sorted(named)}, big,
        bounded, state.rows_in, state.duplicates, state.over_limit, over_cells,
    )  # fmt: skip


def release_merged(r: Releaser, shards: list[ShardWindow]) -> list[OutputRelease]:
    """The window's release from every shard's part: single mode's, record for record."""
    p = r.p
    first = shards[0]
    state = WindowState(
        first.start_ms, first.end_ms, len(p.measures),
        p.contribution.max_events_per_unit_per_cell,
    )  # fmt: skip
    for s in shards:
        state.cells.update(s.names)
    # The union of sorted parts of disjoint persons, sorted again; it drops nothing.
    rows, _ = compact(Rows.concat([s.rows for s in shards], len(p.measures)), 2**62)
    over_cells = sum(s.over_cells for s in shards)
    bigs = [s.big for s in shards if s.big is not None]
    if not bigs:
        # Every bound is done: release() bounds again and drops nothing.
        state.compacted = rows
        results = r.release(state)
    else:
        results = [_release_figures(r, state, rows, add_parts(bigs, p))]
    acc = results[0].accounting
    acc.over_cell_limit = over_cells
    acc.rows_in = sum(s.rows_in for s in shards)
    acc.duplicates = sum(s.duplicates for s in shards)
    acc.over_event_limit += sum(s.over_limit for s in shards)
    return results


def _release_figures(r: Releaser, state: WindowState, rows: Rows, big: CellParts) -> OutputRelease:
    """The primary (and only) output: cells with k people in a shard released with the
    figures added up, the rest as `Releaser.release` does (see `figures_path`)."""
    p, out = r.p, r.p.outputs[0]
    more = dict(zip(big.cells.tolist(), big.users.tolist(), strict=True))
    res, emits = r._cells(state, rows, out, more)
    emits, dropped = bound_events_per_released_cell(
        rows, emits, p.contribution.max_events_per_unit_per_cell, leaves_are_finest=True
    )
    for e, d in zip(emits, dropped, strict=True):
        if e.level:
            res.accounting.rolled_up -= d
        else:
            res.accounting.released -= d
    res.accounting.released += int(big.events.sum())
    res.accounting.over_event_limit = sum(dropped)
    # Figures of every released cell: from its rows here, plus the shards' figures.
    cell_of = np.full(len(rows), -1, dtype=np.int64)
    for i, e in enumerate(emits):
        cell_of[e.idx] = i
    sel = np.flatnonzero(cell_of >= 0)
    n = len(emits)
    here = cell_parts(r, rows.take(sel), cell_of[sel], np.arange(n, dtype=np.uint64))
    big_at = {c: i for i, c in enumerate(big.cells.tolist())}
    key_of = {state.cells[c]: c for c in big.cells.tolist()}
    # The shards' figures renamed to the index of their released cell.
    idx = np.array([big_at[key_of[e.key]] for e in emits if e.key in key_of], dtype=np.int64)
    emit_of = np.array([i for i, e in enumerate(emits) if e.key in key_of], dtype=np.int64)
    moved = _take_parts(big, idx, p)
    moved.cells = emit_of.astype(np.uint64)
    total = add_parts([here, moved], p)
    # add_parts indexes by cell: cells here are 0..n-1, so a released cell with no rows
    # here (all of it in shards) still has its place.
    fig = _figures(r, _pad(total, n, p), np.array([e.users for e in emits], dtype=np.int64))
    for i, e in enumerate(emits):
        r._emit(res, state, out, e.key, int(fig.events[i]), e.users, e.level, fig.cell(i))
    return res


def _take_parts(x: CellParts, idx: I64, p: Pipeline) -> CellParts:
    """The figures of the cells at `idx` (in that order)."""
    out = CellParts(x.cells[idx], x.users[idx], x.events[idx])
    back = np.full(len(x), -1, dtype=np.int64)
    back[idx] = np.arange(len(idx))
    for m in p.measures:
        out.counts[m] = x.counts[m][idx]
        out.valued[m] = x.valued[m][idx]
        out.sums[m] = [x.sums[m][i] for i in idx.tolist()]
        if m in p.histograms:
            out.bands[m] = x.bands[m][idx]
            keep = back[x.band_cell[m]] >= 0
            out.band_cell[m] = back[x.band_cell[m][keep]]
            out.band_set[m] = x.band_set[m][keep]
            out.band_n[m] = x.band_n[m][keep]
    return out


def _pad(x: CellParts, n: int, p: Pipeline) -> CellParts:
    """Figures of cells 0..n-1 (ids are indexes), zero where a cell has none."""
    if len(x) == n:
        return x
    return add_parts([_empty(n, p), x], p)


def _empty(n: int, p: Pipeline) -> CellParts:
    """Zero figures of cells 0..n-1."""
    empty = CellParts(np.arange(n, dtype=np.uint64), np.zeros(n, np.int64), np.zeros(n, np.int64))
    for m in p.measures:
        empty.counts[m] = np.zeros(n, np.int64)
        empty.valued[m] = np.zeros(n, np.int64)
        empty.sums[m] = [0] * n
        if m in p.histograms:
            empty.bands[m] = np.zeros((n, len(p.fields[m].edges) + 1), np.int64)
            e = np.empty(0, np.int64)
            empty.band_cell[m], empty.band_set[m], empty.band_n[m] = e, e.copy(), e.copy()
    return empty


def _figures(r: Releaser, x: CellParts, users: I64) -> _Figures:
    """Released figures (withheld, rounded sums, histograms) from summed parts."""
    p = r.p
    k = p.outputs[0].k
    n = len(x)
    fig = _Figures(np.empty(0, dtype=np.int64), x.events, users)
    for m in p.measures:
        fig.withheld[m] = x.valued[m] < k
        fig.counts[m] = x.counts[m]
        fig.sums[m] = np.array([float(s) for s in x.sums[m]], dtype=np.float64)
        if m in p.histograms:
            edges = p.fields[m].edges
            fig.edges[m] = edges
            hists = band_walk(x.bands[m], x.band_cell[m], x.band_set[m], x.band_n[m], edges, k)
            fig.hists[m] = [None if fig.withheld[m][i] else hists[i] for i in range(n)]
    return fig
