"""Scale-out: several workers, one global k.

With several workers in one consumer group each sees only some input partitions, so the
people of one cell are spread over workers and a k checked per worker would be wrong. In
scale-out mode every worker runs two stages over one consumer (and one transaction):

- ingest: raw partitions -> decode + policy -> per batch and window, the batch's partial
  state of that window (see `WindowPartial`) -> the partials topic, partitioned by window,
  so all partial state of a window meets in one place. Each batch also tells every partials
  partition how far each raw partition has got (its event-time progress), which drives the
  watermark downstream. Ingest holds no state: its offsets are committed in the same
  transaction as its partials.
- release: partials partitions -> the engine's windows, watermark and release rules, as in
  single mode, with the same checkpoints in the offsets' metadata.

Pre-aggregation and the contribution bounds. A window's release depends on its rows only
through their compaction (duplicates by keyed event hash dropped, at most L events per
(cell, person): the L smallest event hashes) and then the bound of M cells per person (the
M cells of smallest keyed (person, cell) priority). Both choices are by hash, never by
arrival, and both keep a subset that is determined pairwise, so each batch can apply
them to its own rows without changing the outcome on the union:

- dedupe and L per (cell, person) are applied at ingest: an event among the L smallest
  distinct hashes of the union is among the L smallest of its batch. The release compacts
  the union again (a duplicate or the (L+1)-th event can come from two batches).
- M cells per person is NOT applied at ingest: a batch-local top M would be exact too (a
  cell in the global top M is in the top M of any subset it is in), but it costs one more
  sort per batch and drops rows only for people with over M cells in one batch. It is
  applied at release, on the whole window, as in single mode.
- L per (released cell, person) of merged (rolled-up) cells needs the events themselves (the
  L smallest hashes over several cells), so partials keep rows, not sums: (cell, person,
  event hash, measures), at most L per (cell, person) and batch, columnar and binary.
  Counts, clamped sums, value counts and band bits are derived from them at release,
  exactly as in single mode (docs/architecture.md, scale-out).

Partials carry keyed pseudonyms, keyed cell ids and keyed hashes only, never a raw
identifier; the cell names are generalised dimension values, as released. Still, treat the
partials topic as internal (pseudonymous data, not for partners).

Why this module is long: the versioned partials record is written by the ingest stage and
read by the release stage, and both sides of it are kept together here.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.budget import period_of
from anonstream.core.cellstate import Rows, WindowState, compact, group_starts
from anonstream.core.checkpoint import Checkpoint
from anonstream.core.columns import Columns
from anonstream.core.decode import MAX_TS_MS, MIN_TS_MS
from anonstream.core.engine import PipelineEngine
from anonstream.core.pipeline import Pipeline
from anonstream.core.sharded import shard_of
from anonstream.core.step import Batch, StepResult
from anonstream.core.windows import NEG_INF, window_starts_array, window_units

# 1: JSON, one row per event (dims by name, window per row).
# 2: binary, per window the batch's compacted rows (see WindowPartial and encode_partial).
PARTIALS_VERSION = 2
READS_VERSIONS = (1, 2)
_MAGIC = b"ASPT"
_HEAD = struct.Struct("<4sHI")  # magic, version, header length; then header JSON, payload
_CELL_CACHE_MAX = 500_000
_NAMED_WINDOWS = 256  # (partials partition, window) pairs whose named cells are remembered

U64 = npt.NDArray[np.uint64]

log = logging.getLogger("anonstream.worker")


class PartialsVersionError(ValueError):
    """A partials record this release stage cannot read (a newer worker wrote it)."""


class PartialsRecordError(ValueError):
    """A partials record that is not well formed (corrupt, or not written by a worker): the
    release stage skips it and counts it (`partials_rejected`), see ReleaseStage."""


def partials_topic(group_id: str, pipeline: str) -> str:
    return f"anonstream.partials.{group_id}.{pipeline}"


def partials_partition(pipeline: Pipeline, start_ms: int, partitions: int) -> int:
    """The partials partition of a window, for its rows and for the events counted in its
    summary (late, rejected): by window, so windows spread over the release stages; for a
    pipeline with a dp budget, by privacy period (core/budget.period_of), so that one
    release stage at a time spends a period's budget (docs/privacy-model.md, scale-out)."""
    if pipeline.dp_budget is not None:
        return (period_of(start_ms, pipeline.rotation_ms) // pipeline.rotation_ms) % partitions
    return (start_ms // pipeline.window.step_ms) % partitions


@dataclass(frozen=True, slots=True)
class Progress:
    """A raw partition's progress as its owner reports it: highest event time read, when
    it last had data and when this was said (the owner's clock). `end`: the owner has read
    the partition to the end offset it saw at start (`--stop-at-end`), so every partial of
    it is before this record in each partials partition (see `IngestStage.end_of_input`)."""

    topic: str
    partition: int
    max_ts: int
    data_ms: int
    sent_ms: int
    end: bool = False


@dataclass(frozen=True, slots=True)
class WindowPartial:
    """One batch's share of one window, compacted: rows sorted by (cell, person, event),
    no duplicate (cell, person, event), at most L events per (cell, person).

    `first_events` counts the batch's accepted events whose first window this is (before
    compaction): if the window is already released when this arrives, they are the late
    events, counted once per event as single mode counts them. `rows_in`, `duplicates` and
    `over_limit` are the rows before compaction and those it dropped, so the window's
    accounting still adds up."""

    start_ms: int
    cells: U64  # distinct cell ids, ascending
    # Dimension values of the cells this record names: each cell is named in the first
    # record its ingest sends the window's partials partition (see IngestStage._name_once).
    names: dict[int, tuple[str, ...]]
    cell_rows: npt.NDArray[np.int64]  # rows of each cell
    unit: U64
    event: U64
    measures: npt.NDArray[np.float64]  # (rows, measures)
    first_events: int = 0
    rows_in: int = 0
    duplicates: int = 0
    over_limit: int = 0

    def rows(self) -> Rows:
        return Rows(np.repeat(self.cells, self.cell_rows), self.unit, self.event, self.measures)

    def __len__(self) -> int:
        return len(self.unit)


@dataclass(frozen=True, slots=True)
class Partial:
    """One partials record: what one ingest batch sends one partials partition."""

    progress: list[Progress] = field(default_factory=list)
    rejected: int = 0  # rejections without a target window: for the next summary
    windows: list[WindowPartial] = field(default_factory=list)
    # The summaries' counters by target window (PipelineEngine.targets), sent to the
    # target's partials partition: rejections, [target, n]; and every accepted event of the
    # batch, [first window, target, n], late there if its first window is already released.
    # None: a writer that sent no targets (its late events count in the next summary).
    rejected_for: list[tuple[int, int]] = field(default_factory=list)
    late: list[tuple[int, int, int]] | None = None


def encode_partial(p: Partial) -> bytes:
    """Header (magic, version, JSON length), JSON header, then each window's arrays in
    order: cell ids (u64), rows per cell (i64), persons (u64), events (u64), measures (f64,
    row-major)."""
    head: dict[str, Any] = {"progress": [
        [x.topic, x.partition, x.max_ts, x.data_ms, x.sent_ms] for x in p.progress
    ]}  # fmt: skip
    # The end-of-input marks, by index into "progress": a key of its own, optional, so
    # that a version 2 reader from before it ignores it (it never ends on it, and needs
    # not: it had no --stop-at-end in scale-out), and a record without it has no mark.
    ended = [i for i, x in enumerate(p.progress) if x.end]
    if ended:
        head["ended"] = ended
    if p.rejected:
        head["rejected"] = p.rejected
    if p.rejected_for:
        head["rejected_for"] = [list(x) for x in p.rejected_for]
    if p.late is not None:
        head["late"] = [list(x) for x in p.late]
    payload: list[bytes] = []
    if p.windows:
        head["windows"] = [
            {
                "start": w.start_ms,
                "cells": len(w.cells),
                "rows": len(w),
                "m": int(w.measures.shape[1]),
                "first": w.first_events,
                "in": w.rows_in,
                "dup": w.duplicates,
                "over": w.over_limit,
                "named": [i for i, c in enumerate(w.cells.tolist()) if c in w.names],
                "names": list(w.names.values()),
            }
            for w in p.windows
        ]
        for w in p.windows:
            payload += [
                w.cells.astype("<u8").tobytes(), w.cell_rows.astype("<i8").tobytes(),
                w.unit.astype("<u8").tobytes(), w.event.astype("<u8").tobytes(),
                w.measures.astype("<f8").tobytes(),
            ]  # fmt: skip
    header = orjson.dumps(head)
    return b"".join([_HEAD.pack(_MAGIC, PARTIALS_VERSION, len(header)), header, *payload])


def decode_partial(raw: bytes) -> Partial:
    """A version 2 record; a version 1 record (JSON) or one of an unknown version raises
    PartialsVersionError (the release stage reads version 1 on its own path). A record of
    this version that is not well formed (truncated, counts that do not add up, numbers out
    of range, a named cell that is not there) raises PartialsRecordError, whose message
    never quotes the record's content."""
    if len(raw) < _HEAD.size:
        raise PartialsRecordError(f"not a partials record ({len(raw)} bytes)")
    magic, version, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC:
        raise PartialsRecordError("not a partials record (no magic)")
    if version != PARTIALS_VERSION:
        raise PartialsVersionError(
            f"partials format version {version}; this worker reads versions "
            f"{', '.join(map(str, READS_VERSIONS))}: a newer worker wrote it. Upgrade every "
            "worker of the group before the new version writes partials."
        )
    if _HEAD.size + n > len(raw):
        raise PartialsRecordError(f"a partials record of {len(raw)} bytes, truncated header")
    try:
        head = orjson.loads(raw[_HEAD.size : _HEAD.size + n])
    except orjson.JSONDecodeError:
        raise PartialsRecordError("a partials record whose header is not JSON") from None
    if not isinstance(head, dict):
        raise PartialsRecordError("a partials record whose header is not an object")
    pos = _HEAD.size + n
    buf = memoryview(raw)

    def take(dtype: str, count: int) -> Any:
        nonlocal pos
        if pos + 8 * count > len(raw):
            raise PartialsRecordError(f"a partials record of {len(raw)} bytes, truncated")
        a = np.frombuffer(buf, dtype=dtype, count=count, offset=pos)
        pos += 8 * count
        return a.astype(dtype[1:]) if a.dtype.byteorder not in "=|" else a

    windows = []
    for h in _list(head.get("windows", []), "windows"):
        if not isinstance(h, dict):
            raise PartialsRecordError("a partials window that is not an object")
        nc, nr, m = (_count(h.get(k), k) for k in ("cells", "rows", "m"))
        named = [_count(i, "named") for i in _list(h.get("named", []), "named")]
        names = _list(h.get("names", []), "names")
        if len(named) != len(names) or any(i >= nc for i in named):
            raise PartialsRecordError("a partials window names cells it does not have")
        if not all(isinstance(x, list) and all(isinstance(v, str) for v in x) for x in names):
            raise PartialsRecordError("a partials window with a cell name that is not strings")
        cells, counts = take("<u8", nc), take("<i8", nc)
        if (counts < 1).any() or int(counts.sum()) != nr or (np.diff(cells) <= 0).any():
            raise PartialsRecordError("a partials window whose cells and rows do not agree")
        unit, event = take("<u8", nr), take("<u8", nr)
        measures = take("<f8", nr * m).reshape(nr, m)
        windows.append(WindowPartial(
            _int(h.get("start"), "start", MIN_TS_MS - _WEEK_MS, MAX_TS_MS), cells,
            {int(cells[i]): tuple(x) for i, x in zip(named, names, strict=True)},
            counts, unit, event, measures,
            _count(h.get("first", 0), "first"), _count(h.get("in", nr), "in"),
            _count(h.get("dup", 0), "dup"), _count(h.get("over", 0), "over"),
        ))  # fmt: skip
    if pos != len(raw):
        raise PartialsRecordError(f"a partials record of {len(raw)} bytes, {pos} expected")
    progress = []
    for x in _list(head.get("progress", []), "progress"):
        if not isinstance(x, list) or len(x) != 5 or not isinstance(x[0], str):
            raise PartialsRecordError("a partials progress entry of the wrong shape")
        t, p, ts, d, s = x
        progress.append(Progress(
            t, _count(p, "partition"), _int(ts, "max_ts", NEG_INF, MAX_TS_MS),
            _int(d, "data_ms", 0, MAX_TS_MS), _int(s, "sent_ms", 0, MAX_TS_MS),
        ))  # fmt: skip
    for i in _list(head.get("ended", []), "ended"):
        if _count(i, "ended") >= len(progress):
            raise PartialsRecordError("a partials end mark for progress it does not have")
        progress[i] = replace(progress[i], end=True)
    rejected_for = []
    for x in _list(head.get("rejected_for", []), "rejected_for"):
        if not isinstance(x, list) or len(x) != 2:
            raise PartialsRecordError("a partials rejected_for entry of the wrong shape")
        rejected_for.append((_window_start(x[0]), _count(x[1], "rejected_for")))
    late: list[tuple[int, int, int]] | None = None
    if head.get("late") is not None:
        late = []
        for x in _list(head["late"], "late"):
            if not isinstance(x, list) or len(x) != 3:
                raise PartialsRecordError("a partials late entry of the wrong shape")
            late.append((_window_start(x[0]), _window_start(x[1]), _count(x[2], "late")))
    return Partial(
        progress, _count(head.get("rejected", 0), "rejected"), windows, rejected_for, late
    )


_WEEK_MS = 7 * 86_400_000  # the longest window
_COUNT_MAX = 2**53  # counts beyond this are no batch's


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise PartialsRecordError(f"a partials record whose {what} is not a list")
    return x


def _int(x: Any, what: str, lo: int, hi: int) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise PartialsRecordError(f"a partials record whose {what} is not an integer in range")
    return x


def _count(x: Any, what: str) -> int:
    return _int(x, what, 0, _COUNT_MAX)


def _window_start(x: Any) -> int:
    return _int(x, "window start", MIN_TS_MS - _WEEK_MS, MAX_TS_MS)


def window_partials(
    engine: PipelineEngine,
    cols: Columns,
    cell: U64,
    cell_dims: dict[int, tuple[str, ...]],
    shards: int = 0,
) -> list[tuple[int, WindowPartial]]:
    """A batch's accepted events (`cell`: each one's cell id) as one compacted partial
    per window they fall in, each with its shard (`shards`: the persons' shards, see
    core/sharded.shard_of: one partial per window and shard; 0: not sharded, shard 0)."""
    p = engine.pipeline
    spec = p.window
    L = p.contribution.max_events_per_unit_per_cell
    starts = window_starts_array(spec, cols.ts)
    out: list[tuple[int, WindowPartial]] = []
    for j in range(starts.shape[1]):
        col = starts[:, j]
        units = window_units(cols.unit, cols.earlier_unit, cols.ts, col, p.rotation_ms)
        lo, hi = int(col.min()), int(col.max())
        for start in [lo] if lo == hi else np.unique(col).tolist():
            if lo == hi:
                rows = Rows(cell, units, cols.event, cols.measures)
            else:
                sel = col == start
                rows = Rows(cell[sel], units[sel], cols.event[sel], cols.measures[sel])
            if shards:
                # Compaction is per (cell, person): each shard's share compacts alone.
                of = shard_of(rows.unit, shards)
                split = [(s, rows.take(of == s)) for s in np.unique(of).tolist()]
            else:
                split = [(0, rows)]
            for shard, mine in split:
                out.append((shard, _partial(start, mine, j == 0, L, cell_dims)))
    return out


def _partial(
    start: int, rows: Rows, first: bool, L: int, cell_dims: dict[int, tuple[str, ...]]
) -> WindowPartial:
    n_in = len(rows)
    rows, stats = compact(rows, L)
    cell_starts = group_starts(rows.cell)
    ids = rows.cell[cell_starts]
    counts = np.diff(np.append(np.flatnonzero(cell_starts), len(rows)))
    # An event is late (if at all) in its first window: column 0 of `starts`.
    return WindowPartial(
        start, ids, {c: cell_dims[c] for c in ids.tolist()}, counts.astype(np.int64),
        rows.unit, rows.event, rows.measures, n_in if first else 0, n_in, stats.duplicates,
        stats.over_limit,
    )  # fmt: skip


class IngestStage:
    """Decode and policy for the raw partitions this worker owns; rows go to partials."""

    def __init__(
        self, engine: PipelineEngine, topic: str, partitions: int, *, sharded: bool = False
    ) -> None:
        self.engine = engine
        # Sharded release (runtime/shardstages.py): rows by person shard, one per partition.
        self.sharded = sharded
        self.pipeline = engine.pipeline
        self.topic = topic
        self.partitions = partitions
        # Per owned raw partition: highest event time read, and when data last came.
        self._max_ts: dict[Hashable, int] = {}
        self._last_data: dict[Hashable, int] = {}
        self._cells: dict[tuple[str, ...], int] = {}
        self._dims: dict[int, tuple[str, ...]] = {}
        self._named: dict[tuple[int, int], set[int]] = {}  # (partials partition, window)
        self._named_total = 0
        self._ended: set[Hashable] = set()  # owned raw partitions read to their end offset

    @property
    def input_topic(self) -> str:
        return self.engine.input_topic

    def process_batch(self, batch: Batch) -> StepResult:
        cols, again, result = self.engine.ingest(batch)
        progress: list[Progress] = []
        by_partition: dict[int, list[WindowPartial]] = {}
        now = self.engine.clock_ms()
        rejected_for, late = self._by_target(batch, cols, again)
        if len(cols):
            cpidx = batch.pidx[cols.index]
            for i in np.unique(cpidx).tolist():
                key = batch.part_of[i]
                topic, partition = cast(tuple[str, int], key)
                ts = max(int(cols.ts[cpidx == i].max()), self._max_ts.get(key, NEG_INF))
                self._max_ts[key] = ts
                self._last_data[key] = now
                progress.append(Progress(topic, partition, ts, now, now))
            shards = self.partitions if self.sharded else 0
            for shard, wp in window_partials(
                self.engine, cols, self._cell_ids(cols), self._dims, shards
            ):
                p = shard if self.sharded else self._partition(wp.start_ms)
                by_partition.setdefault(p, []).append(self._name_once(p, wp))
        for p in range(self.partitions):
            windows = by_partition.get(p, [])
            rej_for, late_for = rejected_for.get(p, []), late.get(p, [])
            if not windows and not progress and not rej_for and not late_for:
                continue
            value = encode_partial(Partial(progress, 0, windows, rej_for, late_for))
            result.forward.append((self.topic, p, b"", value))
        return result

    def _by_target(
        self, batch: Batch, cols: Columns, again: npt.NDArray[np.bool_]
    ) -> tuple[dict[int, list[tuple[int, int]]], dict[int, list[tuple[int, int, int]]]]:
        """The batch's rejections by target window, and its accepted events by (first
        window, target window), each for its target's partials partition: there the
        summaries count them, as single mode does (PipelineEngine.targets)."""
        target = self.engine.targets(batch, cols)
        rejected = np.ones(len(batch.pidx), dtype=bool)
        rejected[cols.index] = False
        rejected &= ~again
        # Rejections before their partition's first accepted event wait for its target.
        no_target = rejected & (target == NEG_INF)
        for i in np.unique(batch.pidx[no_target]).tolist():
            self.engine.held_rejected[batch.part_of[i]] += int(
                (no_target & (batch.pidx == i)).sum()
            )
        due = Counter(target[rejected & ~no_target].tolist())
        for _, t, n in self.engine.settle_held(batch, target):
            due[t] += n
        rejected_for: dict[int, list[tuple[int, int]]] = {}
        for t, n in sorted(due.items()):
            rejected_for.setdefault(self._partition(t), []).append((t, n))
        late: dict[int, list[tuple[int, int, int]]] = {}
        if len(cols):
            first = window_starts_array(self.pipeline.window, cols.ts)[:, 0]
            pairs = np.stack([first, target[cols.index]], axis=1)  # vectorised: a hot path
            uniq, counts = np.unique(pairs, axis=0, return_counts=True)
            for (x, t), n in zip(uniq.tolist(), counts.tolist(), strict=True):
                late.setdefault(self._partition(t), []).append((x, t, n))
        return rejected_for, late

    def _partition(self, start_ms: int) -> int:
        return partials_partition(self.pipeline, start_ms, self.partitions)

    def _name_once(self, p: int, wp: WindowPartial) -> WindowPartial:
        """Name each cell only in the first record this stage sends partition `p` for the
        window: a release stage re-reads every record of an open window after a restart
        (from the window's first offset), so the name is always read before it is needed.
        Forgetting what was named only names a cell again; engines (and so this) are new
        after every rebalance or producer restart, with the transaction that sent them."""
        named = self._named.get((p, wp.start_ms))
        if named is None:
            if len(self._named) >= _NAMED_WINDOWS or self._named_total > _CELL_CACHE_MAX:
                self._named.clear()
                self._named_total = 0
            named = self._named[(p, wp.start_ms)] = set()
        new = {c: d for c, d in wp.names.items() if c not in named}
        named.update(new)
        self._named_total += len(new)
        return replace(wp, names=new)

    def _cell_ids(self, cols: Columns) -> U64:
        """Each event's cell id: the keyed hash the release engine would give its cell."""
        cache, dims = self._cells, self._dims
        if len(cache) > _CELL_CACHE_MAX:  # bound memory; partials carry their cells' names
            cache.clear()
            dims.clear()
        ids = list(map(cache.get, cols.dims))
        if None in ids:
            for j in [j for j, c in enumerate(ids) if c is None]:
                d = cols.dims[j]
                c = cache.get(d)
                if c is None:
                    c = cache[d] = self.engine.cell_id(d)
                    dims[c] = d
                ids[j] = c
        return np.array(ids, dtype=np.uint64)

    # Ingest is stateless: its committed offset is simply the next one to read.
    def safe_offset(self, partition: Hashable) -> int | None:
        return self.engine.next_offset(partition)

    def checkpoint(self, partition: Hashable) -> Checkpoint | None:
        return None

    def restore(self, partition: Hashable, checkpoint: Checkpoint) -> None:
        return None

    def set_sources(self, sources: Sequence[Hashable]) -> None:
        return None  # it reads the raw partitions it owns

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        return None  # idleness is the release stage's call, from this stage's heartbeats

    @property
    def late_events(self) -> int:
        return 0  # lateness is decided at release

    def assign(self, partitions: list[Hashable]) -> None:
        now = self.engine.clock_ms()
        for p in partitions:
            self._last_data.setdefault(p, now)

    def busy(self, partition: Hashable) -> None:
        """Unread data waits in this raw partition: it has data, whatever the clock says."""
        if partition in self._last_data:
            self._last_data[partition] = self.engine.clock_ms()

    def forget(self, partition: Hashable) -> None:
        self.engine.forget(partition)
        self._max_ts.pop(partition, None)
        self._last_data.pop(partition, None)
        self._ended.discard(partition)

    # -- end of input (--stop-at-end) ---------------------------------------------------------
    def end_of_input(self, partitions: Sequence[Hashable]) -> StepResult:
        """These owned raw partitions are read to the end offset seen at start: tell every
        partials partition, after all their partials (same producer, same or a later
        transaction), with their rejections still waiting for a target (as `close_all`).
        Said once per stage; `tick` says it again each second, for a release stage that
        restarts (its committed offset may be past the first mark) while this one runs. A
        new owner (a rebalance builds new stages) says it again from the committed offset."""
        new = [p for p in partitions if p not in self._ended]
        if not new:
            return StepResult()
        self._ended.update(new)
        held = sum(self.engine.held_rejected.pop(p, 0) for p in new)
        now = self.engine.clock_ms()
        marks = [self._progress(p, now) for p in new]
        result = StepResult()
        for p in range(self.partitions):
            doc = encode_partial(Partial(marks, held if p == 0 else 0))
            result.forward.append((self.topic, p, b"", doc))
        return result

    @property
    def done(self) -> bool:
        """Every owned raw partition has said its end (a stage owning none is done)."""
        return all(p in self._ended for p in self._last_data)

    def _progress(self, key: Hashable, now: int) -> Progress:
        topic, partition = cast(tuple[str, int], key)
        last = self._last_data.get(key, now)
        return Progress(
            topic, partition, self._max_ts.get(key, NEG_INF), last, now, key in self._ended
        )

    def tick(self) -> StepResult:
        """A heartbeat for every owned raw partition, data or not: downstream, a partition
        is idle only when its live owner says it has had no data for a while; a partition
        whose owner is dead holds the watermark until a new owner reports."""
        result = StepResult()
        if not self._last_data:
            return result
        now = self.engine.clock_ms()
        beat = [self._progress(key, now) for key in self._last_data]
        doc = encode_partial(Partial(beat))
        for p in range(self.partitions):
            result.forward.append((self.topic, p, b"", doc))
        return result

    def close_all(self) -> StepResult:
        """End of input: rejections still waiting for a target count in the next summary."""
        result = StepResult()
        held = sum(self.engine.held_rejected.values())
        self.engine.held_rejected.clear()
        if held:
            result.forward.append((self.topic, 0, b"", encode_partial(Partial(rejected=held))))
        return result


class ReleaseStage:
    """Windows, watermark and release rules over the partials of the windows it owns.

    One engine per partials partition: a partition's stream carries its windows' rows and,
    in the same order, every raw partition's progress, so each partition's watermark is
    exact whatever order the consumer interleaves partitions in, and a partition moves
    between workers with nothing of it left behind.
    """

    def __init__(
        self,
        factory: Callable[[], PipelineEngine],
        pipeline: Pipeline,
        topic: str,
        partitions: int,
    ) -> None:
        self.factory = factory
        self.engines: dict[Hashable, PipelineEngine] = {}
        self.pipeline = pipeline  # engines are made per partition, on assignment
        self.topic = topic
        self.partitions = partitions
        self.sources: list[Hashable] = []  # every raw partition: each holds the watermark
        # --stop-at-end: per partials partition, the raw partitions that said their end, and
        # the partitions whose windows are all released on it (see _end_if_all_ended).
        self.ended: dict[Hashable, set[Hashable]] = {}
        self.finished: set[Hashable] = set()

    @property
    def input_topic(self) -> str:
        return self.topic

    def _engine(self, partition: Hashable) -> PipelineEngine:
        e = self.engines.get(partition)
        if e is None:
            e = self.engines[partition] = self.factory()
            e.assign(self.sources, hold=True)
        return e

    def process_batch(self, batch: Batch) -> StepResult:
        result = StepResult()
        for i, part in enumerate(batch.part_of):
            mine = np.flatnonzero(batch.pidx == i)
            if len(mine):
                values = [batch.values[j] for j in mine.tolist()]
                result.extend(self._process_partition(part, values, batch.offs[mine]))
        return result

    def _process_partition(
        self, part: Hashable, values: list[bytes], offs: npt.NDArray[np.int64]
    ) -> StepResult:
        e = self._engine(part)
        result = StepResult()
        # One record at a time, as single mode takes one batch: its rows, then its
        # progress, then the windows that progress closes. So what is late, and which
        # summary counts it, does not depend on how many records one fetch brings.
        for k, raw in enumerate(values):
            progress: dict[Hashable, tuple[int, int, int]] = {}
            offset = int(offs[k])
            again = e.replayed(part, offset)
            rec: Partial | None = None
            try:
                if raw[:1] == b"{":  # version 1, from a worker not upgraded yet
                    self._add_v1(e, part, raw, offset, again, progress)
                else:
                    rec = decode_partial(raw)
                    self._check(e, rec)
            except PartialsRecordError as exc:
                # Dropping a record's rows only takes people out of its windows (k holds);
                # stopping would stop every release of this partition, restart after
                # restart, on the same record.
                if not again:
                    e.counters["partials_rejected"] += 1
                    log.warning(
                        "%s: skipped a partials record (partition %s, offset %d): %s",
                        self.topic, part, offset, exc,
                    )  # fmt: skip
                continue
            if rec is not None:
                for x in rec.progress:
                    _progress(progress, (x.topic, x.partition), x.max_ts, x.data_ms, x.sent_ms)
                    if x.end:
                        self.ended.setdefault(part, set()).add((x.topic, x.partition))
                for wp in rec.windows:
                    _add_window(e, wp, part, offset, again, summary=rec.late is None)
                if not again:
                    if rec.rejected:
                        e.count_rejected(part, rec.rejected)
                    for t, n in rec.rejected_for:
                        e.count_rejected(part, n, t)
                    for first, t, n in rec.late or []:
                        e.count_late_for(part, first, t, n)
            # How long a source has had no data is the owner's word (sent - data, one
            # clock), counted from when we read it: judged by our clock against the owner's
            # data time, a release stage a few seconds behind the ingest would find busy
            # sources idle and release their windows early.
            now = e.clock_ms()
            for source, (ts, data_ms, sent_ms) in progress.items():
                e.observe_progress(source, ts, now - max(0, sent_ms - data_ms), sent_ms)
            result.extend(e.advance())
            result.extend(self._end_if_all_ended(e, part))
        # Offsets of messages without rows still move this partition forward.
        e.track_offsets(np.zeros(len(offs), dtype=np.int64), [part], offs)
        return result

    def _end_if_all_ended(self, e: PipelineEngine, part: Hashable) -> StepResult:
        """Every raw partition has said its end in this partials partition: all their
        partials are read (they come before the marks), so every open window is released,
        as single mode's end releases them (`PipelineEngine.close_all`), once. At the
        record of the last mark, so what is released does not depend on speed. A restarted
        stage has its released windows in the checkpoint: it releases nothing again."""
        ended = self.ended.get(part, set())
        if part in self.finished or not self.sources or not ended.issuperset(self.sources):
            return StepResult()
        self.finished.add(part)
        return e.close_all()

    @property
    def done(self) -> bool:
        """Every owned partials partition is finished (a stage owning none is done)."""
        return all(p in self.finished for p in self.engines)

    def _add_v1(
        self,
        e: PipelineEngine,
        part: Hashable,
        raw: bytes,
        offset: int,
        again: bool,
        progress: dict[Hashable, tuple[int, int, int]],
    ) -> None:
        """A version 1 record (JSON, one row per event): read as before, so that a worker
        upgraded first still releases what the old ones sent. Read whole before any of it
        is applied: a record that is not well formed is skipped (PartialsRecordError)."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PartialsRecordError("a JSON partials record that is not JSON") from None
        if not isinstance(doc, dict) or doc.get("v") != 1:
            v = doc.get("v") if isinstance(doc, dict) else None
            raise PartialsVersionError(f"a JSON partials record of version {v}")
        try:
            beats = [
                ((str(t), int(p)), int(ts), int(d), int(s))
                for t, p, ts, d, s in doc.get("progress", [])
            ]
            rejected = _count(doc.get("rejected") or 0, "rejected")
            rows = doc.get("rows")
            cols = starts = None
            if rows:
                names = [tuple(map(str, x)) for x in rows["names"]]
                n = len(rows["ts"])
                m = np.array(rows["m"], dtype=np.float64).reshape(n, len(self.pipeline.measures))
                cols = Columns(
                    np.arange(n, dtype=np.int64),
                    np.array(rows["ts"], dtype=np.int64),
                    np.array(rows["u"], dtype=np.uint64),
                    np.array(rows["e"], dtype=np.uint64),
                    [names[i] for i in rows["d"]],
                    m,
                )
                starts = np.array(rows["w"], dtype=np.int64).reshape(n)
                step = self.pipeline.window.step_ms
                if len(cols.dims) != n or len(cols.unit) != n or len(cols.event) != n:
                    raise ValueError("columns of different lengths")
                if n and ((starts % step).any() or starts.min() < MIN_TS_MS - _WEEK_MS
                          or starts.max() > MAX_TS_MS):  # fmt: skip
                    raise ValueError("a window start out of range")
        except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError):
            raise PartialsRecordError("a JSON partials record of the wrong shape") from None
        for source, ts, data_ms, sent_ms in beats:
            _progress(progress, source, ts, data_ms, sent_ms)
        if rejected and not again:
            e.count_rejected(part, rejected)
        if cols is None or starts is None:
            return
        n = len(cols)
        e.add_rows(cols, starts, np.zeros(n, dtype=np.int64), np.full(n, offset, np.int64), [part])

    def _check(self, e: PipelineEngine, rec: Partial) -> None:
        """What a record must agree on with this pipeline and this engine before any of it
        is applied: the measures and windows on the pipeline's grid (else the record is
        skipped), and a name for each cell the open window has not seen (the first record
        of a window names its cells; without it a record is lost: RuntimeError)."""
        spec = self.pipeline.window
        named: dict[int, set[int]] = {}  # a hopping window can come twice in one record
        for wp in rec.windows:
            if wp.measures.shape[1] != len(self.pipeline.measures):
                raise PartialsRecordError("a partials window with another number of measures")
            if wp.start_ms % spec.step_ms:
                raise PartialsRecordError("a partials window off this pipeline's window grid")
            if wp.start_ms + spec.size_ms <= e.closed_until:
                continue  # late: its rows are not used
            w = e.windows.get(wp.start_ms)
            known = w.cells if w is not None else {}
            here = named.setdefault(wp.start_ms, set())
            here.update(wp.names)
            if any(c not in known and c not in here for c in wp.cells.tolist()):
                # Not a bad record but a lost one: stop, as loud as a missing topic.
                raise RuntimeError(
                    f"partials: a cell of window {wp.start_ms} has no name; a record of this "
                    "window before this one is missing from the partials topic (retention?)"
                )

    def safe_offset(self, partition: Hashable) -> int | None:
        e = self.engines.get(partition)
        return None if e is None else e.safe_offset(partition)

    def checkpoint(self, partition: Hashable) -> Checkpoint | None:
        e = self.engines.get(partition)
        return None if e is None else e.checkpoint(partition)

    def restore(self, partition: Hashable, checkpoint: Checkpoint) -> None:
        self._engine(partition).restore(partition, checkpoint)

    def set_sources(self, sources: Sequence[Hashable]) -> None:
        self.sources = list(sources)

    # A partials partition always has news (every owner's heartbeat, each second), and its
    # sources' idleness is the owners' word, read in order: nothing to note here.
    def busy(self, partition: Hashable) -> None:
        return None

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        return None

    @property
    def late_events(self) -> int:
        return 0  # counted per partials engine, in the metrics' view (StagesView)

    def assign(self, partitions: list[Hashable]) -> None:
        for p in partitions:
            self._engine(p)

    def forget(self, partition: Hashable) -> None:
        self.engines.pop(partition, None)
        self.ended.pop(partition, None)
        self.finished.discard(partition)

    def tick(self) -> StepResult:
        result = StepResult()
        for e in self.engines.values():
            result.extend(e.tick())
        return result

    def close_all(self) -> StepResult:
        result = StepResult()
        for e in self.engines.values():
            result.extend(e.close_all())
        return result


def _progress(
    into: dict[Hashable, tuple[int, int, int]], key: Hashable, ts: int, data_ms: int, sent_ms: int
) -> None:
    old = into.get(key)
    into[key] = (
        (max(old[0], ts), max(old[1], data_ms), max(old[2], sent_ms))
        if old
        else (ts, data_ms, sent_ms)
    )


def _add_window(
    e: PipelineEngine, wp: WindowPartial, part: Hashable, offset: int, again: bool,
    *, summary: bool,
) -> None:  # fmt: skip
    """One window's partial into the release engine's state, as `PipelineEngine._add`
    adds rows in single mode: late if the window is already released (counted once per
    event, `first_events`, unless re-read after a restart), else merged into the window.
    `summary`: the writer sent no targets, so the next summary counts these late events
    (else the target's partition counts them, see `Partial.late`)."""
    spec = e.pipeline.window
    end = wp.start_ms + spec.size_ms
    if end <= e.closed_until:
        if wp.first_events and not again:
            e.count_late(part, wp.first_events, summary=summary)
        return
    w = e.windows.get(wp.start_ms)
    if w is None:
        w = e.windows[wp.start_ms] = WindowState(
            wp.start_ms, end, len(e.pipeline.measures),
            e.pipeline.contribution.max_events_per_unit_per_cell,
        )  # fmt: skip
    prev = w.first_offsets.get(part)
    if prev is None or offset < prev:
        w.first_offsets[part] = offset
    for c in wp.cells.tolist():
        if c not in w.cells:
            w.cells[c] = wp.names[c]  # named here or before (ReleaseStage._check)
    if len(wp):
        w.add(wp.rows())
    # What the ingest's compaction dropped, so that the window's accounting adds up.
    w.rows_in += wp.rows_in - len(wp)
    w.duplicates += wp.duplicates
    w.over_limit += wp.over_limit


class StagesView:
    """One pipeline's two stages as the metrics see one engine."""

    def __init__(self, ingest: IngestStage, release: ReleaseStage, merge: Any = None) -> None:
        self.ingest = ingest
        self.release = release
        self.merge = merge  # the sharded release's merge stage (runtime/shardstages.py)
        self.pipeline = release.pipeline

    @property
    def counters(self) -> Counter[str]:
        total = Counter(self.ingest.engine.counters)
        for e in self.release.engines.values():
            total.update(e.counters)
        if self.merge is not None:
            total.update(self.merge.counters)
        return total

    @property
    def rejections(self) -> Counter[str]:
        return self.ingest.engine.rejections

    @property
    def open_windows(self) -> int:
        return sum(e.open_windows for e in self.release.engines.values())

    @property
    def closed_until(self) -> int:
        return max((e.closed_until for e in self.release.engines.values()), default=0)

    def state_bytes(self) -> int:
        return sum(e.state_bytes() for e in self.release.engines.values())
