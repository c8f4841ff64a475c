"""Scale-out: several workers, one global k.

With several workers in one consumer group each sees only some input partitions, so the
people of one cell are spread over workers and a k checked per worker would be wrong. In
scale-out mode every worker runs two stages over one consumer (and one transaction):

- ingest: raw partitions -> decode + policy -> rows (window, cell, pseudonym, event hash,
  measures) -> the partials topic, partitioned by window, so all rows of a window meet in
  one place. Each batch also tells every partials partition how far each raw partition has
  got (its event-time progress), which drives the watermark downstream. Ingest holds no
  state: its offsets are committed in the same transaction as its partials.
- release: partials partitions -> the engine's windows, watermark and release rules, as in
  single mode, with the same checkpoints in the offsets' metadata.

Partials carry keyed pseudonyms and keyed hashes only, never a raw identifier; still, treat
the partials topic as internal (pseudonymous data, not for partners).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.checkpoint import Checkpoint
from anonstream.core.columns import Columns
from anonstream.core.engine import PipelineEngine, StepResult
from anonstream.core.pipeline import Pipeline
from anonstream.core.windows import NEG_INF, window_starts_array, window_units

PARTIALS_VERSION = 1


def partials_topic(group_id: str, pipeline: str) -> str:
    return f"anonstream.partials.{group_id}.{pipeline}"


class IngestStage:
    """Decode and policy for the raw partitions this worker owns; rows go to partials."""

    def __init__(self, engine: PipelineEngine, topic: str, partitions: int) -> None:
        self.engine = engine
        self.pipeline = engine.pipeline
        self.topic = topic
        self.partitions = partitions
        # Per owned raw partition: highest event time read, and when data last came.
        self._max_ts: dict[Hashable, int] = {}
        self._last_data: dict[Hashable, int] = {}

    @property
    def input_topic(self) -> str:
        return self.engine.input_topic

    def process_batch(
        self,
        values: list[bytes],
        pidx: npt.NDArray[np.int64],
        part_of: list[Hashable],
        offs: npt.NDArray[np.int64],
    ) -> StepResult:
        cols, _again, result = self.engine.ingest(values, pidx, part_of, offs)
        spec = self.pipeline.window
        progress: dict[int, list[Any]] = {}
        by_partition: dict[int, list[tuple[npt.NDArray[np.bool_], int]]] = {}
        now = self.engine.clock_ms()
        if len(cols):
            cpidx = pidx[cols.index]
            for i in np.unique(cpidx).tolist():
                key = part_of[i]
                topic, partition = cast(tuple[str, int], key)
                ts = max(int(cols.ts[cpidx == i].max()), self._max_ts.get(key, NEG_INF))
                self._max_ts[key] = ts
                self._last_data[key] = now
                progress[i] = [topic, partition, ts, now, now]
            starts = window_starts_array(spec, cols.ts)
            for j in range(starts.shape[1]):
                col = starts[:, j]
                for start in np.unique(col).tolist():
                    p = (start // spec.step_ms) % self.partitions
                    by_partition.setdefault(p, []).append((col == start, start))
        rejected = self.engine.take_rejected()
        prog = list(progress.values())
        for p in range(self.partitions):
            doc: dict[str, Any] = {"v": PARTIALS_VERSION, "progress": prog}
            if p == 0 and rejected:
                doc["rejected"] = rejected
            parts = by_partition.get(p, [])
            if parts:
                doc["rows"] = _rows(cols, parts, self.pipeline.rotation_ms)
            elif not prog and "rejected" not in doc:
                continue
            result.forward.append((self.topic, p, b"", orjson.dumps(doc)))
        return result

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

    def tick(self) -> StepResult:
        """A heartbeat for every owned raw partition, data or not: downstream, a partition
        is idle only when its live owner says it has had no data for a while; a partition
        whose owner is dead holds the watermark until a new owner reports."""
        result = StepResult()
        if not self._last_data:
            return result
        now = self.engine.clock_ms()
        beat = []
        for key, last in self._last_data.items():
            topic, partition = cast(tuple[str, int], key)
            beat.append([topic, partition, self._max_ts.get(key, NEG_INF), last, now])
        doc = orjson.dumps({"v": PARTIALS_VERSION, "progress": beat})
        for p in range(self.partitions):
            result.forward.append((self.topic, p, b"", doc))
        return result

    def close_all(self) -> StepResult:
        return StepResult()


def _rows(
    cols: Columns, parts: list[tuple[npt.NDArray[np.bool_], int]], rotation_ms: int
) -> dict[str, Any]:
    """The rows of some windows, as JSON-able columns (cell names once per message); each
    row carries the pseudonym that counts in its window."""
    sel_all = np.zeros(len(cols), dtype=bool)
    win = []
    idx_list = []
    units = []
    for sel, start in parts:
        idx = np.flatnonzero(sel)
        idx_list.append(idx)
        starts = np.full(len(idx), start, dtype=np.int64)
        earlier = None if cols.earlier_unit is None else cols.earlier_unit[idx]
        units.append(window_units(cols.unit[idx], earlier, cols.ts[idx], starts, rotation_ms))
        win.extend([start] * len(idx))
        sel_all |= sel
    idx = np.concatenate(idx_list)
    names: dict[tuple[str, ...], int] = {}
    dim_ref = [names.setdefault(cols.dims[i], len(names)) for i in idx.tolist()]
    m = cols.measures[idx]
    measures = [[None if x != x else x for x in row] for row in m.tolist()]  # NaN -> null
    return {
        "w": win,
        "ts": cols.ts[idx].tolist(),
        "u": np.concatenate(units).tolist(),
        "e": cols.event[idx].tolist(),
        "d": dim_ref,
        "names": [list(k) for k in names],
        "m": measures,
    }


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

    @property
    def input_topic(self) -> str:
        return self.topic

    def _engine(self, partition: Hashable) -> PipelineEngine:
        e = self.engines.get(partition)
        if e is None:
            e = self.engines[partition] = self.factory()
            e.assign(self.sources, hold=True)
        return e

    def process_batch(
        self,
        values: list[bytes],
        pidx: npt.NDArray[np.int64],
        part_of: list[Hashable],
        offs: npt.NDArray[np.int64],
    ) -> StepResult:
        result = StepResult()
        for i, part in enumerate(part_of):
            mine = np.flatnonzero(pidx == i)
            if len(mine):
                result.extend(
                    self._process_partition(part, [values[j] for j in mine.tolist()], offs[mine])
                )
        return result

    def _process_partition(
        self, part: Hashable, values: list[bytes], offs: npt.NDArray[np.int64]
    ) -> StepResult:
        e = self._engine(part)
        n_measures = len(self.pipeline.measures)
        progress: dict[Hashable, tuple[int, int, int]] = {}
        chunks: list[tuple[Columns, npt.NDArray[np.int64], int]] = []
        for k, raw in enumerate(values):
            doc = orjson.loads(raw)
            for topic, partition, ts, data_ms, sent_ms in doc.get("progress", []):
                key = (topic, partition)
                old = progress.get(key)
                progress[key] = (
                    (max(old[0], ts), max(old[1], data_ms), max(old[2], sent_ms))
                    if old
                    else (ts, data_ms, sent_ms)
                )
            offset = int(offs[k])
            again = e.replayed(part, offset)
            if doc.get("rejected") and not again:
                e.count_rejected(part, int(doc["rejected"]))
            rows = doc.get("rows")
            if rows:
                names = [tuple(x) for x in rows["names"]]
                n = len(rows["ts"])
                m = np.array(rows["m"], dtype=np.float64).reshape(n, n_measures)
                cols = Columns(
                    np.arange(n, dtype=np.int64),
                    np.array(rows["ts"], dtype=np.int64),
                    np.array(rows["u"], dtype=np.uint64),
                    np.array(rows["e"], dtype=np.uint64),
                    [names[i] for i in rows["d"]],
                    m,
                )
                chunks.append((cols, np.array(rows["w"], dtype=np.int64), offset))
        for cols, starts, offset in chunks:
            n = len(cols)
            e.add_rows(
                cols, starts, np.zeros(n, dtype=np.int64), np.full(n, offset, np.int64), [part]
            )
        # Offsets of messages without rows still move this partition forward.
        e.track_offsets(np.zeros(len(offs), dtype=np.int64), [part], offs)
        # How long a source has had no data is the owner's word (sent - data, one clock),
        # counted from when we read it: judged by our clock against the owner's data time,
        # a release stage a few seconds behind the ingest would find busy sources idle and
        # release their windows early.
        now = e.clock_ms()
        for source, (ts, data_ms, sent_ms) in progress.items():
            e.observe_progress(source, ts, now - max(0, sent_ms - data_ms), sent_ms)
        return e.advance()

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


class StagesView:
    """One pipeline's two stages as the metrics see one engine."""

    def __init__(self, ingest: IngestStage, release: ReleaseStage) -> None:
        self.ingest = ingest
        self.release = release
        self.pipeline = release.pipeline

    @property
    def counters(self) -> Counter[str]:
        total = Counter(self.ingest.engine.counters)
        for e in self.release.engines.values():
            total.update(e.counters)
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
