"""The pipeline engine: decode, policy, window and release, driven by batches of messages.

The engine is the same code in every runtime (file replay, the Kafka worker, tests). It
holds no Kafka or Faust import; runtimes feed it batches of (partition, bytes) and route
what comes back: release records to the output topics, rejections to the dead-letter topic.
Every source of nondeterminism (clock, secret, noise generator) is injected.

Why this module is long: one engine's state (windows, watermark, the summaries' counters
with their target windows, checkpoints) is kept together, as each part changes the others.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from anonstream.core.budget import Ledger
from anonstream.core.cache import CELL_NAMES
from anonstream.core.cellstate import Rows, WindowState
from anonstream.core.checkpoint import Checkpoint
from anonstream.core.columns import ColumnPolicy, Columns
from anonstream.core.decode import INTERNAL_ERROR, Decoded, Decoder, Rejection
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.core.policy import Policy, PolicyRecord
from anonstream.core.records import summary_record
from anonstream.core.release import OutputRelease, Releaser
from anonstream.core.step import Batch, DeadLetter, Message, StepResult
from anonstream.core.windows import NEG_INF, Watermark, window_starts_array, window_units

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PipelineEngine:
    """All state of one pipeline: open windows, watermark, counters."""

    def __init__(
        self,
        pipeline: Pipeline,
        secret: MasterSecret,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        idle_close_ms: int = 0,
        rng_factory: Any = None,
        decoder_options: dict[str, int] | None = None,
        ledger: Ledger | None = None,
        fast_path: bool = True,
    ) -> None:
        self.pipeline = pipeline
        # False: every message takes the per-event reference path (decode.py, policy.py);
        # tests compare the two paths with it, the output is the same either way.
        self.fast_path = fast_path
        if ledger is None and pipeline.dp_budget is not None:
            ledger = Ledger(pipeline)  # in memory: spending is not kept across restarts
        self.ledger = ledger
        self.clock_ms = clock_ms
        options = {"max_future_ms": pipeline.window.max_future_skew_ms, **(decoder_options or {})}
        self.decoder = Decoder(pipeline.contract, clock_ms=clock_ms, **options)
        self.policy = Policy(pipeline, secret)
        self.columns = ColumnPolicy(self.decoder, self.policy)
        self.releaser = Releaser(
            pipeline, secret.derive(f"noise/{pipeline.name}"), rng_factory, ledger
        )
        self._cell_key = secret.derive(f"cells/{pipeline.name}")
        self.watermark = Watermark(pipeline.window.allowed_lateness_ms, idle_close_ms)
        self.idle_close_ms = idle_close_ms
        self.windows: dict[int, WindowState] = {}
        self.closed_until = NEG_INF  # every window ending at or before this is released
        self._cells: dict[tuple[str, ...], int] = {}
        self._cell_dims: dict[int, tuple[str, ...]] = {}
        self._n_measures = len(pipeline.measures)
        self.counters: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        # The summaries' counters (docs/output-contract.md): each late or rejected message
        # is counted for the summary of its target window (`targets`), per partition, so
        # that a checkpoint of a partition carries its own share (see checkpoint/restore).
        # Those without a target (or whose target was already released) are pending for the
        # next summary released.
        self._late_for: dict[int, Counter[Hashable]] = {}
        self._rejected_for: dict[int, Counter[Hashable]] = {}
        self._late_pending: Counter[Hashable] = Counter()
        self._rejected_pending: Counter[Hashable] = Counter()
        self._max_seen: dict[Hashable, int] = {}  # per partition: newest accepted event
        # Rejections before their partition's first accepted event: held for its target.
        self.held_rejected: Counter[Hashable] = Counter()
        # After a restart, messages before these offsets were already processed once: they
        # rebuild window state but are not counted or dead-lettered a second time.
        self._resume_next: dict[Hashable, int] = {}
        self._next_offset: dict[Hashable, int] = {}

    # -- input -------------------------------------------------------------------------
    @property
    def input_topic(self) -> str:
        return self.pipeline.source_topic

    def process(self, messages: Sequence[Message]) -> StepResult:
        """Process one batch fully: every message is accepted, rejected or late, and
        windows the watermark passed are released."""
        return self.process_batch(Batch.of(messages))

    def process_batch(self, batch: Batch) -> StepResult:
        """`process` for runtimes that already hold columns."""
        pidx, part_of, offs = batch.pidx, batch.part_of, batch.offs
        cols, again, result = self.ingest(batch)
        now = self.clock_ms()
        target = self.targets(batch, cols)
        rejected = np.ones(len(pidx), dtype=bool)
        rejected[cols.index] = False
        rejected &= ~again
        self._count(self._rejected_for, self._rejected_pending, part_of, pidx[rejected],
                    target[rejected], self.held_rejected)  # fmt: skip
        for part, t, n in self.settle_held(batch, target):
            self.count_rejected(part, n, t)
        if len(cols):
            cpidx = pidx[cols.index]
            self._add(cols, cpidx, offs[cols.index], again[cols.index], part_of,
                      targets=target[cols.index])  # fmt: skip
            for i in np.flatnonzero(np.bincount(cpidx, minlength=len(part_of))).tolist():
                self.watermark.observe(part_of[i], int(cols.ts[cpidx == i].max()), now)
        result.extend(self._close_until(self.watermark.current(now)))
        return result

    def ingest(self, batch: Batch) -> tuple[Columns, npt.NDArray[np.bool_], StepResult]:
        """Decode and policy: the accepted events as columns, which of the batch are
        replays after a restart, and the dead letters."""
        values, pidx, part_of, offs = batch.values, batch.pidx, batch.part_of, batch.offs
        result = StepResult()
        n = len(values)
        if not n:
            return Columns.from_records([], [], self._n_measures), np.zeros(0, bool), result
        again = self.track_offsets(pidx, part_of, offs)

        try:
            if self.fast_path:
                cols, flagged = self.columns.run(values)
            else:
                cols, flagged = Columns.from_records([], [], self._n_measures), list(range(n))
        except Exception as exc:  # a bug met by some message: find it one message at a time
            log.warning(
                "%s: column pass failed (%s); this batch goes message by message",
                self.pipeline.name, type(exc).__name__,  # never the message: it may hold values
            )  # fmt: skip
            cols = Columns.from_records([], [], self._n_measures)
            flagged = list(range(n))
        slow_index: list[int] = []
        slow_records: list[PolicyRecord] = []
        unknown = 0
        for i in flagged:
            raw, part, offset = values[i], part_of[int(pidx[i])], int(offs[i])
            try:
                r, n_unknown = self._one(raw)
            except Exception as exc:
                log.warning("%s: internal error on one message (%s)", self.pipeline.name,
                            type(exc).__name__)  # fmt: skip
                r, n_unknown = Rejection(INTERNAL_ERROR), 0
            unknown += n_unknown
            if isinstance(r, PolicyRecord):
                slow_index.append(i)
                slow_records.append(r)
                continue
            rejection = r
            if again[i]:
                continue  # dead-lettered before the restart
            self.rejections[rejection.reason] += 1
            result.dead_letters.append(
                DeadLetter(raw, rejection.reason, rejection.field, part, offset)
            )
        if slow_records:
            slow = Columns.from_records(slow_index, slow_records, self._n_measures, unknown)
            cols = Columns.concat(cols, slow)
        self.counters["events_in"] += n
        self.counters["accepted"] += len(cols)
        self.counters["rejected"] += n - len(cols)
        self.counters["unknown_fields_dropped"] += unknown
        return cols, again, result

    def targets(self, batch: Batch, cols: Columns) -> npt.NDArray[np.int64]:
        """Each message's target window, the summary its lateness or rejection counts in:
        the last window holding the newest accepted event of its partition up to and
        including it (NEG_INF: none yet). It depends on its partition's order only, never
        on batching or on how partitions interleave, and it is open when the message is
        counted unless an idle close or the end of input released it (the watermark is at
        most a partition's newest event). Moves each partition's newest event on."""
        pidx, part_of = batch.pidx, batch.part_of
        ts = np.full(len(pidx), NEG_INF, dtype=np.int64)
        ts[cols.index] = cols.ts
        out = np.full(len(pidx), NEG_INF, dtype=np.int64)
        for i, part in enumerate(part_of):
            mine = np.flatnonzero(pidx == i)
            if not len(mine):
                continue
            run = np.maximum.accumulate(np.maximum(ts[mine], self._max_seen.get(part, NEG_INF)))
            self._max_seen[part] = int(run[-1])
            has = run > NEG_INF
            if has.any():
                run[has] = window_starts_array(self.pipeline.window, run[has])[:, -1]
            out[mine] = run
        return out

    def settle_held(
        self, batch: Batch, target: npt.NDArray[np.int64]
    ) -> list[tuple[Hashable, int, int]]:
        """Held rejections of partitions that now have a target: (partition, the first
        target of this batch, count), no longer held."""
        out = []
        for i, part in enumerate(batch.part_of):
            if self.held_rejected.get(part):
                t = target[batch.pidx == i]
                t = t[t != NEG_INF]
                if len(t):
                    out.append((part, int(t[0]), self.held_rejected.pop(part)))
        return out

    def _count(
        self,
        into: dict[int, Counter[Hashable]],
        pending: Counter[Hashable],
        part_of: Sequence[Hashable],
        pidx: npt.NDArray[np.int64],
        targets: npt.NDArray[np.int64],
        held: Counter[Hashable] | None = None,
    ) -> None:
        """Count messages (partition index, target window) for their targets' summaries:
        those without a target are `held`, or else with a released target, for the next
        summary released."""
        if not len(pidx):
            return
        size = self.pipeline.window.size_ms
        for (i, t), n in Counter(zip(pidx.tolist(), targets.tolist(), strict=True)).items():
            if t == NEG_INF and held is not None:
                held[part_of[i]] += n
            else:
                self.count_for(into, pending, part_of[i], t, n, size)

    def count_for(
        self,
        into: dict[int, Counter[Hashable]],
        pending: Counter[Hashable],
        part: Hashable,
        target: int,
        n: int,
        size: int,
    ) -> None:
        if target == NEG_INF or target + size <= self.closed_until:
            pending[part] += n
        else:
            into.setdefault(target, Counter())[part] += n

    def _one(self, raw: bytes) -> tuple[PolicyRecord | Rejection, int]:
        """The reference path for one message: its record or rejection, and how many
        unknown fields it had."""
        d = self.decoder.decode(raw)
        if type(d) is not Decoded:
            assert isinstance(d, Rejection)
            return d, 0
        return self.policy.apply(d), d.unknown_fields

    def cell_id(self, dims: tuple[str, ...]) -> int:
        """A cell's 64-bit id: a keyed hash of an injective encoding of its dimension
        values (each one's UTF-8 length, then its bytes), so no value can pose as another
        cell, nor be crafted to collide with one without the secret."""
        h = hashlib.blake2b(key=self._cell_key, digest_size=8)
        for d in dims:
            b = d.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        return int.from_bytes(h.digest(), "little")

    def add_rows(
        self,
        cols: Columns,
        starts: npt.NDArray[np.int64],
        pidx: npt.NDArray[np.int64],
        offs: npt.NDArray[np.int64],
        part_of: list[Hashable],
    ) -> None:
        """Rows already windowed elsewhere (scale-out: another worker's ingest), each for
        the one window in `starts`; offsets are those of the partials topic."""
        again = self.track_offsets(pidx, part_of, offs)
        self._add(cols, pidx, offs, again, part_of, starts[:, None])

    def track_offsets(
        self, pidx: npt.NDArray[np.int64], part_of: list[Hashable], offs: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Move each partition's next offset past this batch; return which messages were
        already processed before a restart (they rebuild state but count nothing twice)."""
        again = np.zeros(len(offs), dtype=bool)
        if self._resume_next:
            resume = np.array([self._resume_next.get(p, -1) for p in part_of], dtype=np.int64)
            again = offs < resume[pidx]
        for i, part in enumerate(part_of):
            mine = offs[pidx == i]
            if len(mine):
                top = int(mine.max()) + 1
                if top > self._next_offset.get(part, -1):
                    self._next_offset[part] = top
        return again

    def observe_progress(
        self, source: Hashable, max_ts: int, data_wall_ms: int, sent_ms: int
    ) -> None:
        """Scale-out: a source partition's owner reports its event-time progress, when it
        last had data and when it said so. Only a fresh report can make a source idle: one
        re-read after a restart is old news."""
        self.watermark.observe(source, max_ts, data_wall_ms, report_ms=sent_ms)

    def advance(self) -> StepResult:
        return self._close_until(self.watermark.current(self.clock_ms()))

    def _add(
        self,
        cols: Columns,
        pidx: npt.NDArray[np.int64],
        offs: npt.NDArray[np.int64],
        again: npt.NDArray[np.bool_],
        part_of: list[Hashable],
        starts: npt.NDArray[np.int64] | None = None,
        targets: npt.NDArray[np.int64] | None = None,
    ) -> None:
        spec = self.pipeline.window
        cells_map = self._cells
        if len(cells_map) > CELL_NAMES:  # windows keep their own cell names
            cells_map.clear()
            self._cell_dims.clear()
        cell_list = list(map(cells_map.get, cols.dims))
        if None in cell_list:
            for j in [j for j in range(len(cell_list)) if cell_list[j] is None]:
                dims = cols.dims[j]
                c = cells_map.get(dims)
                if c is None:
                    c = self.cell_id(dims)
                    cells_map[dims] = c
                    self._cell_dims[c] = dims
                cell_list[j] = c
        cell = np.array(cell_list, dtype=np.uint64)
        batch_cells: set[int] | None = None  # the batch's cells, when it has one window
        if starts is None:
            starts = window_starts_array(spec, cols.ts)
        # An event is late once, however many of its (hopping) windows are already closed.
        late = (starts[:, 0] + spec.size_ms <= self.closed_until) & ~again
        if late.any():
            self.counters["late"] += int(late.sum())
            if targets is None:  # rows windowed elsewhere (scale-out, version 1)
                targets = np.full(len(late), NEG_INF, dtype=np.int64)
            self._count(self._late_for, self._late_pending, part_of, pidx[late], targets[late])
        for j in range(starts.shape[1]):
            col = starts[:, j]
            units = window_units(
                cols.unit, cols.earlier_unit, cols.ts, col, self.policy.pseudonyms.rotation_ms
            )
            lo, hi = int(col.min()), int(col.max())
            for start in [lo] if lo == hi else np.unique(col).tolist():
                end = start + spec.size_ms
                if end <= self.closed_until:
                    continue
                w = self.windows.get(start)
                if w is None:
                    w = self.windows[start] = WindowState(
                        start,
                        end,
                        self._n_measures,
                        self.pipeline.contribution.max_events_per_unit_per_cell,
                    )
                if lo == hi:  # the usual case: all of the batch in one window
                    rows = Rows(cell, units, cols.event, cols.measures)
                    psel, osel = pidx, offs
                    if batch_cells is None:
                        batch_cells = set(cast(list[int], cell_list))  # all filled in
                    new_cells = batch_cells.difference(w.cells)
                else:
                    sel = col == start
                    rows = Rows(cell[sel], units[sel], cols.event[sel], cols.measures[sel])
                    psel, osel = pidx[sel], offs[sel]
                    new_cells = set(np.unique(rows.cell).tolist()).difference(w.cells)
                for i in np.flatnonzero(np.bincount(psel, minlength=len(part_of))).tolist():
                    first = int(osel[psel == i].min())
                    prev = w.first_offsets.get(part_of[i])
                    if prev is None or first < prev:
                        w.first_offsets[part_of[i]] = first
                for c in new_cells:
                    w.cells[c] = self._cell_dims[c]
                w.add(rows)

    # -- time --------------------------------------------------------------------------
    def assign(self, partitions: Sequence[Hashable], *, hold: bool = False) -> None:
        """Partitions assigned to this engine: each holds the watermark until it speaks."""
        now = self.clock_ms()
        for p in partitions:
            self.watermark.register(p, now, hold=hold)

    def set_sources(self, sources: Sequence[Hashable]) -> None:
        return None  # a single-worker engine owns its sources: it is assigned them

    def busy(self, partition: Hashable) -> None:
        """Unread data waits in `partition`: not idle, however long the loop took to come
        back to it (taking a backlog for silence releases windows before their events)."""
        if partition in self.watermark.partitions:
            self.watermark.observe(partition, NEG_INF, self.clock_ms())

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        """The runtime's evidence that `partition` had nothing unread and nothing new
        from `since_ms` to `until_ms` (fetch response times): what makes it idle."""
        self.watermark.silent(partition, since_ms, until_ms)

    def tick(self) -> StepResult:
        """Called periodically by runtimes: closes windows when input has gone idle."""
        now = self.clock_ms()
        if self.windows and self.watermark.all_idle(now):
            return self.close_all()
        return self._close_until(self.watermark.current(now))

    def close_all(self) -> StepResult:
        """End of input (replay) or of a burst: release every open window."""
        self._rejected_pending.update(self.held_rejected)  # no target came: the next summary
        self.held_rejected.clear()
        if not self.windows:
            return StepResult()
        return self._close_until(max(w.end_ms for w in self.windows.values()))

    def _close_until(self, watermark: int) -> StepResult:
        result = StepResult()
        for start in sorted(self.windows):
            w = self.windows[start]
            if w.end_ms > watermark:
                break
            del self.windows[start]
            result.extend(self._release(w))
            self.closed_until = max(self.closed_until, w.end_ms)
        # Windows that never had an event are closed too: a straggler for one is late.
        self.closed_until = max(self.closed_until, watermark)
        return result

    def _release(self, w: WindowState) -> StepResult:
        p = self.pipeline
        result = StepResult()
        # This window's counts, and those of earlier targets never released (no window).
        late = sum(self._late_pending.values())
        rejected = sum(self._rejected_pending.values())
        for into in (self._late_for, self._rejected_for):
            for t in [t for t in into if t <= w.start_ms]:
                n = sum(into.pop(t).values())
                if into is self._late_for:
                    late += n
                else:
                    rejected += n
        outs = self.releaser.release(w)
        result.extend(window_records(p, w.start_ms, w.end_ms, outs, late, rejected, self.counters))
        self._late_pending.clear()
        self._rejected_pending.clear()
        self.counters["windows_released"] += 1
        return result

    # -- checkpoints: offsets committed with the releases --------------------------------
    def safe_offset(self, partition: Hashable) -> int | None:
        """The offset to commit for `partition`: every event of an open window at or after
        it, so a restart that re-reads from here rebuilds all open state."""
        nxt = self._next_offset.get(partition)
        firsts = [
            w.first_offsets[partition]
            for w in self.windows.values()
            if partition in w.first_offsets
        ]
        if nxt is None:
            return min(firsts) if firsts else None
        return min([nxt, *firsts])

    def checkpoint(self, partition: Hashable) -> Checkpoint:
        """What a restart needs besides the offset: which windows are already released,
        how far this partition was processed, and its share of the pending counters."""
        late = self._late_pending.get(partition, 0)
        late += sum(c.get(partition, 0) for c in self._late_for.values())
        rejected = self._rejected_pending.get(partition, 0) + self.held_rejected[partition]
        rejected += sum(c.get(partition, 0) for c in self._rejected_for.values())
        return Checkpoint(
            self.closed_until, self._next_offset.get(partition, -1), late, rejected
        )  # fmt: skip

    def restore(self, partition: Hashable, checkpoint: Checkpoint) -> None:
        self.closed_until = max(self.closed_until, checkpoint.closed_until)
        if checkpoint.next >= 0:
            self._resume_next[partition] = checkpoint.next
        self._late_pending[partition] += checkpoint.late
        self._rejected_pending[partition] += checkpoint.rejected

    def next_offset(self, partition: Hashable) -> int | None:  # for scale-out's ingest
        return self._next_offset.get(partition)

    def replayed(self, partition: Hashable, offset: int) -> bool:
        """Processed before the restart this engine resumes from: rebuilds, counts nothing."""
        return offset < self._resume_next.get(partition, -1)

    def count_rejected(self, partition: Hashable, n: int, target: int = NEG_INF) -> None:
        """Rejections the ingest found, for `target`'s summary (see `targets`)."""
        size = self.pipeline.window.size_ms
        self.count_for(self._rejected_for, self._rejected_pending, partition, target, n, size)

    def count_late(self, partition: Hashable, n: int, *, summary: bool = True) -> None:
        """A window's partial that came after its release: late, in the metrics; in the
        next summary too unless its ingest sent targets (`count_late_for`)."""
        self.counters["late"] += n
        if summary:
            self._late_pending[partition] += n

    def count_late_for(self, partition: Hashable, first: int, target: int, n: int) -> None:
        """Scale-out: `n` events whose first window starts at `first`, for `target`'s
        summary if that window is released (as the engine that owns it finds, by the same
        watermark)."""
        size = self.pipeline.window.size_ms
        if first + size <= self.closed_until:
            self.count_for(self._late_for, self._late_pending, partition, target, n, size)

    def take_rejected(self) -> int:
        """The rejections pending since the last summary, handed over and cleared."""
        n = sum(self._rejected_pending.values())
        n += sum(sum(c.values()) for c in self._rejected_for.values())
        self._rejected_pending.clear()
        self._rejected_for.clear()
        return n

    def forget(self, partition: Hashable) -> None:
        """A partition moved to another worker."""
        self.watermark.forget(partition)
        self._next_offset.pop(partition, None)
        self._resume_next.pop(partition, None)
        self._late_pending.pop(partition, None)
        self._rejected_pending.pop(partition, None)
        self._max_seen.pop(partition, None)
        self.held_rejected.pop(partition, None)
        for into in (self._late_for, self._rejected_for):
            for c in into.values():
                c.pop(partition, None)

    # -- introspection -------------------------------------------------------------------
    def state_bytes(self) -> int:
        return sum(w.nbytes() for w in self.windows.values())

    @property
    def open_windows(self) -> int:
        return len(self.windows)

    @property
    def late_events(self) -> int:
        return int(self.counters["late"])


def window_records(
    p: Pipeline, start_ms: int, end_ms: int, outs: list[OutputRelease], late: int,
    rejected: int, counters: Counter[str],
) -> StepResult:  # fmt: skip
    """A released window's records: each output's cells and its window summary (also the
    sharded release's merge stage, runtime/shardstages.py)."""
    result = StepResult()
    for out in outs:
        result.releases.extend(out.records)
        result.accounting.append((start_ms, out.output.name, out.accounting))
        if not out.publish_summary:
            continue
        result.releases.append(
            summary_record(
                pipeline=p.name,
                version=p.version,
                output=out.output.name,
                start_ms=start_ms,
                end_ms=end_ms,
                cells_released=out.cells_released,
                cells_rolled_up=out.cells_rolled_up,
                cells_suppressed=out.cells_suppressed,
                late_events=late,
                rejected_events=rejected,
                k=out.output.k,
                privacy=out.privacy,
            )
        )
        counters["cells_released"] += out.cells_released
        counters["cells_rolled_up"] += out.cells_rolled_up
        counters["cells_suppressed"] += out.cells_suppressed
    return result
