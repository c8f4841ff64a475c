"""The load benchmark (issue 5): anonstream against the ceiling and two peers, in ONE run.

1. The standard workload is produced once to a fresh topic: synthetic web-activity events
   (:class:`~anonstream.synthetic.EventGenerator`, ~430 bytes of JSON each, Zipf users
   and pages, identifiers inside).
2. Each run consumes that topic from the start with a fresh consumer group, in a fresh
   process of its own, until the last event is processed:

   ``ceiling``      raw aiokafka ``getmany`` + ``orjson.loads``, no other work;
   ``naive_faust``  the per-event Faust agent a Faust user writes for the job;
   ``quixstreams``  the same job written for quixstreams;
   ``anonstream``   ``anonstream worker --stop-at-end`` with the shipped web-activity
                    pipeline (its source and output topics rewired), until its releases
                    for the whole input are out and it exits.
   ``faust_agent``  the same pipeline as an agent of a plain Faust app
                    (:mod:`anonstream.faust`, runner ``runners/faust_agent.py``): the same
                    engine fed by ``stream.noack_take`` batches, releases through Faust's
                    producer; ``ratio_faust_agent`` is its events/s over ``anonstream``'s.
   ``anonstream-dp`` the same pipeline with every output switched to ``privacy: dp``
                    (:data:`DP_OUTPUT`, :data:`DP_BUDGET`); ``ratio_dp_k`` is its events/s
                    over ``anonstream``'s, ``cpu_ratio_dp_k`` its events per CPU second.
   ``scale``        for each worker count of ``--scale`` (1,2,3 by default): that many
                    ``anonstream worker --stop-at-end`` processes in scale-out mode, one
                    fresh group and output topic per count, from spawn until every window
                    summary of the input is on the output topic and every worker has
                    exited (each ends once what it owns has ended, as single mode does).

   Time is wall clock from spawn to exit (start-up included; the time to the first
   event is reported next to it); peak RSS is that process's own high-water mark.
3. A table, a PNG chart and, as the LAST line of stdout, one JSON object with every figure
   and the ratios ``ratio_ceiling``, ``ratio_naive_faust``, ``ratio_quixstreams``
   (anonstream's events/s over the other run's); the scale run under ``scale``.

Progress goes to stderr.  ``--soak`` runs :func:`anonstream_load.soak.run_soak` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from anonstream.synthetic import EventGenerator, Workload
from anonstream.synthetic.produce import produce

from .cpucap import CpuCapError, cpu_groups, parse_cap
from .extras import chart_unavailable, unavailable_runs
from .harness import (
    BENCH_SECRET,
    ROOT,
    ChildResult,
    KafkaProbe,
    json_line,
    kafka_broker,
    machine,
    metrics_value,
    run_child,
    run_until,
    scratch_dir,
    worker_command,
    worker_env,
    worker_supports_stop_at_end,
    write_pipeline,
)

__all__ = [
    "RUN_NAMES",
    "BenchConfig",
    "RunResult",
    "main",
    "produce_workload",
    "run_benchmark",
]

RUN_NAMES = (
    "ceiling", "naive_faust", "quixstreams", "anonstream", "faust_agent", "anonstream-dp",
    "kstreams", "scale",
)  # fmt: skip
_RUNNER_MODULES = {
    "ceiling": "anonstream_load.runners.ceiling",
    "naive_faust": "anonstream_load.runners.naive_faust",
    "quixstreams": "anonstream_load.runners.quix",
}
DEFAULT_CHART = ROOT / "load" / "results" / "bench.png"
DEFAULT_PIPELINE = ROOT / "pipelines" / "web_activity.yaml"
# The anonstream-dp run: the k run's pipeline, each output in dp mode at the largest epsilon
# and delta per window that dp mode accepts (the most cells selected, so the most release
# work), and a period budget that pays for 1,000 windows, so no window of a run goes
# unreleased for want of budget (the run fails if one does): the runs differ in the mode only.
DP_OUTPUT = {"privacy": "dp", "dp": {"epsilon": 10.0, "delta": 1e-4}}
DP_BUDGET = {"epsilon": 1e4, "delta": 0.1}
MIB = 1024 * 1024


@dataclass
class BenchConfig:
    events: int = 1_000_000
    users: int = 100_000
    partitions: int = 4
    seed: int = 7
    runs: tuple[str, ...] = RUN_NAMES
    chart: Path = DEFAULT_CHART
    timeout: float = 900.0
    bootstrap: str | None = None
    pipeline: Path = DEFAULT_PIPELINE
    logs: Path | None = None
    profile: Path | None = None  # an extra, unmeasured anonstream run under pyinstrument
    scale: tuple[int, ...] = (1, 2, 3)  # worker counts of the scale run
    partials_partitions: int = 6
    cap: float | None = None  # cores per scale-out worker (a cgroup each), None: no cap
    release_sharded: bool = False  # scale run: ANONSTREAM_RELEASE_SHARDED
    kstreams_guarantee: str = "exactly_once_v2"


@dataclass
class RunResult:
    name: str
    ok: bool
    count: int | None = None
    seconds: float | None = None
    events_per_s: float | None = None
    peak_rss_mib: float | None = None
    first_event_s: float | None = None
    exit_code: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """The run's entry under ``runs`` in the JSON line."""
        d = asdict(self)
        d.pop("name")
        extra = d.pop("extra")
        steady = None
        if self.seconds is not None and self.first_event_s is not None and self.count:
            busy = self.seconds - self.first_event_s
            steady = self.count / busy if busy > 0 else None
        d["steady_events_per_s"] = _round(steady, 1)
        for key in ("seconds", "first_event_s"):
            d[key] = _round(d[key], 3)
        d["events_per_s"] = _round(d["events_per_s"], 1)
        d["peak_rss_mib"] = _round(d["peak_rss_mib"], 1)
        return {**d, **extra}


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


# --------------------------------------------------------------------------------------------
# Step 1: the workload
# --------------------------------------------------------------------------------------------


