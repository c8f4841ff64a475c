"""Plumbing shared by the benchmark and the soak run.

* :func:`run_child`: one measured child process: wall time from spawn to exit, peak RSS
  of *that* process (``VmHWM`` polled from ``/proc/<pid>/status`` every 0.1 s; the
  high-water mark is monotonic, so the last sample is within 0.1 s of the true peak),
  a hard timeout after which the child (its pid only) is killed.  ``ru_maxrss`` is not
  used for the peak: a child started with vfork + exec inherits the parent's high-water
  mark, so it would report the benchmark harness's own peak when that is larger.
* :func:`run_until`: several long-running children (scale-out workers) measured the same
  way, from spawn until a condition holds, then stopped with SIGTERM by pid.
* :class:`KafkaProbe`: a background event loop with its own Kafka clients, to read end
  offsets, committed offsets of a group (progress of a run, seen from outside without
  touching the run) and topics, from synchronous code.
* :func:`kafka_broker`: the broker to use: an existing one, or a fresh
  :class:`~anonstream.broker.local.LocalKafka` that is always stopped.
* :func:`write_pipeline`: a copy of a shipped pipeline file rewired to other topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from anonstream import testing
from anonstream.runtime.topic_end import read_to_end

__all__ = [
    "BENCH_SECRET",
    "ROOT",
    "ChildResult",
    "KafkaProbe",
    "kafka_broker",
    "metrics_value",
    "proc_memory_kib",
    "run_child",
    "run_until",
    "scratch_dir",
    "tail",
    "worker_supports_stop_at_end",
    "write_pipeline",
]

_T = TypeVar("_T")

#: The repository root (``load/`` is one level below it).
ROOT = Path(__file__).resolve().parent.parent

POLL_S = 0.1
#: The benchmark's throwaway secret (anonstream workers and the Kafka Streams peer alike).
BENCH_SECRET = "anonstream-benchmark-secret-0123456789"


# --------------------------------------------------------------------------------------------
# Measured child processes
# --------------------------------------------------------------------------------------------


@dataclass
class ChildResult:
    """What :func:`run_child` saw of one child process."""

    returncode: int | None
    seconds: float
    peak_rss_kib: int | None
    timed_out: bool
    stdout: str
    stderr_tail: str
    started_at: float  # wall clock (epoch s) just before the spawn
    cpu_seconds: float | None = None  # user + system CPU of the child (all its threads)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (t since start, KiB)


def proc_memory_kib(pid: int) -> tuple[int, int] | None:
    """(current RSS, peak RSS) of ``pid`` in KiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            rss = hwm = -1
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
            if rss >= 0 and hwm >= 0:
                return rss, hwm
            return None  # a zombie has no memory lines
    except FileNotFoundError:
        if sys.platform.startswith("linux"):
            return None
    except OSError:
        return None
    try:  # not Linux: the current RSS only; the caller keeps the maximum
        current = int(psutil.Process(pid).memory_info().rss // 1024)
    except psutil.Error:
        return None
    return current, current


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _spawn(
    cmd: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: Path | None,
    out: Any,
    err: Any,
    name: str,
) -> tuple[subprocess.Popen[bytes], threading.Thread, dict[str, Any]]:
    """Start ``cmd`` with a thread blocked in ``os.wait4`` on its pid: the exit time is
    exact and the child's CPU time known; the dict gets ``t``, ``status`` and ``usage``."""
    proc = subprocess.Popen(
        list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
    )  # fmt: skip
    reaped: dict[str, Any] = {}

    def reap() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        reaped.update(t=time.monotonic(), status=status, usage=usage)

    reaper = threading.Thread(target=reap, name=f"reap-{name}", daemon=True)
    reaper.start()
    return proc, reaper, reaped


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
    log_dir: Path,
    name: str,
    on_poll: Callable[[float, int | None], None] | None = None,
    sample_every: float = 0.0,
) -> ChildResult:
    """Run ``cmd`` to completion (or ``timeout``), measuring it; stdout/stderr go to files.

    A thread blocks in ``os.wait4`` on the child's pid, so the exit time is exact and the
    child's CPU time is known; the calling thread samples its memory every 0.1 s and calls
    ``on_poll(elapsed_s, rss_kib)`` (progress display).  With ``sample_every`` > 0 the RSS
    is also recorded every that many seconds.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    peak = 0
    samples: list[tuple[float, int]] = []
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started_at = time.time()
        t0 = time.monotonic()
        proc, reaper, reaped = _spawn(cmd, env, cwd, out, err, name)
        next_sample = 0.0
        try:
            while reaper.is_alive():
                elapsed = time.monotonic() - t0
                mem = proc_memory_kib(proc.pid)
                rss = None
                if mem is not None and reaper.is_alive():  # never a recycled pid's memory
                    rss = mem[0]
                    peak = max(peak, mem[1])
                    if sample_every > 0 and elapsed >= next_sample:
                        samples.append((elapsed, rss))
                        next_sample += sample_every
                if on_poll is not None:
                    on_poll(elapsed, rss)
                if elapsed > timeout:
                    timed_out = True
                    _kill(proc, reaper)
                    break
                reaper.join(POLL_S)
        except BaseException:
            _kill(proc, reaper)  # interrupted: never leave the child behind
            raise
        reaper.join()
        proc.returncode = os.waitstatus_to_exitcode(reaped["status"])
        seconds = reaped["t"] - t0
    usage = reaped["usage"]
    return ChildResult(
        returncode=proc.returncode,
        seconds=seconds,
        peak_rss_kib=peak or None,
        timed_out=timed_out,
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr_tail=tail(err_path.read_text(encoding="utf-8", errors="replace")),
        started_at=started_at,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        rss_samples=samples,
    )


@dataclass
class StoppedChild:
    """One child of :func:`run_until`."""

    returncode: int | None
    peak_rss_kib: int | None
    cpu_seconds: float | None  # user + system up to the moment the condition held
    stderr_tail: str
    exited_early: bool  # gone before the condition held (a crash, for a worker)


@dataclass
class GroupResult:
    """What :func:`run_until` saw: ``seconds`` from the first spawn to the condition."""

    done: bool
    timed_out: bool
    seconds: float
    children: list[StoppedChild]


def run_until(
    commands: Sequence[tuple[Sequence[str], Mapping[str, str]]],
    *,
    done: Callable[[], bool],
    timeout: float,
    log_dir: Path,
    name: str,
    cwd: Path | None = None,
    on_poll: Callable[[float, int | None], None] | None = None,
    stop_grace: float = 30.0,
    on_spawn: Callable[[list[int]], None] | None = None,
    may_end: bool = False,
) -> GroupResult:
    """Start every ``(cmd, env)``, wait until ``done()`` (polled every 0.1 s), ``timeout``
    or a child's exit, then SIGTERM each child still running, by its pid, and wait for it.
    ``may_end``: children that end on their own (``--stop-at-end`` workers, each when what
    it owns has ended): exiting 0 is no failure, and the condition is ``done()`` and every
    child exited (timed to the last exit, as a single ``--stop-at-end`` run is timed);
    once all have exited, ``done()`` gets ``stop_grace`` seconds more.

    Memory and CPU are measured per child as in :func:`run_child`; CPU is read when the
    condition holds, so the shutdown is not counted.  ``on_poll`` gets the summed RSS;
    ``on_spawn`` the children's pids once all are started.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    reapers: list[threading.Thread] = []
    reaped: list[dict[str, Any]] = []
    files = []
    peaks = [0] * len(commands)
    cpu: list[float | None] = [None] * len(commands)
    early = [False] * len(commands)
    finished = timed_out = False
    ended_at: float | None = None
    t0 = time.monotonic()
    seconds = 0.0
    try:
        for i, (cmd, env) in enumerate(commands):
            out = open(log_dir / f"{name}-{i}.stdout", "wb")  # noqa: SIM115
            err = open(log_dir / f"{name}-{i}.stderr", "wb")  # noqa: SIM115
            files += [out, err]
            proc, reaper, slot = _spawn(cmd, env, cwd, out, err, f"{name}-{i}")
            procs.append(proc)
            reapers.append(reaper)
            reaped.append(slot)
        if on_spawn is not None:
            on_spawn([p.pid for p in procs])
        while True:
            elapsed = time.monotonic() - t0
            total = 0
            for i, proc in enumerate(procs):
                mem = proc_memory_kib(proc.pid)
                if mem is not None and reapers[i].is_alive():  # never a recycled pid's
                    total += mem[0]
                    peaks[i] = max(peaks[i], mem[1])
            if on_poll is not None:
                on_poll(elapsed, total or None)
            alive = [r.is_alive() for r in reapers]
            if done() and not (may_end and any(alive)):
                seconds = time.monotonic() - t0
                if may_end:  # the last exit (the releases were out before it)
                    seconds = max(slot["t"] for slot in reaped) - t0
                finished = True
                for i, proc in enumerate(procs):
                    with contextlib.suppress(psutil.Error):
                        times = psutil.Process(proc.pid).cpu_times()
                        if reapers[i].is_alive():
                            cpu[i] = times.user + times.system
                break
            gone = [i for i, r in enumerate(reapers) if not r.is_alive()]
            if may_end:
                ended = [i for i in gone if _exit_code(reaped[i]) == 0]
                if len(ended) == len(procs) and ended_at is None:
                    ended_at = elapsed
                if ended_at is not None and elapsed - ended_at > stop_grace:
                    ended = []  # all ended and done() never came: a failure after all
                gone = [i for i in gone if i not in ended]
            if gone or elapsed > timeout:
                seconds = elapsed
                timed_out = not gone
                for i in gone:
                    early[i] = True
                break
            time.sleep(POLL_S)
    finally:
        for proc, reaper in zip(procs, reapers, strict=True):
            if reaper.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + stop_grace
        for proc, reaper in zip(procs, reapers, strict=True):
            reaper.join(max(0.0, deadline - time.monotonic()))
            _kill(proc, reaper)  # did not stop in time: SIGKILL, its pid only
        for f in files:
            f.close()
    children = []
    for i, slot in enumerate(reaped):
        code = _exit_code(slot)
        if cpu[i] is None and "usage" in slot:
            cpu[i] = slot["usage"].ru_utime + slot["usage"].ru_stime
        err_text = (log_dir / f"{name}-{i}.stderr").read_text(encoding="utf-8", errors="replace")
        child = StoppedChild(
            returncode=code, peak_rss_kib=peaks[i] or None, cpu_seconds=cpu[i],
            stderr_tail=tail(err_text), exited_early=early[i],
        )  # fmt: skip
        children.append(child)
    return GroupResult(done=finished, timed_out=timed_out, seconds=seconds, children=children)


