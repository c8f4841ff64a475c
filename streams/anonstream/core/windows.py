"""Event-time windows and the watermark that closes them.

Faust's windowed tables expire windows by wall clock, so a backfill or a replay would be
windowed wrongly; here windows are closed by event time only. The watermark is the highest
event time seen on each input partition, merged as the minimum over partitions that are not
idle, minus the allowed lateness. A window is released once, when the watermark passes its
end; events arriving later for it are counted as late and not merged.

Idle is decided from evidence, never from how long it has been since we last looked: a
partition read by this worker is idle once Kafka has shown it silent (nothing unread,
nothing new written) for the idle timeout (see `silent` and runtime/quiet.py); a raw
partition read by another worker (scale-out) is idle on its live owner's word.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from anonstream.core.pipeline import WindowSpec

NEG_INF = -(2**62)
HOLD = 2**62  # a last-seen time that never goes idle
REPORT_STALE_MS = 5_000  # scale-out owners report every second; silence means trouble


def window_starts(spec: WindowSpec, ts_ms: int) -> list[int]:
    """Start times of every window containing `ts_ms` (one when tumbling)."""
    last = ts_ms - ts_ms % spec.step_ms
    n = spec.size_ms // spec.step_ms
    return [last - i * spec.step_ms for i in range(n - 1, -1, -1)]


def window_starts_array(spec: WindowSpec, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Vectorised `window_starts`: shape (len(ts), windows per event)."""
    last = ts - ts % spec.step_ms
    n = spec.size_ms // spec.step_ms
    offsets = np.arange(n - 1, -1, -1, dtype=np.int64) * spec.step_ms
    return last[:, None] - offsets[None, :]


# One pseudonym per person per window: a window counts people with the pseudonym key of
# the key period it starts in. Windows divide the key period, so a hopping window starts
# at most one period before its events; such an event also carries the pseudonym of that
# earlier period. Tumbling windows never cross a period: no event needs it.


def needs_earlier_key(
    spec: WindowSpec, rotation_ms: int, ts: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Which events fall in a window that starts in the key period before their own."""
    if not spec.hopping:
        return np.zeros(len(ts), dtype=bool)
    first = ts - ts % spec.step_ms - (spec.size_ms - spec.step_ms)
    return first // rotation_ms < ts // rotation_ms


def window_units(
    unit: npt.NDArray[np.uint64],
    earlier_unit: npt.NDArray[np.uint64] | None,
    ts: npt.NDArray[np.int64],
    start: npt.NDArray[np.int64],
    rotation_ms: int,
) -> npt.NDArray[np.uint64]:
    """The pseudonyms that count in the windows starting at `start` (one per event)."""
    if earlier_unit is None:
        return unit
    return np.where(start // rotation_ms < ts // rotation_ms, earlier_unit, unit)


@dataclass
class _PartitionClock:
    max_ts: int = NEG_INF
    last_seen_ms: int = 0  # when this partition last had data
    last_report_ms: int | None = None  # scale-out: when its owner last reported on it
    # Our own partitions: the span over which Kafka showed it silent, (since, until).
    quiet: tuple[int, int] | None = None


@dataclass
class Watermark:
    """Per-partition event-time progress merged into one watermark."""

    allowed_lateness_ms: int
    idle_timeout_ms: int = 0  # 0: a silent partition holds the watermark back forever
    partitions: dict[Hashable, _PartitionClock] = field(default_factory=dict)
    _closed_all_at: int = NEG_INF

    def observe(
        self, partition: Hashable, max_ts: int, now_ms: int, report_ms: int | None = None
    ) -> None:
        pc = self.partitions.get(partition)
        if pc is None:
            pc = self.partitions[partition] = _PartitionClock()
        if max_ts > pc.max_ts:
            pc.max_ts = max_ts
        pc.quiet = None  # data, or data waiting: whatever silence was shown is over
        # Reports re-read after a restart are older than what is known: keep the newest.
        pc.last_seen_ms = now_ms if pc.last_seen_ms == HOLD else max(pc.last_seen_ms, now_ms)
        if report_ms is not None:
            pc.last_report_ms = max(pc.last_report_ms or report_ms, report_ms)

    def register(self, partition: Hashable, now_ms: int, *, hold: bool = False) -> None:
        """A partition assigned to us with no event yet: it holds the watermark back;
        with `hold` it cannot even go idle until someone reports on it (scale-out: its
        owner may be dead, and its events are still to come)."""
        if partition not in self.partitions:
            self.partitions[partition] = _PartitionClock(NEG_INF, HOLD if hold else now_ms)

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        """Evidence from the runtime that `partition` had nothing unread and nothing new
        written from `since_ms` to `until_ms` (the times of two fetch responses)."""
        pc = self.partitions.get(partition)
        if pc is not None and pc.last_seen_ms != HOLD and pc.last_report_ms is None:
            pc.quiet = (since_ms, until_ms)

    def _idle(self, pc: _PartitionClock, now_ms: int) -> bool:
        """Our own partition: idle once shown silent for the idle timeout; the time the
        worker spent elsewhere (a slow output, a busy CPU) is no evidence of silence.
        Scale-out: no data for the idle timeout, said by a live owner; a partition whose
        owner has stopped reporting (a dead worker) is not idle: its events are to come."""
        if not self.idle_timeout_ms:
            return False
        if pc.last_report_ms is None and pc.last_seen_ms != HOLD:
            return pc.quiet is not None and pc.quiet[1] - pc.quiet[0] >= self.idle_timeout_ms
        if now_ms - pc.last_seen_ms < self.idle_timeout_ms:
            return False
        return pc.last_report_ms is not None and now_ms - pc.last_report_ms < REPORT_STALE_MS

    def forget(self, partition: Hashable) -> None:
        self.partitions.pop(partition, None)

    def current(self, now_ms: int) -> int:
        """The watermark: windows ending at or before it are complete."""
        active = [pc.max_ts for pc in self.partitions.values() if not self._idle(pc, now_ms)]
        if not active:
            return NEG_INF
        return min(active) - self.allowed_lateness_ms

    def all_idle(self, now_ms: int) -> bool:
        return bool(self.idle_timeout_ms) and all(
            self._idle(pc, now_ms) for pc in self.partitions.values()
        )
