"""Prometheus metrics and health of a worker.

Engine counters are read at scrape time by a custom collector (no double bookkeeping on
the hot path); batch latency is a histogram observed per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from anonstream.core.engine import PipelineEngine
    from anonstream.core.step import StepResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        engines = self.m.engines
        events = CounterMetricFamily(
            "anonstream_events_in", "Raw messages read, per pipeline and topic",
            labels=["pipeline", "topic"],
        )  # fmt: skip
        rejected = CounterMetricFamily(
            "anonstream_events_rejected",
            "Messages rejected, by reason",
            labels=["pipeline", "reason"],
        )
        simple = {
            "accepted": ("anonstream_events_accepted", "Events past decode and policy"),
            "late": ("anonstream_events_late", "Events too late for an already released window"),
            "unknown_fields_dropped": (
                "anonstream_unknown_fields_dropped", "Fields outside the input contract, dropped",
            ),
            "cells_released": ("anonstream_cells_released", "Aggregate records released"),
            "cells_rolled_up": ("anonstream_cells_rolled_up", "Leaf cells merged into a roll-up"),
            "cells_suppressed": ("anonstream_cells_suppressed", "Leaf cells never reaching k"),
            "windows_released": ("anonstream_windows_released", "Windows closed and released"),
        }  # fmt: skip
        fams = {
            key: CounterMetricFamily(name, doc, labels=["pipeline"])
            for key, (name, doc) in simple.items()
        }
        open_w = GaugeMetricFamily("anonstream_open_windows", "Open windows", labels=["pipeline"])
        state = GaugeMetricFamily(
            "anonstream_state_bytes", "Bytes of open-window state", labels=["pipeline"]
        )
        wm = GaugeMetricFamily(
            "anonstream_released_until_seconds",
            "Windows ending before this are released (epoch s)",
            labels=["pipeline"],
        )
        for name, e in engines.items():
            events.add_metric([name, e.pipeline.source_topic], e.counters["events_in"])
            for reason, n in sorted(e.rejections.items()):
                rejected.add_metric([name, reason], n)
            for key, fam in fams.items():
                fam.add_metric([name], e.counters[key])
            open_w.add_metric([name], e.open_windows)
            state.add_metric([name], e.state_bytes())
            wm.add_metric([name], max(e.closed_until, 0) / 1000)
        lag = GaugeMetricFamily(
            "anonstream_consumer_lag", "Messages behind the end of each input partition",
            labels=["topic", "partition"],
        )  # fmt: skip
        for (topic, partition), n in sorted(self.m.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield events
        yield rejected
        yield from fams.values()
        yield open_w
        yield state
        yield wm
        yield lag


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.engines: Mapping[str, PipelineEngine] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.batch_seconds = Histogram(
            "anonstream_batch_seconds", "Time to process one batch, release included",
            ["pipeline"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.producer_restarts = PromCounter(
            "anonstream_producer_restarts", "Producers replaced after a broken transaction",
            registry=self.registry,
        )  # fmt: skip
        self.fetch_fallback = Gauge(
            "anonstream_fetch_fallback",
            "1 if this aiokafka could not take the batch fetch shortcut (more fetch CPU)",
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(self))
        self.started = time.time()
        self.last_batch_at: float | None = None
        self.last_release_at: float | None = None

    def bind_engines(self, engines: Mapping[str, PipelineEngine]) -> None:
        self.engines = engines

    @contextmanager
    def batch_timer(self, pipeline: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.batch_seconds.labels(pipeline).observe(time.perf_counter() - t0)

    def observe_batch(self, pipeline: str, n: int, step: StepResult) -> None:
        now = time.time()
        if n:
            self.last_batch_at = now
        if step.releases:
            self.last_release_at = now

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def health(self, *, consuming: bool) -> dict[str, Any]:
        now = time.time()

        def age(t: float | None) -> float | None:
            return None if t is None else round(now - t, 3)

        return {
            "status": "ok" if consuming else "starting",
            "consuming": consuming,
            "uptime_seconds": round(now - self.started, 3),
            "seconds_since_last_batch": age(self.last_batch_at),
            "seconds_since_last_release": age(self.last_release_at),
            "open_windows": {n: e.open_windows for n, e in self.engines.items()},
        }