def _exit_code(slot: dict[str, Any]) -> int | None:
    return os.waitstatus_to_exitcode(slot["status"]) if "status" in slot else None


def _kill(proc: subprocess.Popen[bytes], reaper: threading.Thread) -> None:
    """SIGKILL the child (its pid only, and only while unreaped), wait for the reaper."""
    if reaper.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    reaper.join(30)


def json_line(stdout: str, marker: str = '{"runner"') -> dict[str, Any] | None:
    """The last JSON object in ``stdout`` that starts with ``marker``."""
    import json

    for line in reversed(stdout.splitlines()):
        i = line.find(marker)
        if i >= 0:
            try:
                found = json.loads(line[i:])
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


# --------------------------------------------------------------------------------------------
# Kafka, seen from a background event loop
# --------------------------------------------------------------------------------------------


class KafkaProbe:
    """Kafka look-ups from sync code, on an event loop in a daemon thread.

    ``watch_group(group, topic)`` keeps ``committed(group, topic)`` fresh in the background
    (every ``interval`` s) so a progress display can read it without waiting.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._watches: dict[tuple[str, str], int] = {}
        self._watch_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def call(self, factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float = 60.0) -> _T:
        fut: Future[_T] = asyncio.run_coroutine_threadsafe(factory(), self._loop)
        return fut.result(timeout)

    def spawn(self, factory: Callable[[], Coroutine[Any, Any, _T]]) -> Future[_T]:
        """Start a coroutine on the probe's loop; cancel it with ``.cancel()``."""
        return asyncio.run_coroutine_threadsafe(factory(), self._loop)

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id="anonstream-bench-probe"
            )
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                client_id="anonstream-bench-probe",
            )  # fmt: skip
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    def close(self) -> None:
        async def shutdown() -> None:
            for task in self._watch_tasks.values():
                task.cancel()
            if self._consumer is not None:
                await self._consumer.stop()
            if self._admin is not None:
                await self._admin.close()

        with contextlib.suppress(Exception):
            self.call(shutdown, timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> KafkaProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- look-ups -----------------------------------------------------------------------------

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        admin, _ = await self._clients()
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
        parts = described[0]["partitions"] if described else []
        return [TopicPartition(topic, p["partition"]) for p in parts]

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        _, consumer = await self._clients()
        tps = await self._partitions(topic)
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in ends.items()}

    def end_offsets(self, topic: str) -> dict[int, int]:
        """{partition: end offset} of ``topic``."""
        return self.call(lambda: self._end_offsets(topic))

    async def _committed(self, group: str, topic: str) -> int:
        admin, _ = await self._clients()
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(om.offset, 0) for tp, om in offsets.items() if tp.topic == topic)

    def committed(self, group: str, topic: str) -> int:
        """Sum over partitions of ``group``'s committed offsets on ``topic`` (0 if none)."""
        return self.call(lambda: self._committed(group, topic))

    def topics(self) -> list[str]:
        async def run() -> list[str]:
            admin, _ = await self._clients()
            return list(await admin.list_topics())

        return self.call(run)

    def delete_topics(self, names: Sequence[str]) -> None:
        async def run() -> None:
            admin, _ = await self._clients()
            if names:
                await admin.delete_topics(list(names))

        self.call(run)

    def read_all(self, topic: str, timeout: float = 60.0) -> list[bytes]:
        """Every value of ``topic`` up to its current end (read_committed); raises
        `EndNotReached` if that takes over ``timeout`` seconds."""

        async def run() -> list[bytes]:
            tps = await self._partitions(topic)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                isolation_level="read_committed", auto_offset_reset="earliest",
            )  # fmt: skip
            await consumer.start()
            values: list[bytes] = []
            try:
                async for _, records in read_to_end(consumer, tps, timeout=timeout):
                    values.extend(r.value for r in records if r.value is not None)
            finally:
                await consumer.stop()
            return values

        return self.call(run, timeout=timeout + 30)

    # -- background watches -------------------------------------------------------------------

    def watch_group(self, group: str, topic: str, interval: float = 1.0) -> None:
        key = (group, topic)
        self._watches[key] = 0

        async def loop() -> None:
            while True:
                with contextlib.suppress(Exception):
                    self._watches[key] = await self._committed(group, topic)
                await asyncio.sleep(interval)

        def start() -> None:
            self._watch_tasks[key] = self._loop.create_task(loop())

        self._loop.call_soon_threadsafe(start)

    def watched(self, group: str, topic: str) -> int:
        return self._watches.get((group, topic), 0)

    def unwatch_group(self, group: str, topic: str) -> None:
        def stop() -> None:
            task = self._watch_tasks.pop((group, topic), None)
            if task is not None:
                task.cancel()

        self._loop.call_soon_threadsafe(stop)


