"""Soak run: a steady input rate for a given time through a normal (long-running) worker.

Events are produced at ``rate`` events/s for ``seconds`` to a fresh topic, each stamped
with the wall clock at the moment it is handed to the producer (``ts`` = now, epoch ms),
while ``anonstream worker`` runs with a copy of the web-activity pipeline whose windows
are short (10 s tumbling, 2 s allowed lateness, hourly pseudonym rotation) and with
``ANONSTREAM_IDLE_CLOSE_SECONDS=5``.  Meanwhile the output topic is read
(read_committed) and, once a second, the worker's RSS and its ``anonstream_events_in``
counter are sampled.

Reported: throughput (produced and processed events/s), end-to-end latency per window,
i.e. the time its ``window_summary`` arrived minus ``window_end + allowed_lateness`` (what
is left once the window's own wait is taken out), p50/p99/max in ms over the windows that
closed while input was flowing (windows closed by the idle timer after the input stopped
are listed apart), and the worker's RSS over time.  A table, a PNG and a final JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anonstream.synthetic import EventGenerator, Workload
from anonstream.synthetic.produce import produce
from anonstream.testing import WorkerProcess

from .extras import chart_unavailable
from .harness import (
    BENCH_SECRET,
    ROOT,
    KafkaProbe,
    kafka_broker,
    machine,
    metrics_value,
    proc_memory_kib,
    scratch_dir,
    tail,
    write_pipeline,
)

__all__ = ["SoakConfig", "print_soak", "run_soak", "soak"]

DEFAULT_PIPELINE = ROOT / "pipelines" / "web_activity.yaml"
SAMPLE_EVERY_S = 1.0


@dataclass
class SoakConfig:
    rate: float = 2000.0
    seconds: float = 120.0
    users: int = 10_000
    partitions: int = 4
    seed: int = 7
    bootstrap: str | None = None
    pipeline: Path = DEFAULT_PIPELINE
    timeout: float = 900.0
    logs: Path | None = None
    chart: Path = ROOT / "load" / "results" / "soak.png"
    window_s: int = 10
    lateness_s: int = 2
    idle_close_s: float = 5.0


def run_soak(
    rate: float | SoakConfig,
    seconds: float | None = None,
    users: int | None = None,
    *,
    console: Console | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the soak test; return its summary (JSON-able).

    Either ``run_soak(SoakConfig(...))`` or ``run_soak(rate, seconds, users, **options)``
    with ``options`` any other :class:`SoakConfig` field.
    """
    if isinstance(rate, SoakConfig):
        cfg = rate
    else:
        cfg = SoakConfig(rate=rate, **options)
        if seconds is not None:
            cfg.seconds = seconds
        if users is not None:
            cfg.users = users
    if cfg.rate <= 0 or cfg.seconds <= 0:
        raise ValueError("rate and seconds must be > 0")
    return soak(cfg, console or Console(stderr=True))


def _now_stamped(gen: EventGenerator, topic: str, count: int) -> Iterator[tuple[str, bytes]]:
    """Generator events with ``ts`` rewritten to the wall clock when each is taken."""
    dumps = orjson.dumps
    for event in gen.web_events(count):
        event["ts"] = time.time_ns() // 1_000_000
        yield topic, dumps(event)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class _Follower:
    """Reads the output topic on the probe's loop; notes when each window summary arrived."""

    def __init__(self, probe: KafkaProbe, topic: str) -> None:
        self.summaries: list[dict[str, Any]] = []
        self.aggregates = 0
        self._stop = threading.Event()
        self._future = probe.spawn(lambda: self._run(probe.bootstrap, topic))

    async def _run(self, bootstrap: str, topic: str) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )  # fmt: skip
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                arrived = time.time_ns() // 1_000_000
                for records in batch.values():
                    for r in records:
                        rec = orjson.loads(r.value or b"{}")
                        if rec.get("kind") == "window_summary":
                            rec["_arrived_ms"] = arrived
                            rec["_emitted_ms"] = r.timestamp
                            self.summaries.append(rec)
                        else:
                            self.aggregates += 1
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._future.result(10)


