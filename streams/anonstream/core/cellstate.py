"""Open-window state: per (cell, privacy unit) contributions as numpy columns.

Each open window keeps rows of (cell, unit, event hash, measures). Compaction sorts them,
drops duplicate event ids, and keeps at most L events per (cell, unit), chosen by smallest
keyed event hash, so the choice does not depend on arrival order, batching or partitioning.
State therefore grows with distinct (unit, cell) pairs of open windows, not with events.
Rows hold only keyed pseudonyms and hashes: nothing here can be reversed without the key.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

# Rows a window takes in before its first compaction (a sort of all its rows): about 10 MB
# of rows per open window buys one sort fewer per 250,000 events; past it, compaction
# keeps a window's rows within twice the compacted size (bounded by people x cells x L).
COMPACT_MIN_ROWS = 250_000


@dataclass
class Rows:
    cell: U64
    unit: U64
    event: U64
    measures: F64  # shape (n, number of measures)

    @staticmethod
    def empty(n_measures: int) -> Rows:
        e = np.empty(0, dtype=np.uint64)
        return Rows(e, e.copy(), e.copy(), np.empty((0, n_measures), dtype=np.float64))

    def __len__(self) -> int:
        return len(self.cell)

    def take(self, idx: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Rows:
        return Rows(self.cell[idx], self.unit[idx], self.event[idx], self.measures[idx])

    @staticmethod
    def concat(parts: list[Rows], n_measures: int) -> Rows:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Rows.empty(n_measures)
        if len(parts) == 1:
            return parts[0]
        return Rows(
            np.concatenate([p.cell for p in parts]),
            np.concatenate([p.unit for p in parts]),
            np.concatenate([p.event for p in parts]),
            np.concatenate([p.measures for p in parts]),
        )

    def nbytes(self) -> int:
        return int(self.cell.nbytes * 3 + self.measures.nbytes)


def group_starts(*keys: U64) -> npt.NDArray[np.bool_]:
    """True at each row that starts a new group of equal keys (rows already sorted)."""
    n = len(keys[0])
    start = np.zeros(n, dtype=bool)
    if n:
        start[0] = True
        for k in keys:
            start[1:] |= k[1:] != k[:-1]
    return start


def rank_in_group(start: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """0, 1, 2, ... within each group of a sorted array, given the group starts."""
    idx = np.arange(len(start), dtype=np.int64)
    first = np.maximum.accumulate(np.where(start, idx, 0))
    return idx - first


@dataclass
class Compaction:
    duplicates: int = 0
    over_limit: int = 0


def compact(rows: Rows, max_events_per_unit_per_cell: int) -> tuple[Rows, Compaction]:
    """Sorted by (cell, unit, event); duplicates removed; at most L events per (cell, unit)."""
    if not len(rows):
        return rows, Compaction()
    order = np.lexsort((rows.event, rows.unit, rows.cell))
    r = rows.take(order)
    dup = ~group_starts(r.cell, r.unit, r.event)
    stats = Compaction(duplicates=int(dup.sum()))
    if stats.duplicates:
        r = r.take(~dup)
    rank = rank_in_group(group_starts(r.cell, r.unit))
    keep = rank < max_events_per_unit_per_cell
    stats.over_limit = int(len(keep) - keep.sum())
    if stats.over_limit:
        r = r.take(keep)
    return r, stats


@dataclass
class WindowState:
    """Everything known about one open window."""

    start_ms: int
    end_ms: int
    n_measures: int
    max_events_per_unit_per_cell: int
    cells: dict[int, tuple[str, ...]] = field(default_factory=dict)
    first_offsets: dict[Hashable, int] = field(default_factory=dict)  # per input partition
    compacted: Rows | None = None
    pending: list[Rows] = field(default_factory=list)
    pending_rows: int = 0
    rows_in: int = 0
    duplicates: int = 0
    over_limit: int = 0

    def add(self, rows: Rows) -> None:
        self.pending.append(rows)
        self.pending_rows += len(rows)
        self.rows_in += len(rows)
        base = len(self.compacted) if self.compacted is not None else 0
        if self.pending_rows > max(COMPACT_MIN_ROWS, base):
            self.compact()

    def compact(self) -> Rows:
        parts = ([self.compacted] if self.compacted is not None else []) + self.pending
        rows, stats = compact(
            Rows.concat(parts, self.n_measures), self.max_events_per_unit_per_cell
        )
        self.duplicates += stats.duplicates
        self.over_limit += stats.over_limit
        self.compacted = rows
        self.pending = []
        self.pending_rows = 0
        return rows

    def merge(self, other: WindowState) -> None:
        """Fold another partial state of the same window into this one."""
        self.cells.update(other.cells)
        for part in ([other.compacted] if other.compacted is not None else []) + other.pending:
            self.add(part)

    def nbytes(self) -> int:
        n = self.compacted.nbytes() if self.compacted is not None else 0
        return n + sum(p.nbytes() for p in self.pending)
