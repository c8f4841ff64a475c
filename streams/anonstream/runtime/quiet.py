"""When a raw partition is silent: Kafka's evidence, never our own clock.

Idle close may take a partition as silent only when Kafka has shown it so. Every fetch
response carries the partition's high watermark (the offset the next write will get), and
aiokafka notes when it processed it (`highwater()`, `last_poll_timestamp()`). A partition
is shown silent from the first response whose high watermark the consumer's position has
reached (nothing was unread) for as long as later responses show that same high watermark
(nothing new was written).

How long exactly: a response is built before aiokafka processes it, possibly much later
if the event loop was busy; but the fetcher asks for the next one only after processing
the last. So a response proves silence up to the processing time of the response BEFORE
it, and the silence is the span from the first of those responses to the second-to-last.

Time the worker spends elsewhere (a slow or throttled output, a long batch, a busy CPU) is
no evidence: while the fetcher does not fetch a partition, or while its records wait
unread, its silence does not grow. (Measuring "now minus the last data we processed" took
data the worker had not fetched yet for silence, and released windows before their events
were read.)

The end is the high watermark, not the last stable offset: records above the last stable
offset belong to an open transaction, data on its way, so a partition with one is not
silent until the producer commits or aborts (within its transaction timeout). Transaction
markers and aborted records occupy offsets too; the consumer's position moves past them
(runtime/kafka_compat.py does as aiokafka does), so a reader that has taken every committed
record and the marker after them stands at the high watermark.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from anonstream.runtime.kafka_compat import position_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchState:
    """What the consumer knows of one partition now; None where it knows nothing yet."""

    position: int | None  # the next offset the consumer will return
    highwater: int | None  # from the latest fetch response
    polled_ms: int | None  # when that response came in (wall clock, ms)


def fetch_state(consumer: Any, tp: Any) -> FetchState:
    """The consumer's position, high watermark and its time, without waiting: unknown
    while a reset is under way, and unknown is never silent."""
    return FetchState(
        position_now(consumer, tp), consumer.highwater(tp), consumer.last_poll_timestamp(tp)
    )


@dataclass(slots=True)
class _Quiet:
    highwater: int
    since_ms: int  # the first response showing it, reached
    proven_ms: int  # the second-to-last one: silence is proven up to here
    latest_ms: int


class Silence:
    """Each partition's shown silence, kept across engine rebuilds (it is Kafka's word)."""

    def __init__(self) -> None:
        self._quiet: dict[Hashable, _Quiet] = {}

    def update(self, key: Hashable, fs: FetchState) -> tuple[int, int] | None:
        """(since, until) over which `key` is shown silent, or None: it has data waiting,
        or what it has is unknown (no fetch response yet, a position being reset)."""
        if (
            fs.position is None
            or fs.highwater is None
            or fs.polled_ms is None
            or fs.position < fs.highwater
        ):
            self._quiet.pop(key, None)
            return None
        q = self._quiet.get(key)
        ts = fs.polled_ms
        if q is None or q.highwater != fs.highwater or ts < q.since_ms:
            q = self._quiet[key] = _Quiet(fs.highwater, ts, ts, ts)
        elif ts > q.latest_ms:
            q.proven_ms, q.latest_ms = q.latest_ms, ts
        return q.since_ms, q.proven_ms

    def forget(self, key: Hashable) -> None:
        self._quiet.pop(key, None)
