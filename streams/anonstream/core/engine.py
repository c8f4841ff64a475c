"""The pipeline engine: decode, policy, window and release, driven by batches of messages.

The engine is the same code in every runtime (file replay, the Kafka worker, tests). It
holds no Kafka or Faust import; runtimes feed it batches of (partition, bytes) and route
what comes back: release records to the output topics, rejections to the dead-letter topic.
Every source of nondeterminism (clock, secret, noise generator) is injected.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mmh3
import numpy as np

from anonstream.core.cellstate import Rows, WindowState
from anonstream.core.decode import Decoded, Decoder, Rejection
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.core.policy import Policy, PolicyRecord
from anonstream.core.release import Accounting, Releaser
from anonstream.core.records import summary_record
from anonstream.core.windows import NEG_INF, Watermark, window_starts_array


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Message:
    """One raw message as a runtime hands it over."""

    value: bytes
    partition: Hashable = 0
    offset: int = -1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message. `value` is the raw payload: sensitive, for the dead-letter topic."""

    value: bytes
    reason: str
    field: str | None
    partition: Hashable
    offset: int


@dataclass
class StepResult:
    releases: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accounting: list[tuple[int, str, Accounting]] = field(default_factory=list)

    def extend(self, other: StepResult) -> None:
        self.releases.extend(other.releases)
        self.dead_letters.extend(other.dead_letters)
        self.accounting.extend(other.accounting)


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
    ) -> None:
        self.pipeline = pipeline
        self.clock_ms = clock_ms
        self.decoder = Decoder(pipeline.contract, clock_ms=clock_ms, **(decoder_options or {}))
        self.policy = Policy(pipeline, secret)
        self.releaser = Releaser(pipeline, secret.derive(f"noise/{pipeline.name}"), rng_factory)
        self.watermark = Watermark(pipeline.window.allowed_lateness_ms, idle_close_ms)
        self.idle_close_ms = idle_close_ms
        self.windows: dict[int, WindowState] = {}
        self.closed_until = NEG_INF  # every window ending at or before this is released
        self._cells: dict[tuple[str, ...], int] = {}
        self._cell_dims: dict[int, tuple[str, ...]] = {}
        self._n_measures = len(pipeline.measures)
        self.counters: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        # Counted since the last window summary, per partition, so that a checkpoint of a
        # partition carries its own share (see checkpoint/restore).
        self._late_pending: Counter[Hashable] = Counter()
        self._rejected_pending: Counter[Hashable] = Counter()
        # After a restart, messages before these offsets were already processed once: they
        # rebuild window state but are not counted or dead-lettered a second time.
        self._resume_next: dict[Hashable, int] = {}
        self._next_offset: dict[Hashable, int] = {}

    # -- input -------------------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> StepResult:
        """Process one batch fully: every message is accepted, rejected or late, and
        windows the watermark passed are released."""
        result = StepResult()
        records: list[PolicyRecord] = []
        parts: list[Hashable] = []
        offsets: list[int] = []
        replayed: list[bool] = []
        decode, apply = self.decoder.decode, self.policy.apply
        resume = self._resume_next
        next_offset = self._next_offset
        unknown = 0
        for msg in messages:
            again = bool(resume) and msg.offset < resume.get(msg.partition, -1)
            if msg.offset >= next_offset.get(msg.partition, -1):
                next_offset[msg.partition] = msg.offset + 1
            d = decode(msg.value)
            if type(d) is Decoded:
                unknown += d.unknown_fields
                r = apply(d)
                if type(r) is PolicyRecord:
                    records.append(r)
                    parts.append(msg.partition)
                    offsets.append(msg.offset)
                    replayed.append(again)
                    continue
                d = r
            assert isinstance(d, Rejection)
            if again:
                continue
            self.rejections[d.reason] += 1
            self._rejected_pending[msg.partition] += 1
            result.dead_letters.append(
                DeadLetter(msg.value, d.reason, d.field, msg.partition, msg.offset)
            )
        self.counters["events_in"] += len(messages)
        self.counters["accepted"] += len(records)
        self.counters["rejected"] += len(messages) - len(records)
        self.counters["unknown_fields_dropped"] += unknown
        now = self.clock_ms()
        if records:
            self._add(records, parts, offsets, replayed)
            per_part: dict[Hashable, int] = {}
            for part, rec in zip(parts, records, strict=True):
                if rec.ts_ms > per_part.get(part, NEG_INF):
                    per_part[part] = rec.ts_ms
            for part, ts in per_part.items():
                self.watermark.observe(part, ts, now)
        result.extend(self._close_until(self.watermark.current(now)))
        return result

    def _add(
        self,
        records: list[PolicyRecord],
        parts: list[Hashable],
        offsets: list[int],
        replayed: list[bool],
    ) -> None:
        spec = self.pipeline.window
        n = len(records)
        part_ids = {p: i for i, p in enumerate(dict.fromkeys(parts))}
        part_of = list(part_ids)
        pidx = np.fromiter((part_ids[p] for p in parts), dtype=np.int64, count=n)
        offs = np.array(offsets, dtype=np.int64)
        again = np.array(replayed, dtype=bool)
        ts = np.fromiter((r.ts_ms for r in records), dtype=np.int64, count=n)
        unit = np.fromiter((r.unit for r in records), dtype=np.uint64, count=n)
        event = np.fromiter((r.event_hash for r in records), dtype=np.uint64, count=n)
        cells_map = self._cells
        if len(cells_map) > 500_000:  # bound memory; windows keep their own cell names
            cells_map.clear()
            self._cell_dims.clear()
        cell_list = []
        for r in records:
            c = cells_map.get(r.dims)
            if c is None:
                c = mmh3.hash64("\x1f".join(r.dims), signed=False)[0]
                cells_map[r.dims] = c
                self._cell_dims[c] = r.dims
            cell_list.append(c)
        cell = np.array(cell_list, dtype=np.uint64)
        if self._n_measures:
            measures = np.array([r.measures for r in records], dtype=np.float64)
        else:
            measures = np.empty((n, 0), dtype=np.float64)
        starts = window_starts_array(spec, ts)
        for j in range(starts.shape[1]):
            col = starts[:, j]
            for start in np.unique(col).tolist():
                sel = col == start
                end = start + spec.size_ms
                if end <= self.closed_until:
                    late = sel & ~again
                    if late.any():
                        self.counters["late"] += int(late.sum())
                        for i in np.unique(pidx[late]).tolist():
                            self._late_pending[part_of[i]] += int((late & (pidx == i)).sum())
                    continue
                w = self.windows.get(start)
                if w is None:
                    w = self.windows[start] = WindowState(
                        start, end, self._n_measures,
                        self.pipeline.contribution.max_events_per_unit_per_cell,
                    )  # fmt: skip
                for i in np.unique(pidx[sel]).tolist():
                    first = int(offs[sel & (pidx == i)].min())
                    prev = w.first_offsets.get(part_of[i])
                    if prev is None or first < prev:
                        w.first_offsets[part_of[i]] = first
                rows = Rows(cell[sel], unit[sel], event[sel], measures[sel])
                for c in np.unique(rows.cell).tolist():
                    if c not in w.cells:
                        w.cells[c] = self._cell_dims[c]
                w.add(rows)

    # -- time --------------------------------------------------------------------------
    def assign(self, partitions: Sequence[Hashable]) -> None:
        """Partitions assigned to this engine: each holds the watermark until it speaks."""
        now = self.clock_ms()
        for p in partitions:
            self.watermark.register(p, now)

    def tick(self) -> StepResult:
        """Called periodically by runtimes: closes windows when input has gone idle."""
        now = self.clock_ms()
        if self.windows and self.watermark.all_idle(now):
            return self.close_all()
        return self._close_until(self.watermark.current(now))

    def close_all(self) -> StepResult:
        """End of input (replay) or of a burst: release every open window."""
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
        return result

    def _release(self, w: WindowState) -> StepResult:
        p = self.pipeline
        result = StepResult()
        for out in self.releaser.release(w):
            result.releases.extend(out.records)
            result.releases.append(
                summary_record(
                    pipeline=p.name, version=p.version, output=out.output.name,
                    start_ms=w.start_ms, end_ms=w.end_ms, cells_released=out.cells_released,
                    cells_rolled_up=out.cells_rolled_up, cells_suppressed=out.cells_suppressed,
                    late_events=sum(self._late_pending.values()),
                    rejected_events=sum(self._rejected_pending.values()), k=out.output.k,
                )  # fmt: skip
            )
            result.accounting.append((w.start_ms, out.output.name, out.accounting))
            self.counters["cells_released"] += out.cells_released
            self.counters["cells_rolled_up"] += out.cells_rolled_up
            self.counters["cells_suppressed"] += out.cells_suppressed
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
            w.first_offsets[partition] for w in self.windows.values() if partition in w.first_offsets
        ]
        if nxt is None:
            return min(firsts) if firsts else None
        return min([nxt, *firsts])

    def checkpoint(self, partition: Hashable) -> dict[str, int]:
        """What a restart needs besides the offset: which windows are already released,
        how far this partition was processed, and its share of the pending counters."""
        return {
            "closed_until": self.closed_until,
            "next": self._next_offset.get(partition, -1),
            "late": self._late_pending.get(partition, 0),
            "rejected": self._rejected_pending.get(partition, 0),
        }

    def restore(self, partition: Hashable, checkpoint: dict[str, int]) -> None:
        self.closed_until = max(self.closed_until, int(checkpoint.get("closed_until", NEG_INF)))
        nxt = int(checkpoint.get("next", -1))
        if nxt >= 0:
            self._resume_next[partition] = nxt
        self._late_pending[partition] += int(checkpoint.get("late", 0))
        self._rejected_pending[partition] += int(checkpoint.get("rejected", 0))

    def forget(self, partition: Hashable) -> None:
        """A partition moved to another worker."""
        self.watermark.forget(partition)
        self._next_offset.pop(partition, None)
        self._resume_next.pop(partition, None)
        self._late_pending.pop(partition, None)
        self._rejected_pending.pop(partition, None)

    # -- introspection -------------------------------------------------------------------
    def state_bytes(self) -> int:
        return sum(w.nbytes() for w in self.windows.values())

    @property
    def open_windows(self) -> int:
        return len(self.windows)