class _Sampler(threading.Thread):
    """Once a second: worker RSS, its events-in counter, the events produced so far."""

    def __init__(self, pid: int, metrics_url: str, produced: list[int]) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid = pid
        self.url = metrics_url
        self.produced = produced
        self.t0 = time.monotonic()
        self.samples: list[dict[str, float | None]] = []
        self.peak_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            mem = proc_memory_kib(self.pid)
            if mem is not None:
                self.peak_kib = max(self.peak_kib, mem[1])
            self.samples.append(
                {
                    "t": round(time.monotonic() - self.t0, 2),
                    "rss_mib": None if mem is None else round(mem[0] / 1024, 1),
                    "events_in": metrics_value(self.url, "anonstream_events_in", timeout=0.5),
                    "produced": float(self.produced[0]),
                }
            )
            self._halt.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def soak(cfg: SoakConfig, console: Console) -> dict[str, Any]:
    soak_id = uuid.uuid4().hex[:8]
    topic, out_topic = f"anonstream-soak-{soak_id}", f"anonstream-soak-{soak_id}.out"
    group = f"soak-{soak_id}"
    keep_logs = cfg.logs is not None
    window_ms, lateness_ms = cfg.window_s * 1000, cfg.lateness_s * 1000
    count = int(cfg.rate * cfg.seconds)
    summary: dict[str, Any] = {
        "benchmark": "anonstream-soak", "ok": False, "rate": cfg.rate, "seconds": cfg.seconds,
        "users": cfg.users, "partitions": cfg.partitions,
        "window": {"size_s": cfg.window_s, "allowed_lateness_s": cfg.lateness_s,
                   "idle_close_s": cfg.idle_close_s},
    }  # fmt: skip
    error: str | None = None
    from anonstream.broker.topics import create_topics

    def say(message: str) -> None:
        console.print(f"[dim]{escape(message)}[/]")

    with (
        scratch_dir(cfg.logs, "anonstream-soak-", say) as logs,
        kafka_broker(cfg.bootstrap, say=say) as bootstrap,
        KafkaProbe(bootstrap) as probe,
    ):
        create_topics(bootstrap, {topic: cfg.partitions, out_topic: 1})
        pipeline = write_pipeline(
            cfg.pipeline, logs / "pipelines", source_topic=topic, output_topic=out_topic,
            changes={
                "pseudonym_rotation": "hourly",
                "window": {"size": f"{cfg.window_s}s", "step": f"{cfg.window_s}s",
                           "allowed_lateness": f"{cfg.lateness_s}s"},
            },
        )  # fmt: skip
        worker = WorkerProcess(
            bootstrap, pipelines=[str(pipeline)], pipelines_dir=pipeline.parent,
            group_id=group, idle_close_seconds=cfg.idle_close_s, secret=BENCH_SECRET,
            extra_env={"ANONSTREAM_DEAD_LETTER_TOPIC": f"{topic}.deadletter"},
            log_path=logs / "worker.log", cwd=ROOT,
        )  # fmt: skip
        produced = [0]
        sent, produce_s, produce_end_ms = 0, 0.0, 0
        follower: _Follower | None = None
        sampler: _Sampler | None = None
        worker.start(wait=False)
        assert worker.proc is not None and worker.log_path is not None
        proc = worker.proc
        try:
            console.print(f"[bold]soak[/]: worker pid {proc.pid}, waiting until it consumes")
            worker.wait_healthy(120.0)
            follower = _Follower(probe, out_topic)
            sampler = _Sampler(proc.pid, f"{worker.url}/metrics", produced)
            sampler.start()
            console.print(
                f"[bold]soak[/]: producing {cfg.rate:,.0f} events/s for {cfg.seconds:.0f} s "
                f"({count:,} events, {cfg.users:,} users) to {topic}"
            )
            gen = EventGenerator(Workload(users=cfg.users, seed=cfg.seed))

            def counted() -> Iterator[tuple[str, bytes]]:
                for item in _now_stamped(gen, topic, count):
                    produced[0] += 1
                    yield item

            with console.status("producing") as status:

                async def produce_with_status() -> int:
                    task = asyncio.ensure_future(
                        produce(bootstrap, counted(), rate=cfg.rate, total=count)
                    )
                    while not task.done():
                        if sampler is not None and sampler.samples:
                            last = sampler.samples[-1]
                            status.update(
                                f"producing: {produced[0]:,}/{count:,} sent, worker read "
                                f"{last['events_in'] or 0:,.0f}, RSS {last['rss_mib']} MiB, "
                                f"{len(follower.summaries) if follower else 0} windows out"
                            )
                        await asyncio.sleep(0.5)
                    return task.result()

                t_produce = time.monotonic()
                sent = asyncio.run(produce_with_status())
                produce_s = time.monotonic() - t_produce
            produce_end_ms = time.time_ns() // 1_000_000
            last_window_end = (produce_end_ms // window_ms + 1) * window_ms
            # Wait for the window holding the last events (closed by the idle timer).
            deadline = time.monotonic() + cfg.window_s + cfg.lateness_s + cfg.idle_close_s + 60
            with console.status("waiting for the last window"):
                while time.monotonic() < deadline and proc.poll() is None:
                    ends = [_ms(s["window_end"]) for s in follower.summaries]
                    if ends and max(ends) >= last_window_end:
                        break
                    time.sleep(0.5)
            time.sleep(1.5)  # one more sample after the last release
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            sent = sent or produced[0]
        finally:
            try:
                if sampler is not None:
                    sampler.stop()
                if follower is not None:
                    follower.close()
            finally:
                code = worker.stop(30.0)
        worker_log = worker.log_path.read_text(encoding="utf-8", errors="replace")
        if cfg.bootstrap:
            with contextlib.suppress(Exception):
                probe.delete_topics([t for t in probe.topics() if soak_id in t])

    samples = sampler.samples if sampler else []
    summaries = follower.summaries if follower else []
    windows = []
    for s in sorted(summaries, key=lambda s: s["window_end"]):
        end = _ms(s["window_end"])
        due = end + lateness_ms
        windows.append({
            "window_end": s["window_end"],
            "latency_ms": s["_arrived_ms"] - due,
            "emit_latency_ms": s["_emitted_ms"] - due,
            "while_flowing": due <= produce_end_ms,
            "cells_released": s.get("cells_released"),
            "late_events": s.get("late_events"),
        })  # fmt: skip
    flowing = [float(w["latency_ms"]) for w in windows if w["while_flowing"]]
    processed = max((s["events_in"] or 0.0 for s in samples), default=0.0)
    rss = [s["rss_mib"] for s in samples if s["rss_mib"] is not None]
    busy = [s for s in samples if s["produced"] and s["produced"] < sent]
    rate_in = None
    if len(busy) >= 2:
        first, last = busy[0], busy[-1]
        span = float(last["t"] or 0) - float(first["t"] or 0)
        done = float(last["events_in"] or 0) - float(first["events_in"] or 0)
        rate_in = round(done / span, 1) if span > 0 else None
    if error is None and code not in (0, -signal.SIGTERM):
        error = f"the worker exited with code {code}:\n{tail(worker_log)}"
    if error is None and processed < sent:
        error = f"the worker read {processed:,.0f} of {sent:,} events"
    if error is None and not flowing:
        error = "no window was released while input was flowing"
    summary.update(
        ok=error is None,
        error=error,
        events=sent,
        produce_seconds=round(produce_s, 2),
        produced_events_per_s=round(sent / produce_s, 1) if produce_s else None,
        processed_events=processed,
        processed_events_per_s=rate_in,
        windows=len(windows),
        latency_ms={
            "p50": _percentile(flowing, 50), "p99": _percentile(flowing, 99),
            "max": max(flowing) if flowing else None, "windows": len(flowing),
        },
        latency_after_input_ms=[w["latency_ms"] for w in windows if not w["while_flowing"]],
        aggregates=follower.aggregates if follower else 0,
        rss_mib={
            "start": rss[0] if rss else None, "max": max(rss) if rss else None,
            "end": rss[-1] if rss else None,
            "peak_hwm": round(sampler.peak_kib / 1024, 1) if sampler else None,
        },
        rss_over_time=[[s["t"], s["rss_mib"]] for s in samples],
        events_in_over_time=[[s["t"], s["events_in"]] for s in samples],
        window_latencies=windows,
        worker_exit_code=code,
    )  # fmt: skip
    summary["machine"] = machine()
    no_chart = chart_unavailable()
    if no_chart is not None:
        summary["chart_skipped"] = no_chart
    summary["chart"] = (
        str(draw_soak_chart(summary, cfg.chart)) if samples and not no_chart else None
    )
    if not summary["ok"] or keep_logs:
        summary["logs"] = str(logs)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    if error:
        console.print(f"[red]soak failed[/]: {escape(error)}")
    return summary


def draw_soak_chart(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    pts = [(t, v) for t, v in summary["events_in_over_time"] if v is not None]
    rates = [(t1, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in pairwise(pts) if t1 > t0]
    if rates:
        ax1.plot(*zip(*rates, strict=True), color="#1f77b4", label="processed")
    ax1.axhline(summary["rate"], color="#7f7f7f", linestyle="--", label="target input rate")
    ax1.set_title("worker throughput (events/s)")
    ax1.set_xlabel("s")
    ax1.legend(fontsize=8)
    rss = [(t, v) for t, v in summary["rss_over_time"] if v is not None]
    if rss:
        ax2.plot(*zip(*rss, strict=True), color="#d62728")
    ax2.set_title("worker RSS (MiB)")
    ax2.set_xlabel("s")
    lat = summary["window_latencies"]
    ax3.bar(
        range(len(lat)), [w["latency_ms"] for w in lat],
        color=["#2ca02c" if w["while_flowing"] else "#bcbd22" for w in lat],
    )  # fmt: skip
    ax3.set_title("latency per window beyond end + lateness (ms)")
    ax3.set_xlabel("window (yellow: closed by idle timer after input stopped)")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"anonstream soak: {summary['rate']:,.0f} events/s for {summary['seconds']:.0f} s, "
        f"{summary['window']['size_s']} s windows"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_soak(summary: dict[str, Any]) -> None:
    """The soak table, then the summary as the last line of stdout."""
    out = Console(soft_wrap=True)
    table = Table(title=f"soak: {summary['rate']:,.0f} events/s for {summary['seconds']:.0f} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    lat = summary.get("latency_ms") or {}
    rss = summary.get("rss_mib") or {}

    def fmt(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    rows = [
        ("events produced", fmt(summary.get("events"))),
        ("produced events/s", fmt(summary.get("produced_events_per_s"))),
        ("processed events/s (while producing)", fmt(summary.get("processed_events_per_s"))),
        ("windows released", fmt(summary.get("windows"))),
        ("latency p50 ms (beyond end + lateness)", fmt(lat.get("p50"))),
        ("latency p99 ms", fmt(lat.get("p99"))),
        ("latency max ms", fmt(lat.get("max"))),
        ("RSS start / max / end MiB",
         f"{fmt(rss.get('start'))} / {fmt(rss.get('max'))} / {fmt(rss.get('end'))}"),
        ("status", "ok" if summary.get("ok") else f"FAILED: {summary.get('error')}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, escape(value))
    out.print(table)
    if summary.get("chart"):
        out.print(f"chart: {summary['chart']}")
    print(json.dumps(summary), flush=True)
