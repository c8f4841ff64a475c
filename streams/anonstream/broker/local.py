"""A real single-node Apache Kafka broker (KRaft, broker + controller in one JVM), run and
stopped.

``LocalKafka`` runs one broker for the lifetime of a Python object (tests, benchmarks);
``kafka_up`` / ``kafka_down`` / ``kafka_status`` manage a detached broker that outlives the
command that started it (``anonstream kafka up|down|status``), tracked in a small JSON state
file. The jars, configuration, ports and process helpers live in their own modules of this
package; their public names are imported here too, where callers have always found them.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from anonstream.broker import BrokerError
from anonstream.broker.admin import probe_metadata, run_sync
from anonstream.broker.config import (
    broker_properties,
    jvm_command,
    log4j2_properties,
    random_cluster_id,
    render_properties,
)
from anonstream.broker.jars import KAFKA_VERSION, cache_dir, ensure_jars, find_java
from anonstream.broker.ports import free_ports, port_is_free, tcp_accepts
from anonstream.broker.process import (
    DATA_DIR_PREFIX,
    STOP_GRACE_SECONDS,
    clean_stale_data_dirs,
    failure_report,
    is_our_broker,
    pdeathsig_preexec,
    remove_data_dir,
    tail,
    terminate_pid,
)
from anonstream.broker.secure import Scram
from anonstream.broker.state import STATE_FILE_NAME, default_state_file, read_state, write_state

__all__ = [
    "DATA_DIR_PREFIX",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "STATE_FILE_NAME",
    "BrokerError",
    "LocalKafka",
    "broker_properties",
    "cache_dir",
    "clean_stale_data_dirs",
    "default_state_file",
    "ensure_jars",
    "find_java",
    "free_ports",
    "kafka_down",
    "kafka_status",
    "kafka_up",
    "port_is_free",
    "random_cluster_id",
    "run_sync",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092  # `kafka up` takes it when free, so that examples with 9092 work
FORMAT_TIMEOUT_SECONDS = 120.0


class LocalKafka:
    """One real Kafka broker (KRaft, single node) in a JVM child process.

    >>> with LocalKafka() as kafka:          # doctest: +SKIP
    ...     print(kafka.bootstrap_servers)   # "127.0.0.1:40123"

    Every run gets a fresh data dir (``tempfile.mkdtemp(prefix="anonstream-kafka-")``) with
    ``server.properties``, ``log4j2.properties``, the topic data in ``kafka-data/`` and the logs
    in ``logs/`` (``server.log``; the JVM's own stdout/stderr in ``kafka.out``). ``stop()``
    removes it.

    ``die_with_parent`` (Linux; ignored when ``detached``): the kernel sends the broker SIGTERM
    when the *thread* that started it exits, so a crashed or killed test run leaves no JVM
    behind. Start it from a long-lived thread (normally the main thread).
    """

    def __init__(
        self,
        overrides: Mapping[str, object] | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        heap_min: str = "256m",
        heap_max: str = "512m",
        jvm_args: Sequence[str] = (),
        log_level: str = "INFO",
        cache: Path | None = None,
        detached: bool = False,
        die_with_parent: bool = True,
        security: Scram | None = None,
    ) -> None:
        self.overrides: dict[str, object] = dict(overrides or {})
        # SASL_SSL (SCRAM-SHA-512) with the standard authorizer instead of PLAINTEXT.
        self.security = security
        self.host = host
        self.heap_min = heap_min
        self.heap_max = heap_max
        self.jvm_args = list(jvm_args)
        self.log_level = log_level
        self.cache = cache
        self.detached = detached
        self.die_with_parent = die_with_parent and not detached
        self._fixed_port = port
        self._port: int | None = None
        self._controller_port: int | None = None
        self._data_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False
        self.cluster_id: str | None = None
        self.started_at: datetime | None = None
        # Timings (seconds) of the last start/stop, for reports.
        self.format_seconds: float | None = None
        self.time_to_ready: float | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None:
            raise BrokerError("the broker has no port yet: call start() (or prepare()) first")
        return f"{self.host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def controller_port(self) -> int | None:
        return self._controller_port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def log_file(self) -> Path | None:
        return self._data_dir / "logs" / "server.log" if self._data_dir else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def prepare(self) -> Path:
        """Create the data dir, choose free ports and write the config files (no JVM yet)."""
        if self._data_dir is not None:
            return self._data_dir
        data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX))
        self._data_dir = data_dir
        if self._fixed_port is not None:
            if not port_is_free(self.host, self._fixed_port):
                shutil.rmtree(data_dir, ignore_errors=True)
                self._data_dir = None
                raise BrokerError(
                    f"port {self._fixed_port} on {self.host} is already in use "
                    "(another Kafka broker?); choose another port or none (a free one is picked)"
                )
            self._port = self._fixed_port
            self._controller_port = next(
                p for p in free_ports(2, self.host) if p != self._fixed_port
            )
        else:
            self._port, self._controller_port = free_ports(2, self.host)
        (data_dir / "logs").mkdir()
        (data_dir / "kafka-data").mkdir()
        overrides = dict(self.overrides)
        if self.security is not None:
            self.security.make_certificates(data_dir / "tls", self.host)
            secured = self.security.broker_overrides(self._port, self._controller_port, self.host)
            overrides = {**secured, **overrides}
        props = broker_properties(
            self._port, self._controller_port, data_dir / "kafka-data", overrides, self.host
        )
        (data_dir / "server.properties").write_text(render_properties(props), encoding="utf-8")
        (data_dir / "log4j2.properties").write_text(
            log4j2_properties(self.log_level), encoding="utf-8"
        )
        return data_dir

    def start(self, timeout: float = 90) -> None:
        """Fetch the jars if needed, format a fresh data dir, start the JVM, wait until ready.

        ``timeout`` covers formatting, JVM start and readiness (not a first-time jar fetch).
        On any failure the JVM is stopped and the data dir removed before ``BrokerError``
        is raised.
        """
        if self.running:
            return
        libs = ensure_jars(self.cache)
        java = find_java()
        try:
            clean_stale_data_dirs()
        except Exception:  # best effort only
            log.debug("could not clean stale Kafka data dirs", exc_info=True)
        t0 = time.monotonic()
        deadline = t0 + timeout
        attempts = 1 if self._fixed_port is not None else 2
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(java, libs, deadline)
            except BaseException as exc:
                bind_race = isinstance(exc, BrokerError) and "Address already in use" in str(exc)
                self._cleanup()
                if bind_race and attempt < attempts and time.monotonic() < deadline:
                    log.warning("Kafka port was taken between choosing and binding; retrying")
                    continue
                raise
            break
        self.start_seconds = time.monotonic() - t0
        if not self.detached and not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        log.info(
            "Kafka %s ready at %s (pid %s) in %.1f s",
            KAFKA_VERSION,
            self.bootstrap_servers,
            self.pid,
            self.start_seconds,
        )

    def _format(self, java: str, libs: Path, deadline: float) -> None:
        assert self._data_dir is not None
        self.cluster_id = random_cluster_id()
        # A short-lived tool JVM: small heap, C1 only (starts faster). It logs (its config dump)
        # into logs/storage-tool/, so that logs/server.log is the broker's alone.
        tool_options = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        cmd = [
            *jvm_command(
                java, libs, self._data_dir, tool_options, self._data_dir / "logs" / "storage-tool"
            ),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self._data_dir / "server.properties"),
            "--standalone",
            *(self.security.format_arguments() if self.security else []),
        ]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=self._data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=max(1.0, min(FORMAT_TIMEOUT_SECONDS, deadline - t0)),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("formatting the Kafka storage dir timed out") from exc
        self.format_seconds = time.monotonic() - t0
        if proc.returncode != 0:
            raise BrokerError(
                f"kafka.tools.StorageTool format failed (exit code {proc.returncode}):\n"
                f"{tail(proc.stdout or '(no output)')}"
            )

    def restart(self, pause: float = 0.0, timeout: float = 90) -> None:
        """Stop the broker gracefully and start it again on the same ports and data, as an
        operator's rolling restart does; clients must reconnect. Used by fault tests."""
        if self._proc is None or self._data_dir is None:
            raise BrokerError("restart needs a running broker started by this object")
        self._proc.terminate()
        try:
            self._proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        time.sleep(pause)
        self._launch(find_java(), ensure_jars(self.cache), time.monotonic() + timeout)

    def _start_once(self, java: str, libs: Path, deadline: float) -> None:
        self.prepare()
        self._format(java, libs, deadline)
        self._launch(java, libs, deadline)

    def _launch(self, java: str, libs: Path, deadline: float) -> None:
        data_dir = self._data_dir
        assert data_dir is not None
        broker_options = [
            f"-Xms{self.heap_min}",
            f"-Xmx{self.heap_max}",
            # G1 settings of Kafka's own kafka-run-class.sh
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            *self.jvm_args,
        ]
        cmd = [
            *jvm_command(java, libs, data_dir, broker_options, data_dir / "logs"),
            "kafka.Kafka",
            str(data_dir / "server.properties"),
        ]
        out_path = data_dir / "logs" / "kafka.out"
        launched = time.monotonic()
        with open(out_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=pdeathsig_preexec() if self.die_with_parent else None,
            )
        self.started_at = datetime.now(UTC)
        self._wait_ready(deadline)
        self.time_to_ready = time.monotonic() - launched

    def _failure(self, reason: str) -> BrokerError:
        return BrokerError(failure_report(reason, self.log_file))

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self._port is not None
        last_error = "the client port never accepted a connection"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._failure(f"the Kafka broker exited with code {code} during start-up.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(
                    f"the Kafka broker was not ready within the timeout ({last_error})."
                )
            if tcp_accepts(self.host, self._port):
                try:
                    cluster = run_sync(
                        functools.partial(
                            probe_metadata, self.bootstrap_servers, min(5.0, remaining),
                            self.security.client_options() if self.security else None,
                        )
                    )  # fmt: skip
                except Exception as exc:
                    last_error = f"metadata request failed: {exc!r}"
                else:
                    if cluster.get("brokers"):
                        return
                    last_error = f"metadata lists no brokers: {cluster!r}"
            time.sleep(0.2)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the broker (our pid only), SIGKILL after ``grace`` s; remove the data dir."""
        t0 = time.monotonic()
        self._cleanup(grace)
        self.stop_seconds = time.monotonic() - t0
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def _cleanup(self, grace: float = STOP_GRACE_SECONDS) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "Kafka broker pid %d ignored SIGTERM for %.0f s; killing", proc.pid, grace
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        data_dir, self._data_dir = self._data_dir, None
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
        self._port = self._controller_port = None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"<LocalKafka {KAFKA_VERSION} {where} pid={self.pid}>"


# --------------------------------------------------------------------------------------------
# Detached broker for `anonstream kafka up|down|status`
# --------------------------------------------------------------------------------------------


def kafka_status(state_file: Path | None = None) -> dict[str, Any] | None:
    """The record of the broker started by ``kafka_up``, or None if there is none.

    The record is ``{pid, bootstrap, data_dir, started_at, ...}`` plus ``running``: whether
    that pid is still our java process (False means a stale record; ``kafka_down`` clears it).
    """
    path = state_file or default_state_file()
    record = read_state(path)
    if record is None:
        return None
    record["running"] = is_our_broker(int(record["pid"]), str(record["data_dir"]))
    return record


def kafka_up(
    state_file: Path | None = None,
    *,
    timeout: float = 90,
    port: int | None = None,
    overrides: Mapping[str, object] | None = None,
    heap_max: str = "512m",
) -> LocalKafka:
    """Start a detached broker that keeps running after this process exits; record it.

    Raises ``BrokerError`` if a broker recorded in the state file is still running.
    """
    path = state_file or default_state_file()
    current = kafka_status(path)
    if current is not None:
        if current["running"]:
            raise BrokerError(
                f"a broker is already running at {current['bootstrap']} "
                f"(pid {current['pid']}); stop it with `anonstream kafka down`"
            )
        kafka_down(path)  # stale record: clear it (and its data dir)
    kafka = LocalKafka(overrides, port=port, heap_max=heap_max, detached=True)
    kafka.start(timeout=timeout)
    assert kafka.pid is not None and kafka.data_dir is not None and kafka.started_at is not None
    record = {
        "pid": kafka.pid,
        "bootstrap": kafka.bootstrap_servers,
        "data_dir": str(kafka.data_dir),
        "started_at": kafka.started_at.isoformat(timespec="seconds"),
        "log_file": str(kafka.log_file),
        "kafka_version": KAFKA_VERSION,
        "time_to_ready": round(kafka.time_to_ready or 0.0, 2),
    }
    try:
        write_state(path, record)
    except BaseException:
        kafka.stop()
        raise
    return kafka


def kafka_down(
    state_file: Path | None = None, grace: float = STOP_GRACE_SECONDS
) -> dict[str, Any] | None:
    """Stop the broker recorded by ``kafka_up``; remove its data dir and the state file.

    Returns the record (with ``was_running``), or None if no broker was recorded. The pid is
    signalled only if it is still a java process whose command line names our data dir, so
    a recycled pid belonging to someone else is never touched.
    """
    path = state_file or default_state_file()
    record = read_state(path)
    if record is None:
        return None
    pid, data_dir = int(record["pid"]), str(record["data_dir"])
    record["was_running"] = is_our_broker(pid, data_dir)
    if record["was_running"]:
        terminate_pid(pid, grace)
    remove_data_dir(data_dir)
    path.unlink(missing_ok=True)
    return record
