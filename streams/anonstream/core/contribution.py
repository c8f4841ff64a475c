"""Contribution bounds: the `contribution:` section of a pipeline file, and the bounding.

A person may add at most `max_events_per_unit_per_cell` events to one cell and appear in
at most `max_cells_per_unit_per_window` cells of one window. These bounds make every
released number's sensitivity finite (k mode's noise and dp mode's plan read them), and
what exceeds them is dropped by a keyed hash, never by arrival order, so the choice is
the same however events were batched or replayed.

Where each bound is applied: the cells bound is `bound_cells_per_unit` below, on a closed
window; the events bound first in `cellstate.compact` (each finest cell, as rows arrive)
and again in `release.bound_events_per_released_cell` (a cell merged by roll-up), both
with the same rule (keep a person's smallest event hashes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from anonstream.core.cellstate import Rows, group_starts, rank_in_group

U64 = npt.NDArray[np.uint64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True, slots=True)
class Contribution:
    """The `contribution:` section; each field is named after its YAML key."""

    max_events_per_unit_per_cell: int = 10
    max_cells_per_unit_per_window: int = 20

    def describe(self) -> str:
        """The bounds in a sentence, for `anonstream explain`."""
        return (
            f"at most {self.max_events_per_unit_per_cell} events of one person per cell, at "
            f"most {self.max_cells_per_unit_per_window} cells per person per window (excess "
            "dropped by a keyed hash, not by arrival order)"
        )


# The section's keys, with their defaults, in file order.
KEYS: dict[str, Any] = {f.name: f.default for f in fields(Contribution)}


def _mix64(x: U64) -> U64:
    """splitmix64 finaliser: a fixed, well-spread order for deterministic choices."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def bound_cells_per_unit(rows: Rows, max_cells: int) -> tuple[Rows, int]:
    """`max_cells_per_unit_per_window`: keep each unit's rows in at most `max_cells` cells,
    chosen by a hash of (unit, cell) rather than by arrival, so the choice is the same
    however events were batched."""
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
