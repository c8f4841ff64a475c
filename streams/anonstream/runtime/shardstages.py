"""Scale-out with the release of a window spread over person shards (opt-in:
ANONSTREAM_RELEASE_SHARDED=true; k pipelines only, a dp pipeline keeps one release stage
per window).

The ingest sends each row to the partials partition of its person's shard
(`core/sharded.shard_of` over the partials partitions), so every partials partition is one
shard of every window. A shard stage (`ShardStage`: the release stage's engines, windows,
watermark and checkpoints, with `ShardEngine` in place of the release) closes a window when
its watermark passes, as a release stage does, and instead of releasing sends the window's
`ShardWindow` (core/sharded.py: every bound applied, cells with k persons as figures, the
rest as rows) to the merge topic, partitioned by window, in the transaction that commits its
offsets. Whenever its closed windows reach a new window boundary it also sends every merge
partition a mark: "this shard has closed everything ending at or before T".

A merge stage (`MergeStage`, one state per merge partition) releases a window once every
shard's mark has passed its end, from the parts that came (a shard with no person in the
window sends none), with `core/sharded.release_merged`: exactly single mode's release of
the window. Shards forward the summaries' counters (late and rejected events, by target
window) with each mark and part; the merge attributes them to windows as
`PipelineEngine._release` does.

Crash safety: the merge commits, as its offset, the oldest of its open windows' first parts
and of every shard's latest mark, so a restart re-reads what it needs; its checkpoint says
which windows are released (they close in order: a shard sends a window's part before any
mark past it) and holds the counters not yet in a summary.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np

from anonstream.core.budget import Ledger
from anonstream.core.cellstate import WindowState
from anonstream.core.checkpoint import Checkpoint
from anonstream.core.engine import PipelineEngine, window_records
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.core.release import Releaser
from anonstream.core.sharded import ShardWindow, reduce_shard, release_merged
from anonstream.core.step import Batch, StepResult
from anonstream.core.windows import NEG_INF, window_starts
from anonstream.runtime.mergerecord import (
    ShardRecord,
    ShardRecordError,
    decode_shard,
    encode_shard,
)
from anonstream.runtime.scaleout import IngestStage, ReleaseStage, partials_topic
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")


def merge_topic(group_id: str, pipeline: str) -> str:
    return f"anonstream.merge.{group_id}.{pipeline}"


def release_sharded(settings: Settings, p: Pipeline) -> bool:
    """Whether pipeline `p` releases through shards and a merge: asked for, and no dp
    output (dp pipelines keep one release stage per window, with their privacy ledger)."""
    return settings.release_sharded and all(o.privacy == "k" for o in p.outputs)


def scale_out_stages(
    settings: Settings, p: Pipeline, secret: MasterSecret, idle_ms: int, ledger: Ledger | None
) -> tuple[IngestStage, ReleaseStage, MergeStage | None]:
    """A pipeline's scale-out stages: ingest and release by window, or (the sharded
    release) ingest, shards and merge."""
    if release_sharded(settings, p):
        return sharded_stages(settings, p, secret, idle_ms)
    topic = partials_topic(settings.group_id, p.name)
    n = settings.partials_partitions
    factory = partial(PipelineEngine, p, secret, idle_close_ms=idle_ms, ledger=ledger)
    return (
        IngestStage(PipelineEngine(p, secret), topic, n),
        ReleaseStage(factory, p, topic, n),
        None,
    )


def sharded_stages(
    settings: Settings, p: Pipeline, secret: MasterSecret, idle_ms: int
) -> tuple[IngestStage, ShardStage, MergeStage]:
    """A pipeline's three scale-out stages with the sharded release (see the module)."""
    partials = partials_topic(settings.group_id, p.name)
    merge = merge_topic(settings.group_id, p.name)
    n = settings.partials_partitions
    ingest = IngestStage(PipelineEngine(p, secret), partials, n, sharded=True)

    def shard_engine(shard: int) -> PipelineEngine:
        return ShardEngine(
            p, secret, idle_close_ms=idle_ms, shard=shard, merge=merge, merge_partitions=n
        )

    shards = ShardStage(shard_engine, p, partials, n)
    return ingest, shards, MergeStage(p, PipelineEngine(p, secret).releaser, merge, n)


