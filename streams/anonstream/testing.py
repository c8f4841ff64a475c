"""Helpers to run real workers and read real topics: used by the demo, the integration
tests and the benchmark, so all three exercise the same paths a user runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer

from anonstream.broker.local import free_ports


def worker_command(*args: str) -> list[str]:
    """`anonstream worker` with `args`, run by this interpreter: how every worker child
    process (demo, tests, benchmark, soak run) is started."""
    return [sys.executable, "-m", "anonstream.cli", "worker", *args]


def worker_env(
    bootstrap: str,
    *,
    group_id: str,
    web_port: int,
    secret: str | None = None,
    base: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a worker child: `base` (this process's by default) without its
    secret file, with the broker, group and web port set; `secret` when given (a throwaway
    one: tests, benchmarks); `extra` last."""
    env = dict(os.environ if base is None else base)
    env.pop("ANONSTREAM_SECRET_FILE", None)
    env.update(
        ANONSTREAM_BOOTSTRAP_SERVERS=bootstrap,
        ANONSTREAM_GROUP_ID=group_id,
        ANONSTREAM_WEB_PORT=str(web_port),
    )
    if secret is not None:
        env["ANONSTREAM_SECRET"] = secret
    env.update(extra or {})
    return env


class WorkerProcess:
    """`anonstream worker` as a child process, stopped by its own pid only."""

    def __init__(
        self,
        bootstrap: str,
        *,
        pipelines_dir: Path = Path("pipelines"),
        pipelines: Sequence[str] = (),
        group_id: str = "anonstream",
        idle_close_seconds: float = 3.0,
        secret: str | None = None,
        demo: bool = False,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        args: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        (self.web_port,) = free_ports(1)
        self.bootstrap = bootstrap
        self.env = worker_env(
            bootstrap, group_id=group_id, web_port=self.web_port, secret=secret, base=base_env,
            extra={
                "ANONSTREAM_IDLE_CLOSE_SECONDS": str(idle_close_seconds),
                "ANONSTREAM_PIPELINES_DIR": str(pipelines_dir),
                **(extra_env or {}),
            },
        )  # fmt: skip
        pipeline_args = [a for p in pipelines for a in ("--pipeline", p)]
        self.cmd = worker_command(*pipeline_args, *(["--demo"] if demo else []), *args)
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start the worker and, with `wait`, wait until it is healthy (consuming); a worker
        that does not get there within `timeout` is killed."""
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Return once /health answers 200 (consuming); a worker that exits first raises, one
        that does not get there within `timeout` is killed, then raises."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.proc.returncode}")
            if self.health() is not None:
                return
            time.sleep(0.3)
        self.kill()  # never leave a half-started worker behind
        raise RuntimeError(f"worker not healthy within {timeout} s")

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return None
            raise
        except OSError:
            return None

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return resp.read()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def read_releases(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 120.0,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Read release records from the start of `topics` until `until(records)` holds."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, isolation_level="read_committed",
    )  # fmt: skip
    records: list[dict[str, Any]] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"releases incomplete after {timeout} s: {len(records)} read")
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    records.append(rec)
                    if on_record:
                        on_record(rec)
    finally:
        await consumer.stop()
    return records


def summaries_complete(expected_windows: dict[str, int]) -> Callable[[list[dict[str, Any]]], bool]:
    """True once each pipeline has released `n` window summaries."""

    def check(records: list[dict[str, Any]]) -> bool:
        seen: dict[str, int] = {}
        for r in records:
            if r["kind"] == "window_summary":
                seen[r["pipeline"]] = seen.get(r["pipeline"], 0) + 1
        return all(seen.get(p, 0) >= n for p, n in expected_windows.items())

    return check


def run(coro: Any) -> Any:
    return asyncio.run(coro)
