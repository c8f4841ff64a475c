"""The merge topic's records (the sharded release, runtime/shardstages.py): what a shard
stage sends a merge stage, written by one and read by the other, kept together here.

A record is a mark (the shard has closed every window ending at or before `closed_until`,
with its counters for the summaries) or a window's part (`core/sharded.ShardWindow`: the
bounded rows of its small cells and the summable figures of its cells with k people).
Binary like the partials: magic, version, a JSON header (names, counts, exact sums as
strings), then numpy columns. A record that is not well formed raises ShardRecordError,
whose message never quotes the record's content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import orjson

from anonstream.core.cellstate import Rows
from anonstream.core.exactsum import Exact
from anonstream.core.pipeline import Pipeline
from anonstream.core.sharded import CellParts, ShardWindow

SHARD_VERSION = 1
_MAGIC = b"ASSH"
_HEAD = struct.Struct("<4sHI")


class ShardRecordError(ValueError):
    """A merge record that is not well formed: skipped and counted, as partials are."""


@dataclass
class ShardRecord:
    """What a shard sends a merge partition: its mark (closed until), its counters for
    the summaries, and a window's part (or none: a mark alone)."""

    shard: int
    closed_until: int
    part: ShardWindow | None = None
    late_for: dict[int, int] = field(default_factory=dict)  # target window -> events
    rejected_for: dict[int, int] = field(default_factory=dict)
    late: int = 0  # without a target: the next summary
    rejected: int = 0
    end: bool = False  # end of input (--stop-at-end): the shard has released everything


def _exact_str(x: Exact) -> str:
    return str(x)


def _exact(x: Any) -> Exact:
    if not isinstance(x, str):
        raise ShardRecordError("a merge record whose sum is not a string")
    try:
        f = Fraction(x)
    except (ValueError, ZeroDivisionError):
        raise ShardRecordError("a merge record whose sum is not a number") from None
    return int(f) if f.denominator == 1 else f


def encode_shard(r: ShardRecord, p: Pipeline) -> bytes:
    head: dict[str, Any] = {
        "shard": r.shard, "closed": r.closed_until, "late": r.late, "rejected": r.rejected,
        "end": r.end,
        "late_for": [[t, n] for t, n in sorted(r.late_for.items())],
        "rejected_for": [[t, n] for t, n in sorted(r.rejected_for.items())],
    }  # fmt: skip
    arrays: list[np.ndarray[Any, Any]] = []
    w = r.part
    if w is not None:
        b = w.big
        head["part"] = {
            "start": w.start_ms, "end": w.end_ms,
            "names": [[c, list(d)] for c, d in w.names.items()],
            "rows": len(w.rows), "in": w.rows_in, "dup": w.duplicates, "over": w.over_limit,
            "over_cells": w.over_cells, "big": None if b is None else len(b),
        }  # fmt: skip
        arrays += [w.rows.cell, w.rows.unit, w.rows.event, w.rows.measures]
        if b is not None:
            arrays += [b.cells, b.users, b.events]
            sums: dict[str, list[str]] = {}
            sets: dict[str, int] = {}
            for m in p.measures:
                arrays += [b.counts[m], b.valued[m]]
                sums[m] = [_exact_str(x) for x in b.sums[m]]
                if m in p.histograms:
                    arrays += [b.bands[m], b.band_cell[m], b.band_set[m], b.band_n[m]]
                    sets[m] = len(b.band_cell[m])
            head["part"]["sums"] = sums
            head["part"]["sets"] = sets
    header = orjson.dumps(head)
    payload = [np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays]
    return b"".join([_HEAD.pack(_MAGIC, SHARD_VERSION, len(header)), header, *payload])


def decode_shard(raw: bytes, p: Pipeline) -> ShardRecord:
    """A merge record; one that is not well formed raises ShardRecordError (without its
    content)."""
    if len(raw) < _HEAD.size:
        raise ShardRecordError("not a merge record")
    magic, version, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC or version != SHARD_VERSION or _HEAD.size + n > len(raw):
        raise ShardRecordError("not a merge record of this version")
    try:
        head = orjson.loads(raw[_HEAD.size : _HEAD.size + n])
        pos = _HEAD.size + n

        def take(dtype: str, count: int, shape: tuple[int, ...] | None = None) -> Any:
            nonlocal pos
            size = np.dtype(dtype).itemsize * count
            if pos + size > len(raw):
                raise ShardRecordError("a merge record, truncated")
            a = np.frombuffer(raw, dtype=dtype, count=count, offset=pos).astype(dtype[1:])
            pos += size
            return a.reshape(shape) if shape is not None else a

        rec = ShardRecord(
            int(head["shard"]), int(head["closed"]), None,
            {int(t): int(c) for t, c in head["late_for"]},
            {int(t): int(c) for t, c in head["rejected_for"]},
            int(head["late"]), int(head["rejected"]), head["end"] is True,
        )  # fmt: skip
        h = head.get("part")
        if h is not None:
            nm, nr = len(p.measures), int(h["rows"])
            rows = Rows(take("<u8", nr), take("<u8", nr), take("<u8", nr),
                        take("<f8", nr * nm, (nr, nm)))  # fmt: skip
            big = None
            if h["big"] is not None:
                nb = int(h["big"])
                big = CellParts(take("<u8", nb), take("<i8", nb), take("<i8", nb))
                for m in p.measures:
                    big.counts[m], big.valued[m] = take("<i8", nb), take("<i8", nb)
                    big.sums[m] = [_exact(x) for x in h["sums"][m]]
                    if len(big.sums[m]) != nb:
                        raise ShardRecordError("a merge record whose sums do not agree")
                    if m in p.histograms:
                        bands = len(p.fields[m].edges) + 1
                        ns = int(h["sets"][m])
                        big.bands[m] = take("<i8", nb * bands, (nb, bands))
                        big.band_cell[m] = take("<i8", ns)
                        big.band_set[m], big.band_n[m] = take("<i8", ns), take("<i8", ns)
                        if ns and (big.band_cell[m].min() < 0 or big.band_cell[m].max() >= nb):
                            raise ShardRecordError("a merge record whose bands do not agree")
            names = {int(c): tuple(str(x) for x in d) for c, d in h["names"]}
            rec.part = ShardWindow(
                int(h["start"]), int(h["end"]), names, big, rows, int(h["in"]), int(h["dup"]),
                int(h["over"]), int(h["over_cells"]),
            )  # fmt: skip
            cells = set(rows.cell.tolist()) | set(big.cells.tolist() if big else [])
            if not cells <= names.keys():
                raise ShardRecordError("a merge record with a cell it does not name")
        if pos != len(raw):
            raise ShardRecordError("a merge record of the wrong length")
        return rec
    except ShardRecordError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError):
        raise ShardRecordError("a merge record of the wrong shape") from None
