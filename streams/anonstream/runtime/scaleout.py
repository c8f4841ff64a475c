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
from collections.abc import Hashable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.columns import Columns
from anonstream.core.engine import PipelineEngine, StepResult
from anonstream.core.windows import window_starts_array

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
        if len(cols):
            cpidx = pidx[cols.index]
            for i in np.unique(cpidx).tolist():
                topic, partition = cast(tuple[str, int], part_of[i])
                progress[i] = [topic, partition, int(cols.ts[cpidx == i].max())]
            starts = window_starts_array(spec, cols.ts)
            for j in range(starts.shape[1]):
                col = starts[:, j]
                for start in np.unique(col).tolist():
                    p = (start // spec.step_ms) % self.partitions
                    by_partition.setdefault(p, []).append((col == start, start))
        rejected = sum(self.engine._rejected_pending.values())
        self.engine._rejected_pending.clear()
        prog = list(progress.values())
        for p in range(self.partitions):
            doc: dict[str, Any] = {"v": PARTIALS_VERSION, "progress": prog}
            if p == 0 and rejected:
                doc["rejected"] = rejected
            parts = by_partition.get(p, [])
            if parts:
                doc["rows"] = _rows(cols, parts)
            elif not prog and "rejected" not in doc:
                continue
            result.forward.append((self.topic, p, b"", orjson.dumps(doc)))
        return result

    # Ingest is stateless: its committed offset is simply the next one to read.
    def safe_offset(self, partition: Hashable) -> int | None:
        return self.engine._next_offset.get(partition)

    def checkpoint(self, partition: Hashable) -> dict[str, int]:
        return {}

    def restore(self, partition: Hashable, checkpoint: dict[str, int]) -> None:
        return None

    def assign(self, partitions: list[Hashable]) -> None:
        return None

    def forget(self, partition: Hashable) -> None:
        self.engine._next_offset.pop(partition, None)

    def tick(self) -> StepResult:
        return StepResult()

    def close_all(self) -> StepResult:
        return StepResult()


def _rows(cols: Columns, parts: list[tuple[npt.NDArray[np.bool_], int]]) -> dict[str, Any]:
    """The rows of some windows, as JSON-able columns (cell names once per message)."""
    sel_all = np.zeros(len(cols), dtype=bool)
    win = []
    idx_list = []
    for sel, start in parts:
        idx = np.flatnonzero(sel)
        idx_list.append(idx)
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
        "u": cols.unit[idx].tolist(),
        "e": cols.event[idx].tolist(),
        "d": dim_ref,
        "names": [list(k) for k in names],
        "m": measures,
    }


class ReleaseStage:
    """Windows, watermark and release rules over the partials of the windows it owns."""

    def __init__(self, engine: PipelineEngine, topic: str, partitions: int) -> None:
        self.engine = engine
        self.pipeline = engine.pipeline
        self.topic = topic
        self.partitions = partitions
        self.sources: list[Hashable] = []  # every raw partition: each holds the watermark

    @property
    def input_topic(self) -> str:
        return self.topic

    def process_batch(
        self,
        values: list[bytes],
        pidx: npt.NDArray[np.int64],
        part_of: list[Hashable],
        offs: npt.NDArray[np.int64],
    ) -> StepResult:
        e = self.engine
        n_measures = len(self.pipeline.measures)
        progress: dict[Hashable, int] = {}
        chunks: list[tuple[Columns, npt.NDArray[np.int64], int, int]] = []
        for k, raw in enumerate(values):
            doc = orjson.loads(raw)
            for topic, partition, ts in doc.get("progress", []):
                key = (topic, partition)
                progress[key] = max(progress.get(key, ts), ts)
            part = part_of[int(pidx[k])]
            offset = int(offs[k])
            again = offset < e._resume_next.get(part, -1)
            if doc.get("rejected") and not again:
                e._rejected_pending[part] += int(doc["rejected"])
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
                chunks.append((cols, np.array(rows["w"], dtype=np.int64), int(pidx[k]), offset))
        for cols, starts, pi, offset in chunks:
            n = len(cols)
            e.add_rows(
                cols, starts, np.full(n, pi, dtype=np.int64), np.full(n, offset, np.int64), part_of
            )
        # Offsets of messages without rows still move this partition forward.
        e.track_offsets(pidx, part_of, offs)
        for source, ts in progress.items():
            e.observe_progress(source, ts)
        return e.advance()

    def safe_offset(self, partition: Hashable) -> int | None:
        return self.engine.safe_offset(partition)

    def checkpoint(self, partition: Hashable) -> dict[str, int]:
        return self.engine.checkpoint(partition)

    def restore(self, partition: Hashable, checkpoint: dict[str, int]) -> None:
        self.engine.restore(partition, checkpoint)

    def assign(self, partitions: list[Hashable]) -> None:
        # The watermark waits for every raw partition, not for partials partitions.
        self.engine.assign(self.sources)

    def forget(self, partition: Hashable) -> None:
        """A partials partition moved to another worker: so do its windows, which the new
        owner rebuilds from the committed offset; keeping them here would release twice."""
        self.engine.forget(partition)
        number = cast(tuple[str, int], partition)[1]
        step = self.pipeline.window.step_ms
        for start in [s for s in self.engine.windows if (s // step) % self.partitions == number]:
            del self.engine.windows[start]

    def tick(self) -> StepResult:
        return self.engine.tick()

    def close_all(self) -> StepResult:
        return self.engine.close_all()


class StagesView:
    """One pipeline's two stages as the metrics see one engine."""

    def __init__(self, ingest: IngestStage, release: ReleaseStage) -> None:
        self.ingest = ingest
        self.release = release
        self.pipeline = release.pipeline

    @property
    def counters(self) -> Counter[str]:
        return self.ingest.engine.counters + self.release.engine.counters

    @property
    def rejections(self) -> Counter[str]:
        return self.ingest.engine.rejections

    @property
    def open_windows(self) -> int:
        return self.release.engine.open_windows

    @property
    def closed_until(self) -> int:
        return self.release.engine.closed_until

    def state_bytes(self) -> int:
        return self.release.engine.state_bytes()