_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


def metrics_value(url: str, name: str, timeout: float = 0.5) -> float | None:
    """Sum of the samples of metric ``name`` (or ``name_total``) on a Prometheus page."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    total: float | None = None
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m and m["name"] in (name, name + "_total"):
            with contextlib.suppress(ValueError):
                total = (total or 0.0) + float(m["value"])
    return total


# --------------------------------------------------------------------------------------------
# Broker and pipelines
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker(bootstrap: str | None, *, say: Callable[[str], None]) -> Iterator[str]:
    """Yield bootstrap servers: ``bootstrap`` as is, or a fresh local broker, always stopped."""
    if bootstrap:
        yield bootstrap
        return
    from anonstream.broker.local import LocalKafka

    say("starting a local Kafka broker")
    kafka = LocalKafka(die_with_parent=True)
    try:
        kafka.start()
        say(f"Kafka ready at {kafka.bootstrap_servers} in {kafka.start_seconds or 0:.1f} s")
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


@contextlib.contextmanager
def scratch_dir(keep: Path | None, prefix: str, say: Callable[[str], None]) -> Iterator[Path]:
    """``keep`` (created if needed), or a temporary directory that is removed when the
    block raises and holds nothing yet (the caller removes it after a clean run)."""
    path = keep or Path(tempfile.mkdtemp(prefix=prefix))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if keep is None:
            if any(path.iterdir()):
                say(f"logs kept in {path}")
            else:
                shutil.rmtree(path, ignore_errors=True)
        raise


def write_pipeline(
    source: Path,
    dest_dir: Path,
    *,
    source_topic: str,
    output_topic: str,
    changes: Mapping[str, Any] | None = None,
    output_changes: Mapping[str, Any] | None = None,
) -> Path:
    """A copy of pipeline file ``source`` reading ``source_topic`` and writing every output
    to ``output_topic``, with top-level ``changes`` and each output's ``output_changes``
    applied; returns its path."""
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    doc["source_topic"] = source_topic
    outputs = doc.get("outputs") or [{"name": "default"}]
    for out in outputs:
        out["topic"] = output_topic
        out.update(output_changes or {})
    doc["outputs"] = outputs
    doc.update(changes or {})
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / source.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def worker_command(pipeline_file: Path, *extra: str) -> list[str]:
    """A benchmark worker: one pipeline file (``anonstream.testing.worker_command``)."""
    return testing.worker_command("--pipeline", str(pipeline_file), *extra)


def worker_env(
    bootstrap: str, *, group: str, web_port: int, dead_letter_topic: str, **extra: str
) -> dict[str, str]:
    """Environment of a benchmark worker (``anonstream.testing.worker_env``): a throwaway
    benchmark secret and a dead-letter topic of its own."""
    return testing.worker_env(
        bootstrap, group_id=group, web_port=web_port, secret=BENCH_SECRET,
        extra={"ANONSTREAM_DEAD_LETTER_TOPIC": dead_letter_topic, **extra},
    )  # fmt: skip


def worker_supports_stop_at_end(timeout: float = 60.0) -> bool:
    """Whether ``anonstream worker`` has the ``--stop-at-end`` flag (the benchmark needs it)."""
    try:
        proc = subprocess.run(
            testing.worker_command("--help"),
            capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "--stop-at-end" in proc.stdout


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("faust-streaming", "quixstreams", "aiokafka", "msgspec", "orjson", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict[str, Any]:
    """The machine and versions a result was measured with (bench and soak reports)."""
    from anonstream.broker.jars import KAFKA_VERSION

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": KAFKA_VERSION,
        "versions": _versions(),
    }