def produce_workload(
    bootstrap: str, topic: str, cfg: BenchConfig, console: Console, *, count_windows: bool = False
) -> dict[str, Any]:
    """Create ``topic`` and produce the standard workload to it, with a progress bar.

    ``count_windows``: also count the pipeline's windows that the events fall in (the scale
    run waits for one window summary each)."""
    from anonstream.broker.topics import create_topics
    from anonstream.core.decode import parse_ts
    from anonstream.core.pipeline import load_pipeline
    from anonstream.core.windows import window_starts

    create_topics(bootstrap, {topic: cfg.partitions})
    gen = EventGenerator(Workload(users=cfg.users, seed=cfg.seed))
    spec = load_pipeline(cfg.pipeline).window if count_windows else None
    starts: set[int] = set()
    sent_bytes = 0
    progress = Progress(
        TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
        transient=False,
    )  # fmt: skip
    task = progress.add_task("produce", total=cfg.events, rate="")
    t0 = time.monotonic()

    def events() -> Iterator[tuple[str, bytes]]:
        nonlocal sent_bytes
        for i, value in enumerate(gen.encoded_web_events(cfg.events), 1):
            sent_bytes += len(value)
            if spec is not None and (ts := parse_ts(orjson.loads(value).get("ts"))) is not None:
                starts.update(window_starts(spec, ts))
            if i % 4096 == 0:
                rate = i / max(time.monotonic() - t0, 1e-9)
                progress.update(task, completed=i, rate=f"{rate:,.0f} ev/s")
            yield topic, value

    with progress:
        sent = asyncio.run(produce(bootstrap, events(), total=cfg.events))
        progress.update(task, completed=sent)
    seconds = time.monotonic() - t0
    return {
        "topic": topic,
        "events": sent,
        "seconds": round(seconds, 3),
        "events_per_s": round(sent / seconds, 1) if seconds > 0 else None,
        "mean_event_bytes": round(sent_bytes / sent, 1) if sent else None,
        "megabytes": round(sent_bytes / MIB, 1),
        "windows": len(starts) if spec is not None else None,
    }


# --------------------------------------------------------------------------------------------
# Step 2: the runs
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    cfg: BenchConfig
    bootstrap: str
    topic: str
    bench_id: str
    probe: KafkaProbe
    logs: Path
    console: Console