class ShardEngine(PipelineEngine):
    """A release engine of one person shard: windows close as in a release stage, and
    each closed window goes to the merge as a ShardWindow, with the shard's marks."""

    def __init__(
        self, *args: Any, shard: int, merge: str, merge_partitions: int, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.shard = shard
        self.merge = merge
        self.merge_partitions = merge_partitions
        self._marked = NEG_INF  # the last boundary every merge partition was told

    def _merge_partition(self, start_ms: int) -> int:
        return (start_ms // self.pipeline.window.step_ms) % self.merge_partitions

    def _take_counters(self, rec: ShardRecord, q: int) -> None:
        """The counters this shard holds for the summaries of merge partition `q` (by
        target window; those without a target go to partition 0), moved into `rec`."""
        for into, out in ((self._late_for, rec.late_for), (self._rejected_for, rec.rejected_for)):
            for t in [t for t in into if self._merge_partition(t) == q]:
                out[t] = out.get(t, 0) + sum(into.pop(t).values())
        if q == 0:
            rec.late += sum(self._late_pending.values())
            rec.rejected += sum(self._rejected_pending.values())
            self._late_pending.clear()
            self._rejected_pending.clear()

    def _release(self, w: WindowState) -> StepResult:
        result = StepResult()
        rec = ShardRecord(self.shard, self.closed_until, reduce_shard(self.releaser, w))
        value = encode_shard(rec, self.pipeline)
        result.forward.append((self.merge, self._merge_partition(w.start_ms), b"", value))
        return result

    def _close_until(self, watermark: int) -> StepResult:
        """As a release engine closes windows (each one's part to the merge), then a mark
        with the counters to every merge partition when a window boundary is passed: after
        the parts it covers, in each partition's order."""
        result = super()._close_until(watermark)
        step = self.pipeline.window.step_ms
        mark = (self.closed_until // step) * step
        if mark > self._marked:
            self._marked = mark
            result.extend(self._marks())
        return result

    def _marks(self, *, end: bool = False) -> StepResult:
        result = StepResult()
        for q in range(self.merge_partitions):
            rec = ShardRecord(self.shard, self.closed_until, end=end)
            self._take_counters(rec, q)
            result.forward.append((self.merge, q, b"", encode_shard(rec, self.pipeline)))
        return result

    def advance(self) -> StepResult:
        """After each partials record: idle close as a release engine's, but also for a
        shard without an open window (the merge waits for every shard's mark). Judged
        here, as each owner's report is read, and never at a tick: a worker busy
        elsewhere (an ingest batch, a merge) between reading a report and its next tick
        would take that delay for the sources' silence and close windows early."""
        if self.watermark.all_idle(self.clock_ms()):
            return self.close_all()
        return super().advance()

    def tick(self) -> StepResult:
        return StepResult()  # see advance: the sources' owners report every second

    def close_all(self) -> StepResult:
        """Every window up to the last one holding the newest event time any source has
        reported closed: what single mode's close_all closes (its windows hold exactly
        those events), the same in every shard, whether or not it has rows there."""
        self._rejected_pending.update(self.held_rejected)
        self.held_rejected.clear()
        spec = self.pipeline.window
        newest = max((pc.max_ts for pc in self.watermark.partitions.values()), default=NEG_INF)
        ends = [w.end_ms for w in self.windows.values()]
        if newest > NEG_INF:
            ends.append(max(window_starts(spec, newest)) + spec.size_ms)
        return self._close_until(max(ends)) if ends else StepResult()

    def end_of_input(self) -> StepResult:
        """--stop-at-end: everything of this shard is closed; every merge partition is told,
        after the parts (see MergeStage.done)."""
        result = self.close_all()
        result.extend(self._marks(end=True))
        return result


class ShardStage(ReleaseStage):
    """The release stage's engines, one per partials partition = shard (see the module)."""

    def __init__(
        self,
        factory: Callable[[int], PipelineEngine],
        pipeline: Pipeline,
        topic: str,
        partitions: int,
    ) -> None:
        super().__init__(lambda: factory(0), pipeline, topic, partitions)
        self.shard_factory = factory

    def _end_if_all_ended(self, e: PipelineEngine, part: Hashable) -> StepResult:
        """As a release stage's end (every raw partition's end mark read here), then an end
        mark to every merge partition; said again by a new owner, harmless."""
        if part in self.finished or not self.sources:
            return StepResult()
        if not self.ended.get(part, set()).issuperset(self.sources):
            return StepResult()
        self.finished.add(part)
        return cast(ShardEngine, e).end_of_input()

    def _engine(self, partition: Hashable) -> PipelineEngine:
        e = self.engines.get(partition)
        if e is None:
            shard = cast(tuple[str, int], partition)[1]
            e = self.engines[partition] = self.shard_factory(shard)
            e.assign(self.sources, hold=True)
        return e


@dataclass
class _MergeState:
    """One merge partition: the shards' marks, the open windows' parts, the counters."""

    closed: dict[int, int] = field(default_factory=dict)  # shard -> its closed_until
    mark_offset: dict[int, int] = field(default_factory=dict)  # shard -> its latest mark
    parts: dict[int, dict[int, ShardWindow]] = field(default_factory=dict)  # start -> shard
    first_offset: dict[int, int] = field(default_factory=dict)  # start -> first part
    closed_until: int = NEG_INF
    next: int = -1
    resume_next: int = -1
    late_for: Counter[int] = field(default_factory=Counter)
    rejected_for: Counter[int] = field(default_factory=Counter)
    late: int = 0
    rejected: int = 0
    ended: set[int] = field(default_factory=set)  # shards whose end mark is read


class MergeStage:
    """Releases each window of its merge partitions from its shards' parts."""

    def __init__(self, pipeline: Pipeline, releaser: Releaser, topic: str, shards: int) -> None:
        self.pipeline = pipeline
        self.releaser = releaser
        self.topic = topic
        self.shards = shards
        self.states: dict[Hashable, _MergeState] = {}
        self.counters: Counter[str] = Counter()

    @property
    def input_topic(self) -> str:
        return self.topic

    @property
    def late_events(self) -> int:
        return 0

    def _state(self, partition: Hashable) -> _MergeState:
        s = self.states.get(partition)
        if s is None:
            s = self.states[partition] = _MergeState()
        return s

    def process_batch(self, batch: Batch) -> StepResult:
        result = StepResult()
        for i, part in enumerate(batch.part_of):
            s = self._state(part)
            for j in np.flatnonzero(batch.pidx == i).tolist():
                result.extend(self._record(s, part, batch.values[j], int(batch.offs[j])))
        return result

    def _record(self, s: _MergeState, part: Hashable, raw: bytes, offset: int) -> StepResult:
        again = offset < s.resume_next
        s.next = max(s.next, offset + 1)
        try:
            rec = decode_shard(raw, self.pipeline)
        except ShardRecordError as exc:
            if not again:
                self.counters["partials_rejected"] += 1
                log.warning("%s: skipped a merge record (partition %s, offset %d): %s",
                            self.topic, part, offset, exc)  # fmt: skip
            return StepResult()
        if not again:  # counted once: a re-read record's counters are in the checkpoint
            s.late_for.update(rec.late_for)
            s.rejected_for.update(rec.rejected_for)
            s.late += rec.late
            s.rejected += rec.rejected
        w = rec.part
        if w is not None and w.end_ms > s.closed_until:
            s.parts.setdefault(w.start_ms, {})[rec.shard] = w
            s.first_offset[w.start_ms] = min(s.first_offset.get(w.start_ms, offset), offset)
        if w is None:  # a mark: it follows the parts and counters of what it covers
            s.mark_offset[rec.shard] = offset
            if rec.end:
                s.ended.add(rec.shard)
            s.closed[rec.shard] = max(s.closed.get(rec.shard, NEG_INF), rec.closed_until)
        return self._advance(s)

    def _advance(self, s: _MergeState) -> StepResult:
        result = StepResult()
        if len(s.closed) < self.shards:
            return result
        until = min(s.closed.values())
        for start in sorted(s.parts):
            parts = s.parts[start]
            end = next(iter(parts.values())).end_ms
            if end > until:
                break
            del s.parts[start]
            s.first_offset.pop(start, None)
            result.extend(self._release(s, start, end, [parts[k] for k in sorted(parts)]))
            s.closed_until = max(s.closed_until, end)
        return result

    def _release(
        self, s: _MergeState, start: int, end: int, parts: list[ShardWindow]
    ) -> StepResult:
        late, rejected = s.late, s.rejected
        for t in [t for t in s.late_for if t <= start]:
            late += s.late_for.pop(t)
        for t in [t for t in s.rejected_for if t <= start]:
            rejected += s.rejected_for.pop(t)
        s.late = s.rejected = 0
        outs = release_merged(self.releaser, parts)
        self.counters["windows_released"] += 1
        return window_records(self.pipeline, start, end, outs, late, rejected, self.counters)

    @property
    def done(self) -> bool:
        """--stop-at-end: every owned merge partition has every shard's end mark and no
        window left to release (a stage owning none is done)."""
        return all(len(s.ended) >= self.shards and not s.parts for s in self.states.values())

    # -- the stage contract --------------------------------------------------------------
    def safe_offset(self, partition: Hashable) -> int | None:
        s = self.states.get(partition)
        if s is None:
            return None
        held = [*s.first_offset.values(), *s.mark_offset.values()]
        if s.next < 0:
            return min(held) if held else None
        return min([s.next, *held])

    def checkpoint(self, partition: Hashable) -> Checkpoint | None:
        s = self.states.get(partition)
        if s is None:
            return None
        late = s.late + sum(s.late_for.values())
        rejected = s.rejected + sum(s.rejected_for.values())
        return Checkpoint(s.closed_until, s.next, late, rejected)

    def restore(self, partition: Hashable, checkpoint: Checkpoint) -> None:
        s = self._state(partition)
        s.closed_until = max(s.closed_until, checkpoint.closed_until)
        s.resume_next = checkpoint.next
        s.late += checkpoint.late
        s.rejected += checkpoint.rejected

    def set_sources(self, sources: Sequence[Hashable]) -> None:
        return None

    def busy(self, partition: Hashable) -> None:
        return None

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        return None

    def assign(self, partitions: list[Hashable]) -> None:
        for p in partitions:
            self._state(p)

    def forget(self, partition: Hashable) -> None:
        self.states.pop(partition, None)

    def tick(self) -> StepResult:
        return StepResult()

    def close_all(self) -> StepResult:
        return StepResult()