def _child_env() -> dict[str, str]:
    # Same interpreter and environment: the children import anonstream_load as we did.
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _group_progress(
    ctx: _Ctx,
    name: str,
    group: str,
    extra_poll: Callable[[float], None] | None = None,
    interval: float = 1.0,
) -> tuple[Progress, Any, Callable[[float, int | None], None]]:
    """A progress line for one run, fed by its group's committed offsets (read every
    ``interval`` s; the caller unwatches the group), and the poll callback that feeds it."""
    ctx.probe.watch_group(group, ctx.topic, interval=interval)
    progress = Progress(
        SpinnerColumn(), TextColumn(f"[bold]{name:<12}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("RSS {task.fields[rss]}"), TimeElapsedColumn(), console=ctx.console,
        transient=False,
    )  # fmt: skip
    task = progress.add_task(name, total=ctx.cfg.events, rss="-")

    def on_poll(elapsed: float, rss_kib: int | None) -> None:
        rss = f"{rss_kib / 1024:,.0f} MiB" if rss_kib else "-"
        progress.update(task, completed=ctx.probe.watched(group, ctx.topic), rss=rss)
        if extra_poll is not None:
            extra_poll(elapsed)

    return progress, task, on_poll


def _watched_child(
    ctx: _Ctx,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    group: str,
    extra_poll: Callable[[float], None] | None = None,
) -> ChildResult:
    """Run one child with a progress line fed by its group's committed offsets."""
    progress, task, on_poll = _group_progress(ctx, name, group, extra_poll)

    try:
        with progress:
            result = run_child(
                cmd, env=env, cwd=ROOT, timeout=ctx.cfg.timeout, log_dir=ctx.logs, name=name,
                on_poll=on_poll,
            )  # fmt: skip
            with contextlib.suppress(Exception):
                progress.update(task, completed=ctx.probe.committed(group, ctx.topic))
    finally:
        ctx.probe.unwatch_group(group, ctx.topic)
    return result


def _failure(name: str, result: ChildResult, timeout: float) -> str | None:
    if result.timed_out:
        return f"{name} did not finish within {timeout:.0f} s and was killed"
    if result.returncode != 0:
        return f"{name} exited with code {result.returncode}:\n{result.stderr_tail}"
    return None


def _read_report(run: RunResult, report: dict[str, Any], started_at: float) -> None:
    """A child runner's result line: its count, first-event time and the exact
    high-water mark of its memory, read just before it exited."""
    run.count = int(report["count"])
    if report.get("t_first_event") is not None:
        run.first_event_s = float(report["t_first_event"]) - started_at
    if report.get("vm_hwm_kib"):
        run.peak_rss_mib = max(run.peak_rss_mib or 0.0, report["vm_hwm_kib"] / 1024)


def _measured(name: str, result: ChildResult, load_before: float) -> RunResult:
    run = RunResult(
        name=name,
        ok=False,
        seconds=result.seconds,
        peak_rss_mib=result.peak_rss_kib / 1024 if result.peak_rss_kib else None,
        exit_code=result.returncode,
    )
    # CPU time is less sensitive than wall time to other work on the machine; the load
    # average before the run tells whether there was any.
    run.extra["cpu_seconds"] = _round(result.cpu_seconds, 3)
    run.extra["loadavg_1m_before"] = round(load_before, 2)
    return run


def _reporting_child(
    ctx: _Ctx, name: str, cmd: list[str], env: dict[str, str], group: str, verb: str
) -> tuple[RunResult, str | None, dict[str, Any] | None]:
    """Run a child that prints a JSON result line (a peer runner): its measures, the
    first error (exit, timeout, no result line, not every event `verb`), its report."""
    load_before = os.getloadavg()[0]
    result = _watched_child(ctx, name, cmd, env, group)
    run = _measured(name, result, load_before)
    error = _failure(name, result, ctx.cfg.timeout)
    report = json_line(result.stdout)
    if report is not None:
        _read_report(run, report, result.started_at)
    elif error is None:
        error = f"{name} printed no result line:\n{result.stdout[-2000:]}"
    if error is None and run.count != ctx.cfg.events:
        error = f"{name} {verb} {run.count} events, not {ctx.cfg.events}"
    return run, error, report


def _run_peer(ctx: _Ctx, name: str) -> RunResult:
    group = f"bench-{ctx.bench_id}-{name}"
    cmd = [
        sys.executable, "-m", _RUNNER_MODULES[name], "--bootstrap", ctx.bootstrap,
        "--topic", ctx.topic, "--events", str(ctx.cfg.events), "--group", group,
        "--partitions", str(ctx.cfg.partitions),
    ]  # fmt: skip
    run, error, _ = _reporting_child(ctx, name, cmd, _child_env(), group, "processed")
    return _finish(run, error, ctx.cfg.events)


def _run_anonstream(ctx: _Ctx, profile: Path | None = None, dp: bool = False) -> RunResult:
    """The worker run; with ``profile``, under pyinstrument (report written there); with
    ``dp``, its outputs in dp mode (run ``anonstream-dp``)."""
    name = "anonstream-dp" if dp else "anonstream" if profile is None else "anonstream-profile"
    if not worker_supports_stop_at_end():
        return RunResult(
            name=name, ok=False, error="`anonstream worker` has no --stop-at-end flag yet"
        )
    from anonstream.broker.local import free_ports

    group = f"bench-{ctx.bench_id}-{name}"
    out_topic = f"{ctx.topic}.{name}.out"
    pipe_dir = ctx.logs / ("pipelines-dp" if dp else "pipelines")
    pipeline = write_pipeline(
        ctx.cfg.pipeline, pipe_dir, source_topic=ctx.topic, output_topic=out_topic,
        changes={"dp_budget": DP_BUDGET} if dp else None, output_changes=DP_OUTPUT if dp else None,
    )  # fmt: skip
    port = free_ports(1)[0]
    env = worker_env(
        ctx.bootstrap, group=group, web_port=port,
        dead_letter_topic=f"{ctx.topic}.{name}.deadletter", ANONSTREAM_PIPELINES_DIR=str(pipe_dir),
    )  # fmt: skip
    first: dict[str, float] = {}
    next_probe = [0.0]
    url = f"http://127.0.0.1:{port}/metrics"

    def watch_first_event(elapsed: float) -> None:
        # Until the first event shows up in the worker's counters: 3 look-ups a second.
        if "t" in first or elapsed < next_probe[0]:
            return
        next_probe[0] = elapsed + 0.3
        value = metrics_value(url, "anonstream_events_in", timeout=0.25)
        if value:
            first["t"] = elapsed

    cmd = worker_command(pipeline, "--stop-at-end")
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        renderer = "html" if profile.suffix == ".html" else "text"
        # python -m pyinstrument -r R -o PATH -m anonstream.cli worker ...
        cmd[1:1] = ["-m", "pyinstrument", "-r", renderer, "-o", str(profile)]
    load_before = os.getloadavg()[0]
    result = _watched_child(ctx, name, cmd, env, group, extra_poll=watch_first_event)
    run = _measured(name, result, load_before)
    run.first_event_s = first.get("t")
    error = _failure(name, result, ctx.cfg.timeout)
    if error is None:
        # Everything read and every window released: the committed offsets reach the end.
        run.count = ctx.probe.committed(group, ctx.topic)
        if run.count != ctx.cfg.events:
            error = (
                f"anonstream exited 0 but its committed offsets cover {run.count} of "
                f"{ctx.cfg.events} events"
            )
        run.extra["releases"] = kinds = _release_kinds(ctx, out_topic)
        if error is None and not kinds.get("window_summary"):
            error = "anonstream released no window summary"
        if error is None and kinds.get(_EXHAUSTED):
            error = f"{kinds[_EXHAUSTED]} window summaries say budget_exhausted"
    return _finish(run, error, ctx.cfg.events)


_EXHAUSTED = "budget_exhausted"


def _run_faust_agent(ctx: _Ctx) -> RunResult:
    """The pipeline of the anonstream run as an agent of a Faust app (anonstream.faust)."""
    name = "faust_agent"
    group = f"bench-{ctx.bench_id}-{name}"
    out_topic = f"{ctx.topic}.{name}.out"
    pipeline = write_pipeline(
        ctx.cfg.pipeline, ctx.logs / "pipelines-faust", source_topic=ctx.topic,
        output_topic=out_topic,
    )  # fmt: skip
    cmd = [
        sys.executable, "-m", "anonstream_load.runners.faust_agent", "--bootstrap", ctx.bootstrap,
        "--pipeline", str(pipeline), "--events", str(ctx.cfg.events), "--group", group,
    ]  # fmt: skip
    env = {**_child_env(), "ANONSTREAM_SECRET": BENCH_SECRET}
    env.pop("ANONSTREAM_SECRET_FILE", None)
    run, error, _ = _reporting_child(ctx, name, cmd, env, group, "read")
    run.extra["releases"] = kinds = _release_kinds(ctx, out_topic)
    if error is None and not kinds.get("window_summary"):
        error = f"{name} released no window summary"
    return _finish(run, error, ctx.cfg.events)


def _release_kinds(ctx: _Ctx, topic: str) -> dict[str, int]:
    """Records on ``topic`` (read_committed) by their ``kind``; and the window summaries of
    dp windows left unreleased for want of budget, under ``budget_exhausted``."""
    kinds: dict[str, int] = {}
    for value in ctx.probe.read_all(topic):
        record = json.loads(value)
        kind = str(record.get("kind"))
        kinds[kind] = kinds.get(kind, 0) + 1
        if (record.get("privacy") or {}).get("status") == _EXHAUSTED:
            kinds[_EXHAUSTED] = kinds.get(_EXHAUSTED, 0) + 1
    return kinds


def _run_kstreams(ctx: _Ctx, jar: Path, threads: int, name: str) -> RunResult:
    """The Kafka Streams peer with ``threads`` stream threads (``load/jvm``)."""
    from anonstream.broker.topics import create_topics
    from anonstream.core.pipeline import load_pipeline

    from .kstreams import peer_command

    group = f"bench-{ctx.bench_id}-{name}"
    out_topic = f"{ctx.topic}.{name}.out"
    create_topics(ctx.bootstrap, {out_topic: ctx.cfg.partitions})
    cmd = peer_command(
        jar, bootstrap=ctx.bootstrap, topic=ctx.topic, output=out_topic, group=group,
        events=ctx.cfg.events, partitions=ctx.cfg.partitions, threads=threads,
        k=load_pipeline(ctx.cfg.pipeline).k, guarantee=ctx.cfg.kstreams_guarantee,
        timeout_s=ctx.cfg.timeout,
    )  # fmt: skip
    env = {**_child_env(), "ANONSTREAM_SECRET": BENCH_SECRET}
    run, error, report = _reporting_child(ctx, name, cmd, env, group, "processed")
    run.extra.update(threads=threads, guarantee=ctx.cfg.kstreams_guarantee)
    for key in ("rejected", "late", "released_cells", "suppressed_cells"):
        run.extra[key] = (report or {}).get(key)
    if error is None:
        run.extra["releases"] = kinds = _release_kinds(ctx, out_topic)
        if kinds.get("aggregate", 0) != run.extra["released_cells"]:
            error = (
                f"{name} released {run.extra['released_cells']} cells but the output topic "
                f"holds {kinds.get('aggregate', 0)} committed aggregates"
            )
    return _finish(run, error, ctx.cfg.events)


def _kstreams_runs(ctx: _Ctx, single: RunResult | None) -> list[RunResult]:
    """``kstreams`` (one stream thread) and ``kstreams_all`` (a thread per core); with
    anonstream's run (``single``), the ratio of their released cells to anonstream's."""
    from anonstream.broker.local import BrokerError, find_java

    from .kstreams import PeerBuildError, ensure_peer_jar

    counts = {"kstreams": 1}
    if (os.cpu_count() or 1) > 1:
        counts["kstreams_all"] = os.cpu_count() or 1
    try:
        ctx.console.print("[dim]the Kafka Streams peer: building it if needed (not timed)[/]")
        jar = ensure_peer_jar(quiet=False)
        find_java()  # a cached build still needs a JVM to run
    except (PeerBuildError, BrokerError) as exc:
        return [RunResult(name=n, ok=False, error=str(exc)) for n in counts]
    runs = []
    for name, threads in counts.items():
        ctx.console.print(f"[bold]run {name}[/] ({threads} stream thread(s))")
        run = _run_kstreams(ctx, jar, threads, name)
        mine = (single.extra.get("releases") or {}).get("aggregate") if single else None
        theirs = (run.extra.get("releases") or {}).get("aggregate")
        if run.ok and mine and theirs is not None:
            # Not the same rules (no roll-up, no contribution bounds): the same order only.
            run.extra["aggregates_vs_anonstream"] = round(theirs / mine, 3)
            if not 0.1 <= theirs / mine <= 10:
                ctx.console.print(
                    f"  [yellow]{name} released {theirs:,} cells against anonstream's "
                    f"{mine:,}: not the same order of magnitude[/]"
                )
        runs.append(run)
    return runs


def _finish(run: RunResult, error: str | None, events: int) -> RunResult:
    run.error = error
    run.ok = error is None
    if run.ok and run.seconds:
        run.events_per_s = events / run.seconds
        cpu = run.extra.get("cpu_seconds")
        run.extra["events_per_cpu_s"] = round(events / cpu, 1) if cpu else None
    return run


@dataclass
class ScaleResult:
    """One worker count of the scale run; figures summed (CPU, RSS) or maxed over workers."""

    workers: int
    ok: bool
    seconds: float | None = None
    events_per_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mib: float | None = None  # sum of the workers' own peaks
    peak_rss_max_mib: float | None = None  # the largest single worker's peak
    count: int | None = None  # committed offsets of the group on the input at the end
    releases: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    loadavg_1m_before: float | None = None
    cap_cores: float | None = None  # each worker's CPU cap (a cgroup each), None: uncapped
    # Busy part: from the first committed offsets (start-up done) until the whole input is
    # committed; the fixed start-up and the exit are outside it.
    busy_seconds: float | None = None
    busy_events_per_s: float | None = None
    busy_cpu_us_per_event: float | None = None
    cpu_us_per_event: float | None = None  # all CPU (start-up included) over all events
    efficiency: float | None = None  # busy events/s of N ÷ (N × busy events/s of 1 worker)

    def figures(self) -> dict[str, Any]:
        d = asdict(self)
        for key, digits in (
            ("seconds", 3), ("events_per_s", 1), ("cpu_s", 3), ("peak_rss_mib", 1),
            ("peak_rss_max_mib", 1), ("busy_seconds", 3), ("busy_events_per_s", 1),
            ("busy_cpu_us_per_event", 2), ("cpu_us_per_event", 2), ("efficiency", 3),
        ):  # fmt: skip
            d[key] = _round(d[key], digits)
        return d


@dataclass
class _BusyClock:
    """When the group's committed offsets first rose above zero and reached the end, and
    the workers' CPU at the first moment (read from their pids)."""

    events: int
    pids: list[int] = field(default_factory=list)
    t_first: float | None = None
    committed_first: int = 0
    cpu_first: float | None = None
    t_end: float | None = None

    def poll(self, elapsed: float, committed: int) -> None:
        if self.t_first is None and committed > 0:
            self.t_first, self.committed_first = elapsed, committed
            self.cpu_first = _cpu_of(self.pids)
        if self.t_end is None and committed >= self.events:
            self.t_end = elapsed


def _cpu_of(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of these processes, summed (None if one is gone)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        total += times.user + times.system
    return total


def _run_scale(ctx: _Ctx, workers: int, windows: int, cap: float | None) -> ScaleResult:
    """``workers`` scale-out workers on the benchmark topic, a fresh group and output topic,
    each held to ``cap`` cores (None: uncapped); timed from the first spawn until every
    window summary of the input is released and every worker has exited
    (``--stop-at-end``: no idle close before the last window)."""
    from anonstream.broker.local import free_ports
    from anonstream.broker.topics import create_topics
    from anonstream.core.pipeline import load_pipeline
    from anonstream.testing import read_releases, summaries_complete

    name = f"scale{workers}" + ("" if cap == ctx.cfg.cap else "-uncapped")
    group = f"bench-{ctx.bench_id}-{name}"
    out_topic = f"{ctx.topic}.{name}.out"
    pipe_dir = ctx.logs / f"pipelines-{name}"
    pipeline = write_pipeline(
        ctx.cfg.pipeline, pipe_dir, source_topic=ctx.topic, output_topic=out_topic
    )
    pipeline_name = load_pipeline(pipeline).name
    # Made here, as the worker would make it, so that the reader below finds it at once.
    create_topics(ctx.bootstrap, {out_topic: 1})
    commands = []
    for slot, port in enumerate(free_ports(workers)):
        env = worker_env(
            ctx.bootstrap, group=group, web_port=port,
            dead_letter_topic=f"{ctx.topic}.{name}.deadletter",
            ANONSTREAM_PIPELINES_DIR=str(pipe_dir), ANONSTREAM_SCALE_OUT="true",
            ANONSTREAM_PARTIALS_PARTITIONS=str(ctx.cfg.partials_partitions),
            ANONSTREAM_RELEASE_SHARDED=str(ctx.cfg.release_sharded).lower(),
            ANONSTREAM_INSTANCE_ID=f"slot-{slot}",
        )  # fmt: skip
        commands.append((worker_command(pipeline, "--stop-at-end"), env))
    # The releases are read as they come, read_committed, until one summary per window.
    timeout = ctx.cfg.timeout + 60
    until = summaries_complete({pipeline_name: windows})
    clock = _BusyClock(ctx.cfg.events)
    progress, _task, on_poll = _group_progress(
        ctx, name, group, extra_poll=lambda t: clock.poll(t, ctx.probe.watched(group, ctx.topic)),
        interval=0.2,
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    reading = None
    try:
        with contextlib.ExitStack() as stack:
            if cap is not None:
                groups = stack.enter_context(cpu_groups(workers, cap))
                commands = [
                    (g.wrap(cmd), env) for g, (cmd, env) in zip(groups, commands, strict=True)
                ]
            reading = ctx.probe.spawn(
                lambda: read_releases(ctx.bootstrap, [out_topic], until=until, timeout=timeout)
            )
            with progress:
                group_result = run_until(
                    commands, done=reading.done, timeout=ctx.cfg.timeout, log_dir=ctx.logs,
                    name=name, cwd=ROOT, on_poll=on_poll, on_spawn=clock.pids.extend,
                    may_end=True,
                )  # fmt: skip
    finally:
        if reading is not None:
            reading.cancel()
        ctx.probe.unwatch_group(group, ctx.topic)
        # The Faust host of each worker made an (empty) data dir named after the group.
        shutil.rmtree(Path(tempfile.gettempdir()) / "anonstream-faust" / group, ignore_errors=True)
    children = group_result.children
    peaks = [c.peak_rss_kib / 1024 for c in children if c.peak_rss_kib]
    cpus = [c.cpu_seconds for c in children if c.cpu_seconds is not None]
    run = ScaleResult(
        workers=workers, ok=False, seconds=group_result.seconds,
        cpu_s=sum(cpus) if len(cpus) == workers else None,
        peak_rss_mib=sum(peaks) if peaks else None, peak_rss_max_mib=max(peaks, default=None),
        loadavg_1m_before=round(load_before, 2),
    )  # fmt: skip
    error = None
    crashed = [i for i, c in enumerate(children) if c.exited_early]
    if crashed:
        i = crashed[0]
        error = (
            f"worker {i} exited with code {children[i].returncode} before the releases were "
            f"out:\n{children[i].stderr_tail}"
        )
    elif group_result.timed_out or not group_result.done:
        error = f"the releases were not complete within {ctx.cfg.timeout:.0f} s"
    else:
        try:
            records = reading.result(timeout=0)
        except Exception as exc:
            records, error = [], f"reading the releases failed: {type(exc).__name__}: {exc}"
        for rec in records:
            kind = str(rec.get("kind"))
            run.releases[kind] = run.releases.get(kind, 0) + 1
        # Ingest commits its offsets with the partials the releases came from.
        run.count = ctx.probe.committed(group, ctx.topic)
        if error is None and run.count != ctx.cfg.events:
            error = (
                f"the window summaries are out but the group's committed offsets cover "
                f"{run.count} of {ctx.cfg.events} events"
            )
    run.error = error
    run.ok = error is None
    run.cap_cores = cap
    if run.ok and run.seconds:
        run.events_per_s = ctx.cfg.events / run.seconds
        if run.cpu_s is not None:
            run.cpu_us_per_event = run.cpu_s / ctx.cfg.events * 1e6
        if clock.t_first is not None and clock.t_end is not None and clock.t_end > clock.t_first:
            busy_events = ctx.cfg.events - clock.committed_first
            run.busy_seconds = clock.t_end - clock.t_first
            run.busy_events_per_s = busy_events / run.busy_seconds
            if run.cpu_s is not None and clock.cpu_first is not None and busy_events > 0:
                # CPU up to the exit, less start-up: the busy part and the end.
                run.busy_cpu_us_per_event = (run.cpu_s - clock.cpu_first) / busy_events * 1e6
    return run


def scale_label(run: dict[str, Any], cap: float | None) -> str:
    """A scale run's row name: "scale x2"; the uncapped worker beside capped runs is
    "scale x1 uncapped"."""
    extra = " uncapped" if cap is not None and run.get("cap_cores") is None else ""
    return f"scale x{run['workers']}{extra}"


def _scale_runs(ctx: _Ctx, windows: int, reference: dict[str, int] | None) -> list[ScaleResult]:
    """Every worker count; each must release what the others (and the single-mode run,
    when there is one) release: the same input gives the same releases."""
    out: list[ScaleResult] = []
    counts: list[tuple[int, float | None]] = [(n, ctx.cfg.cap) for n in ctx.cfg.scale]
    if ctx.cfg.cap is not None and 1 in ctx.cfg.scale and reference is not None:
        # ratio_scale1_single compares one scale-out worker with single mode, both uncapped:
        # with --cap, one uncapped worker runs first for it (the efficiency uses capped runs).
        counts.insert(0, (1, None))
    for n, cap in counts:
        capped = f", each capped at {cap:g} cores" if cap is not None else ""
        ctx.console.print(f"[bold]run scale[/]: {n} worker(s) in scale-out mode{capped}")
        try:
            run = _run_scale(ctx, n, windows, cap)
        except CpuCapError as exc:
            run = ScaleResult(workers=n, ok=False, error=str(exc), cap_cores=cap)
        if run.ok and reference is not None and run.releases != reference:
            run.ok = False
            run.error = f"released {run.releases}, not {reference} like the run before"
        if run.ok and reference is None:
            reference = run.releases
        one = next((r for r in out if r.workers == 1 and r.ok and r.cap_cores == cap), None)
        if cap != ctx.cfg.cap:
            pass  # the uncapped worker beside capped runs: no efficiency of its own
        elif run.ok and one is not None and one.busy_events_per_s and run.busy_events_per_s:
            run.efficiency = run.busy_events_per_s / (n * one.busy_events_per_s)
        elif run.ok and n == 1 and run.busy_events_per_s:
            run.efficiency = 1.0
        out.append(run)
        label = scale_label(run.figures(), ctx.cfg.cap)
        if run.ok:
            ctx.console.print(
                f"  {label}: {run.events_per_s:,.0f} events/s, {run.seconds:.1f} s, "
                f"CPU {run.cpu_s or 0:,.1f} s, peak RSS {run.peak_rss_mib or 0:,.0f} MiB summed"
            )
        else:
            ctx.console.print(f"  [red]{label} failed[/]: {escape(run.error or '')}")
    return out


# --------------------------------------------------------------------------------------------
# Step 3: report
# --------------------------------------------------------------------------------------------


def _ratio(results: dict[str, RunResult], other: str) -> float | None:
    a, b = results.get("anonstream"), results.get(other)
    if a is None or b is None or not a.events_per_s or not b.events_per_s:
        return None
    return round(a.events_per_s / b.events_per_s, 3)


def _ratio_of(results: dict[str, RunResult], mine: str, other: str) -> float | None:
    """``mine``'s events/s over ``other``'s, both runs of this benchmark."""
    a, b = results.get(mine), results.get(other)
    if a is None or b is None or not a.events_per_s or not b.events_per_s:
        return None
    return round(a.events_per_s / b.events_per_s, 3)


def _ratio_dp_k(results: dict[str, RunResult]) -> float | None:
    """dp mode's events/s over k mode's, both anonstream workers in this run."""
    return _ratio_of(results, "anonstream-dp", "anonstream")


def _cpu_ratio(results: dict[str, RunResult], other: str, mine: str = "anonstream") -> float | None:
    """``mine``'s events per CPU second over the other run's."""
    a, b = results.get(mine), results.get(other)
    if a is None or b is None or not a.ok or not b.ok:
        return None
    mine, theirs = a.extra.get("events_per_cpu_s"), b.extra.get("events_per_cpu_s")
    return round(mine / theirs, 3) if mine and theirs else None


def _scale_ratios(results: dict[str, RunResult], scale: list[ScaleResult]) -> dict[str, Any]:
    """``ratio_scale1_single`` (one scale-out worker ÷ single mode, events/s),
    ``cpu_ratio_scale1_single`` (the same in events per CPU second) and the efficiency per
    worker count (``scale_efficiency_<n>``, busy throughput)."""
    out: dict[str, Any] = {}
    single = results.get("anonstream")
    # Single mode is uncapped: so must the one scale-out worker it is compared with be.
    one = next((r for r in scale if r.workers == 1 and r.ok and r.cap_cores is None), None)
    out["ratio_scale1_single"] = (
        round(one.events_per_s / single.events_per_s, 3)
        if one and one.events_per_s and single and single.ok and single.events_per_s
        else None
    )
    # The same in events per CPU second (start-up included in both): the cost per event,
    # apart from the fixed wall time of the scale run (start-up, the group's end).
    theirs = single.extra.get("events_per_cpu_s") if single and single.ok else None
    out["cpu_ratio_scale1_single"] = (
        round(1e6 / one.cpu_us_per_event / theirs, 3)
        if one and one.cpu_us_per_event and theirs
        else None
    )
    for r in scale:
        if r.ok and r.efficiency is not None:
            out[f"scale_efficiency_{r.workers}"] = round(r.efficiency, 3)
    return out


def render_table(summary: dict[str, Any]) -> Table:
    cap = next((r.get("cap_cores") for r in summary.get("scale") or [] if r.get("cap_cores")), None)
    title = (
        f"{summary['events']:,} events, {summary['users']:,} users, "
        f"{summary['partitions']} partitions"
    )
    if cap:
        title += f"; scale workers capped at {cap:g} cores each"
    table = Table(title=title)
    cols = (
        "run", "events/s", "busy events/s", "seconds", "first event s", "CPU s",
        "CPU µs/event", "peak RSS MiB", "vs ceiling", "efficiency",
    )  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "run" else "right")
    ceiling = (summary["runs"].get("ceiling") or {}).get("events_per_s")
    events = summary["events"]

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def per_event(cpu: float | None) -> str:
        return num(None if cpu is None else cpu / events * 1e6, ".1f")

    for name, r in summary["runs"].items():
        if not r["ok"]:
            table.add_row(name, "[red]FAILED[/]", *["-"] * (len(cols) - 2))
            continue
        eps = r["events_per_s"]
        vs = f"{eps / ceiling:.2f}" if ceiling and eps else "-"
        table.add_row(
            name, f"{eps:,.0f}", num(r.get("steady_events_per_s"), ",.0f"), f"{r['seconds']:.1f}",
            num(r.get("first_event_s"), ".1f"), num(r.get("cpu_seconds"), ".1f"),
            per_event(r.get("cpu_seconds")), num(r.get("peak_rss_mib"), ".0f"), vs, "-",
        )  # fmt: skip
    for r in summary.get("scale") or []:
        name = scale_label(r, cap)
        if not r["ok"]:
            table.add_row(name, "[red]FAILED[/]", *["-"] * (len(cols) - 2))
            continue
        eps = r["events_per_s"]
        vs = f"{eps / ceiling:.2f}" if ceiling and eps else "-"
        # RSS of several processes: their peaks summed, the largest one in brackets.
        rss = f"{num(r['peak_rss_mib'], '.0f')} ({num(r['peak_rss_max_mib'], '.0f')})"
        table.add_row(
            name, f"{eps:,.0f}", num(r.get("busy_events_per_s"), ",.0f"), f"{r['seconds']:.1f}",
            "-", num(r["cpu_s"], ".1f"), per_event(r["cpu_s"]), rss, vs,
            num(r.get("efficiency"), ".2f"),
        )  # fmt: skip
    return table


def draw_chart(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {n: r for n, r in summary["runs"].items() if r["ok"]}
    # Scale-run bars: RSS is the workers' peaks summed.
    cap = next((r.get("cap_cores") for r in summary.get("scale") or [] if r.get("cap_cores")), None)
    runs.update({scale_label(r, cap): r for r in summary.get("scale") or [] if r["ok"]})
    names = list(runs)
    palette = {"anonstream": "#d62728", "kstreams": "#2ca02c", "kstreams_all": "#98df8a"}
    colors = [palette.get(n, "#1f77b4" if n.startswith("scale") else "#7f7f7f") for n in names]
    scaled = [
        r for r in summary.get("scale") or []
        if r["ok"] and r.get("busy_events_per_s") and r.get("cap_cores") == cap
    ]  # fmt: skip
    panels = 3 if len(scaled) >= 2 else 2
    width = 11 + 0.6 * len(summary.get("scale") or []) + (5 if panels == 3 else 0)
    fig, axes = plt.subplots(1, panels, figsize=(width, 4.5))
    ax1, ax2 = axes[0], axes[1]
    if panels == 3:
        # Throughput against worker count, next to the line of perfect scaling from x1.
        ax3 = axes[2]
        workers = [r["workers"] for r in scaled]
        busy = [r["busy_events_per_s"] for r in scaled]
        ax3.plot(workers, busy, "o-", color="#1f77b4", label="measured (busy part)")
        one = next((r["busy_events_per_s"] for r in scaled if r["workers"] == 1), None)
        if one:
            ax3.plot(workers, [one * w for w in workers], "--", color="#999999", label="linear")
        for w, b, r in zip(workers, busy, scaled, strict=True):
            if r.get("efficiency") is not None:
                ax3.annotate(f"{r['efficiency']:.2f}", (w, b), textcoords="offset points",
                             xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
        capped = f" (cap {cap:g} core each)" if cap else ""
        ax3.set_title(f"scale-out: events/s by workers{capped}")
        ax3.set_xlabel("workers (labels: efficiency)")
        ax3.set_ylabel("events/s")
        ax3.set_xticks(workers)
        ax3.grid(alpha=0.3)
        ax3.legend(fontsize=8)
    eps = [runs[n]["events_per_s"] for n in names]
    rss = [runs[n]["peak_rss_mib"] or 0 for n in names]
    bars = ax1.bar(names, eps, color=colors)
    ax1.bar_label(bars, labels=[f"{v:,.0f}" for v in eps], fontsize=8)
    ax1.set_title("throughput (events/s, start-up included)")
    ax1.set_ylabel("events/s")
    bars = ax2.bar(names, rss, color=colors)
    ax2.bar_label(bars, labels=[f"{v:,.0f}" for v in rss], fontsize=8)
    ax2.set_title("peak RSS (MiB; scale: summed over workers)")
    ax2.set_ylabel("MiB")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"anonstream load benchmark: {summary['events']:,} events, {summary['users']:,} users, "
        f"{summary['partitions']} partitions, {summary['machine']['cpus']} CPUs"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------


def run_benchmark(cfg: BenchConfig, console: Console | None = None) -> dict[str, Any]:
    """Produce, run every selected run, draw the chart; return the summary (JSON-able)."""
    console = console or Console(stderr=True)
    bench_id = uuid.uuid4().hex[:8]
    topic = f"anonstream-bench-{bench_id}"
    results: dict[str, RunResult] = {}
    scale: list[ScaleResult] = []
    produced: dict[str, Any] = {}
    profiled_info: dict[str, Any] | None = None
    keep_logs = cfg.logs is not None

    def say(message: str) -> None:
        console.print(f"[dim]{escape(message)}[/]")

    with (
        scratch_dir(cfg.logs, "anonstream-bench-", say) as logs,
        kafka_broker(cfg.bootstrap, say=say) as bootstrap,
        KafkaProbe(bootstrap) as probe,
    ):
        try:
            console.print(
                f"[bold]producing {cfg.events:,} events[/] ({cfg.users:,} users) to {topic} "
                f"({cfg.partitions} partitions)"
            )
            produced = produce_workload(
                bootstrap, topic, cfg, console, count_windows="scale" in cfg.runs
            )
            in_topic = sum(probe.end_offsets(topic).values())
            if in_topic != cfg.events:
                raise RuntimeError(f"the topic holds {in_topic} events, not {cfg.events}")
            ctx = _Ctx(cfg, bootstrap, topic, bench_id, probe, logs, console)
            for name in cfg.runs:
                if name == "scale":
                    single = results.get("anonstream")
                    reference = single.extra.get("releases") if single and single.ok else None
                    scale = _scale_runs(ctx, produced["windows"], reference)
                    continue
                if name == "kstreams":
                    batch = _kstreams_runs(ctx, results.get("anonstream"))
                else:
                    console.print(f"[bold]run {name}[/]")
                    batch = [
                        _run_anonstream(ctx, dp=name == "anonstream-dp")
                        if name.startswith("anonstream")
                        else _run_faust_agent(ctx)
                        if name == "faust_agent"
                        else _run_peer(ctx, name)
                    ]
                for run in batch:
                    results[run.name] = run
                    if run.ok:
                        console.print(
                            f"  {run.name}: {run.events_per_s:,.0f} events/s, "
                            f"{run.seconds:.1f} s, peak RSS {run.peak_rss_mib or 0:,.0f} MiB"
                        )
                    else:
                        console.print(f"  [red]{run.name} failed[/]: {escape(run.error or '')}")
            if cfg.profile is not None and "anonstream" in cfg.runs:
                console.print("[bold]profile[/]: anonstream again, under pyinstrument")
                profiled = _run_anonstream(ctx, profile=cfg.profile)
                profiled_info = {
                    "path": str(cfg.profile), "ok": profiled.ok, "error": profiled.error,
                    "seconds": _round(profiled.seconds, 3),
                }  # fmt: skip
        finally:
            if cfg.bootstrap:  # a broker we do not own: remove what this run created
                with contextlib.suppress(Exception):
                    probe.delete_topics([t for t in probe.topics() if bench_id in t])
    every: list[RunResult | ScaleResult] = [*results.values(), *scale]
    ok = bool(every) and all(r.ok for r in every)
    summary: dict[str, Any] = {
        "benchmark": "anonstream-load",
        "ok": ok,
        "events": cfg.events,
        "users": cfg.users,
        "partitions": cfg.partitions,
        "seed": cfg.seed,
        "produce": produced,
        "runs": {name: r.figures() for name, r in results.items()},
        "ratio_ceiling": _ratio(results, "ceiling"),
        "ratio_naive_faust": _ratio(results, "naive_faust"),
        "ratio_quixstreams": _ratio(results, "quixstreams"),
        # dp mode ÷ k mode (issue 14 asks for at least 0.9).
        "ratio_dp_k": _ratio_dp_k(results),
        # anonstream.faust ÷ the worker: what the Faust agent way costs.
        "ratio_faust_agent": _ratio_of(results, "faust_agent", "anonstream"),
        "cpu_ratio_dp_k": _cpu_ratio(results, "anonstream", mine="anonstream-dp"),
        # anonstream ÷ Kafka Streams, one thread each; and against all cores for the JVM.
        "ratio_kafka_streams": _ratio(results, "kstreams"),
        "ratio_kafka_streams_all": _ratio(results, "kstreams_all"),
        # The same in events per CPU second: less sensitive to a shared machine's load.
        "cpu_ratio_kafka_streams": _cpu_ratio(results, "kstreams"),
        "scale": [r.figures() for r in scale],
        "release_sharded": cfg.release_sharded,
        **_scale_ratios(results, scale),
        "machine": machine(),
        "chart": None,
    }
    if profiled_info is not None:
        summary["profile"] = profiled_info
    no_chart = chart_unavailable()
    if no_chart is not None:
        summary["chart_skipped"] = no_chart
    elif any(r.ok for r in every):
        summary["chart"] = str(draw_chart(summary, cfg.chart))
    if not ok or keep_logs:
        summary["logs"] = str(logs)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _runs(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in RUN_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown run(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(RUN_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def _scale(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("expected worker counts >= 1, e.g. 1,2,3")
    return counts


def _cap(text: str) -> float:
    try:
        return parse_cap(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonstream bench",
        description="Load benchmark: anonstream against the ceiling, naive Faust and "
        "quixstreams on a local Kafka broker (or a soak run with --soak).",
    )
    p.add_argument("--events", type=int, default=1_000_000, help="events in the workload")
    p.add_argument("--users", type=int, default=100_000, help="distinct synthetic people")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the input topic")
    p.add_argument("--seed", type=int, default=7, help="generator seed")
    p.add_argument(
        "--runs", type=_runs, default=RUN_NAMES,
        help=f"comma-separated subset of {','.join(RUN_NAMES)} (default: all, in that order)",
    )  # fmt: skip
    p.add_argument("--chart", type=Path, default=None, help="PNG chart path")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per process")
    p.add_argument(
        "--bootstrap", default=None,
        help="use this Kafka broker instead of starting a local one (its topics are removed)",
    )  # fmt: skip
    p.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="pipeline file")
    p.add_argument("--logs", type=Path, default=None, help="keep the runs' logs in this dir")
    p.add_argument(
        "--profile", type=Path, default=None,
        help="after the measured runs, run anonstream once more under pyinstrument and write "
        "its report here (.html: HTML, else text); not part of the figures",
    )  # fmt: skip
    p.add_argument(
        "--scale", type=_scale, default=(1, 2, 3),
        help="scale run: worker counts, one configuration each (default 1,2,3)",
    )  # fmt: skip
    p.add_argument(
        "--partials-partitions", type=int, default=6,
        help="scale run: partitions of the partials topic (ANONSTREAM_PARTIALS_PARTITIONS)",
    )  # fmt: skip
    p.add_argument(
        "--cap", type=_cap, default=None,
        help="scale run: hold each worker to this many cores (e.g. 0.25) with a cgroup of "
        "its own (v2 cpu.max or v1 CFS quota; needs root); the groups are removed at the end",
    )  # fmt: skip
    p.add_argument(
        "--release-sharded", action="store_true",
        help="scale run: release each window over person shards and a merge stage "
        "(ANONSTREAM_RELEASE_SHARDED)",
    )  # fmt: skip
    p.add_argument(
        "--kstreams-guarantee", choices=("exactly_once_v2", "at_least_once"),
        default="exactly_once_v2", help="kstreams run: processing.guarantee of the JVM peer",
    )  # fmt: skip
    soak = p.add_argument_group("soak mode")
    soak.add_argument("--soak", action="store_true", help="run the soak test instead")
    soak.add_argument("--rate", type=float, default=2000.0, help="soak: events/s produced")
    soak.add_argument("--seconds", type=float, default=120.0, help="soak: seconds of input")
    p.add_argument(
        "--adversarial", action="store_true",
        help="instead: hostile vs benign values per field (python -m anonstream_load.adversarial)",
    )  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if args.adversarial:
        from .adversarial import main as adversarial_main

        return adversarial_main([])
    for flag in ("events", "users", "partitions", "partials_partitions"):
        if getattr(args, flag) < 1:
            console.print(f"[red]--{flag} must be >= 1[/]")
            return 2
    if args.soak:
        from .soak import SoakConfig, print_soak, run_soak

        soak_cfg = SoakConfig(
            rate=args.rate, seconds=args.seconds, users=args.users,
            partitions=args.partitions, seed=args.seed, bootstrap=args.bootstrap,
            pipeline=args.pipeline, timeout=args.timeout, logs=args.logs,
            chart=args.chart or ROOT / "load" / "results" / "soak.png",
        )  # fmt: skip
        try:
            soak_summary = run_soak(soak_cfg, console=console)
        except Exception as exc:
            console.print(f"[red]soak failed[/]: {escape(f'{type(exc).__name__}: {exc}')}")
            print(json.dumps({"benchmark": "anonstream-soak", "ok": False, "error": str(exc)}))
            return 1
        print_soak(soak_summary)
        return 0 if soak_summary["ok"] else 1
    cfg = BenchConfig(
        events=args.events, users=args.users, partitions=args.partitions, seed=args.seed,
        runs=args.runs, chart=args.chart or DEFAULT_CHART, timeout=args.timeout,
        bootstrap=args.bootstrap, pipeline=args.pipeline, logs=args.logs, profile=args.profile,
        scale=args.scale, partials_partitions=args.partials_partitions,
        cap=args.cap, release_sharded=args.release_sharded,
        kstreams_guarantee=args.kstreams_guarantee,
    )  # fmt: skip
    # Peers that cannot run here are skipped by name, before anything starts.
    skipped = unavailable_runs(cfg.runs)
    for name, why in skipped.items():
        console.print(f"[yellow]skipping {name}[/]: {escape(why)}")
    cfg.runs = tuple(n for n in cfg.runs if n not in skipped)
    if not cfg.runs:
        console.print("[red]no run left to do[/]")
        print(json.dumps({"benchmark": "anonstream-load", "ok": False, "skipped": skipped}))
        return 2
    if cfg.cap is not None and "scale" in cfg.runs:
        try:  # before anything runs: a cap that cannot be set up fails now, not at the end
            with cpu_groups(1, cfg.cap):
                pass
        except CpuCapError as exc:
            console.print(f"[red]--cap {cfg.cap:g}[/]: {escape(str(exc))}")
            print(json.dumps({"benchmark": "anonstream-load", "ok": False, "error": str(exc)}))
            return 2
    if "scale" in cfg.runs and max(cfg.scale) > min(cfg.partitions, cfg.partials_partitions):
        console.print(
            f"[yellow]note[/]: {max(cfg.scale)} workers share {cfg.partitions} input and "
            f"{cfg.partials_partitions} partials partitions; workers beyond that have no work"
        )
    try:
        summary = run_benchmark(cfg, console)
        summary["skipped"] = skipped
    except Exception as exc:  # broker, topic or produce failures: say what, no traceback
        console.print(f"[red]benchmark failed[/]: {escape(f'{type(exc).__name__}: {exc}')}")
        print(json.dumps({"benchmark": "anonstream-load", "ok": False, "error": str(exc)}))
        return 1
    out = Console(soft_wrap=True)
    out.print(render_table(summary))
    failed = [(name, r) for name, r in summary["runs"].items() if not r["ok"]]
    failed += [(f"scale x{r['workers']}", r) for r in summary["scale"] if not r["ok"]]
    for name, r in failed:
        first_line = (r.get("error") or "failed").splitlines()[0]
        out.print(f"[red]{name} failed[/]: {escape(first_line)}")
    ratio_keys = [
        "ratio_ceiling", "ratio_naive_faust", "ratio_quixstreams", "ratio_dp_k",
        "cpu_ratio_dp_k", "ratio_kafka_streams",
        "ratio_kafka_streams_all", "cpu_ratio_kafka_streams", "ratio_scale1_single",
        "cpu_ratio_scale1_single", *sorted(k for k in summary if k.startswith("scale_efficiency_")),
    ]  # fmt: skip
    for key in ratio_keys:
        if summary.get(key) is not None:
            out.print(f"{key}: {summary[key]:.3f}")
    for name, why in skipped.items():
        out.print(f"[yellow]{name} skipped[/]: {escape(why)}")
    if summary["chart"]:
        out.print(f"chart: {summary['chart']}")
    elif summary.get("chart_skipped"):
        out.print(f"[yellow]chart skipped[/]: {escape(summary['chart_skipped'])}")
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
