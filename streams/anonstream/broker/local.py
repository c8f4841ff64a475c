"""A real single-node Apache Kafka broker (KRaft, broker + controller in one JVM).

The broker's jars come from Maven Central (see ``pom.xml`` next to this file) and are cached
outside the repository, in ``$ANONSTREAM_CACHE_DIR`` or ``~/.cache/anonstream``, under
``kafka-<version>/libs``. They are fetched with Maven the first time only.

``LocalKafka`` runs one broker for the lifetime of a Python object (tests, benchmarks);
``kafka_up`` / ``kafka_down`` / ``kafka_status`` manage a detached broker that outlives the
command that started it (``anonstream kafka up|down|status``), tracked in a small JSON state
file.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil

from anonstream.broker.secure import Scram

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "LocalKafka",
    "broker_properties",
    "cache_dir",
    "clean_stale_data_dirs",
    "default_state_file",
    "ensure_jars",
    "free_ports",
    "kafka_down",
    "kafka_status",
    "kafka_up",
    "random_cluster_id",
]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
DEFAULT_PORT = 9092  # `kafka up` takes it when free, so that examples with 9092 work
NODE_ID = 1
DATA_DIR_PREFIX = "anonstream-kafka-"
STATE_FILE_NAME = "kafka-up.json"
MARKER_NAME = ".complete"
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 20.0
MVN_TIMEOUT_SECONDS = 1800.0
FORMAT_TIMEOUT_SECONDS = 120.0

# Jars whose presence tells a usable copy from an unrelated directory.
_REQUIRED_JARS = (f"kafka_2.13-{KAFKA_VERSION}.jar", "log4j-slf4j-impl-")

_T = TypeVar("_T")


class BrokerError(RuntimeError):
    """The local Kafka broker could not be fetched, started or stopped."""


# --------------------------------------------------------------------------------------------
# Locations and the jar cache
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Root of the cache: ``$ANONSTREAM_CACHE_DIR`` or ``~/.cache/anonstream``."""
    env = os.environ.get("ANONSTREAM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anonstream"


def state_dir() -> Path:
    """Where ``kafka_up`` records its broker: ``$ANONSTREAM_STATE_DIR`` or ~/.cache/anonstream."""
    env = os.environ.get("ANONSTREAM_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anonstream"


def default_state_file() -> Path:
    return state_dir() / STATE_FILE_NAME


def _kafka_home(cache: Path | None) -> Path:
    return (cache if cache is not None else cache_dir()) / f"kafka-{KAFKA_VERSION}"


def _jars_complete(libs: Path) -> bool:
    if not (libs.parent / MARKER_NAME).is_file() or not libs.is_dir():
        return False
    names = [p.name for p in libs.glob("*.jar")]
    return all(any(n.startswith(req) for n in names) for req in _REQUIRED_JARS)


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return ""


def _first_error(path: Path, context: int = 1) -> str:
    """The first ERROR/FATAL line of a log (plus ``context`` following lines), or ''."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            return "\n".join(lines[i : i + 1 + context])
    return ""


def find_java() -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java`` if set, else the one on ``PATH``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "Java was not found (no `java` on PATH and no usable $JAVA_HOME). "
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer, e.g. `apt-get install openjdk-17-jre`."
        )
    return found


def _pom_text() -> str:
    return (Path(__file__).parent / "pom.xml").read_text(encoding="utf-8")


def ensure_jars(cache: Path | None = None, *, quiet: bool = False) -> Path:
    """Return the folder holding the broker's jars, fetching them with Maven if missing.

    A marker file is written only after a complete copy, so an interrupted fetch is redone.
    Concurrent callers serialise on a lock file; the second one finds the jars in place.
    """
    home = _kafka_home(cache)
    libs = home / "libs"
    if _jars_complete(libs):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_complete(libs):  # another process finished while we waited
            return libs
        _fetch_jars(libs, quiet=quiet)
    return libs


def _fetch_jars(libs: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            f"Maven was not found (no `mvn` on PATH). It is needed once, to fetch the Kafka "
            f"{KAFKA_VERSION} jars from Maven Central into {libs}; e.g. `apt-get install maven`."
        )
    find_java()  # Maven needs it too; fail with the clearer message

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    home = libs.parent
    (home / MARKER_NAME).unlink(missing_ok=True)
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    say(f"fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} (first run only)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anonstream-mvn-") as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_pom_text(), encoding="utf-8")
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                cmd,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=MVN_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output if isinstance(exc.output, str) else ""
            raise BrokerError(
                f"Maven did not finish within {MVN_TIMEOUT_SECONDS:.0f} s while fetching the "
                f"Kafka jars.\n{_tail(out)}"
            ) from exc
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BrokerError(
            f"Maven failed (exit code {proc.returncode}) while fetching the Kafka "
            f"{KAFKA_VERSION} jars. Command: {' '.join(cmd)}\nLast lines of its output:\n"
            f"{_tail(proc.stdout or '(no output)')}"
        )
    jars = sorted(p.name for p in partial.glob("*.jar"))
    missing = [r for r in _REQUIRED_JARS if not any(j.startswith(r) for j in jars)]
    if missing:
        raise BrokerError(f"Maven succeeded but these jars are missing from {partial}: {missing}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker = {
        "kafka_version": KAFKA_VERSION,
        "jars": jars,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (home / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    say(f"fetched {len(jars)} jars in {time.monotonic() - t0:.1f} s")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def free_ports(count: int = 2, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports, found by binding port 0 (all bound at once)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    Same rules as Kafka's ``Uuid.randomUuid()``: never the reserved all-zero or
    metadata-topic ids, never starting with ``-`` (it would read as a command-line flag).
    """
    while True:
        raw = uuid.uuid4().bytes
        if int.from_bytes(raw, "big") in (0, 1):
            continue
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def broker_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    overrides: Mapping[str, object] | None = None,
    host: str = "127.0.0.1",
) -> dict[str, str]:
    """``server.properties`` of a single-node KRaft broker (formatted with ``--standalone``)."""
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # Topics: one replica, one partition unless the creator says otherwise.
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        # Internal topics: the defaults assume three brokers and break a single node.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # No 3 s wait before the first rebalance of every consumer group.
        "group.initial.rebalance.delay.ms": "0",
        # Short retention.ms on a topic takes effect within ~30 s (of closed segments).
        "log.retention.check.interval.ms": "30000",
        # The cleaner allocates this on start-up (default 128 MiB): too much for a 512 MiB heap.
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, bool):
            props[key] = "true" if value else "false"
        else:
            props[key] = str(value)
    return props


def _escape_property(value: str) -> str:
    # java.util.Properties treats backslash as an escape; nothing else matters for our values.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render_properties(props: Mapping[str, str]) -> str:
    lines = ["# Written by anonstream (anonstream.broker.local); fresh for every broker run."]
    lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _log4j2_properties(level: str) -> str:
    """Everything into ``${kafka.logs.dir}/server.log`` (rolled at 20 MiB), nothing on stdout."""
    return f"""\
# Written by anonstream: the broker logs to a file only.
status = warn
name = anonstream-kafka
# Keep logging until Kafka's own shutdown hook has finished.
shutdownHook = disable
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.server.filePattern = ${{sys:kafka.logs.dir}}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 20MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = {level}
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


# --------------------------------------------------------------------------------------------
# Running coroutines from sync code (also when the caller is inside an event loop)
# --------------------------------------------------------------------------------------------


def run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine made by ``factory`` to completion, from sync code.

    If this thread already runs an event loop, the coroutine runs on a fresh loop in a helper
    thread instead (``asyncio.run`` cannot nest).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _probe_metadata(
    bootstrap: str, timeout: float, client_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout * 1000)),
        client_id="anonstream-readiness",
        **(client_options or {}),
    )
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        return cluster
    finally:
        await admin.close()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """On Linux: a preexec_fn asking the kernel to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _is_our_broker(pid: int, data_dir: str) -> bool:
    """True only if ``pid`` is a live java ``kafka.Kafka`` process naming our ``data_dir``."""
    if not Path(data_dir).name.startswith(DATA_DIR_PREFIX):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
        name = proc.name()
    except (psutil.Error, OSError):
        return False
    if not cmdline:
        return False
    is_java = name == "java" or Path(cmdline[0]).name == "java"
    return is_java and "kafka.Kafka" in cmdline and any(data_dir in arg for arg in cmdline)


def _terminate_pid(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM ``pid`` (that pid only), wait up to ``grace`` seconds, then SIGKILL."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except psutil.TimeoutExpired:
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; killing it", pid, grace)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        return


def _remove_data_dir(path: str | Path) -> None:
    p = Path(path)
    # Never remove anything that is not one of our own fresh data dirs.
    if p.name.startswith(DATA_DIR_PREFIX) and p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def clean_stale_data_dirs(min_age: float = 3600.0) -> list[Path]:
    """Remove leftover ``anonstream-kafka-*`` dirs in the temp dir that no process uses.

    They are left behind when the Python process that owned a broker was killed (the broker
    itself then exits too, see ``die_with_parent``). Dirs younger than ``min_age`` seconds are
    kept: another process may be preparing one right now.
    """
    now = time.time()
    candidates = []
    for path in Path(tempfile.gettempdir()).glob(DATA_DIR_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and now - path.stat().st_mtime > min_age:
                candidates.append(path)
    if not candidates:
        return []
    in_use: set[Path] = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        in_use.update(c for c in candidates if any(str(c) in arg for arg in cmdline))
    removed = [c for c in candidates if c not in in_use]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


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
            _log4j2_properties(self.log_level), encoding="utf-8"
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

    def _jvm_command(
        self, java: str, libs: Path, jvm_options: Sequence[str], logs_dir: Path
    ) -> list[str]:
        assert self._data_dir is not None
        return [
            java,
            *jvm_options,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={logs_dir}",
            "-cp",
            str(libs / "*"),
        ]

    def _format(self, java: str, libs: Path, deadline: float) -> None:
        assert self._data_dir is not None
        self.cluster_id = random_cluster_id()
        # A short-lived tool JVM: small heap, C1 only (starts faster). It logs (its config dump)
        # into logs/storage-tool/, so that logs/server.log is the broker's alone.
        tool_options = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        cmd = [
            *self._jvm_command(java, libs, tool_options, self._data_dir / "logs" / "storage-tool"),
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
                f"{_tail(proc.stdout or '(no output)')}"
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
            *self._jvm_command(java, libs, broker_options, data_dir / "logs"),
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
                preexec_fn=_pdeathsig_preexec() if self.die_with_parent else None,
            )
        self.started_at = datetime.now(UTC)
        self._wait_ready(deadline)
        self.time_to_ready = time.monotonic() - launched

    def _failure(self, reason: str) -> BrokerError:
        parts = [reason]
        if self.log_file is not None:
            first_error = _first_error(self.log_file)
            if first_error:
                parts.append(f"First error in the broker log:\n{first_error}")
            out_tail = _tail_file(self.log_file.parent / "kafka.out", 20)
            if out_tail:  # JVM start-up errors, uncaught exceptions
                parts.append(f"JVM output:\n{out_tail}")
            tail = _tail_file(self.log_file)
            parts.append(
                f"Last {LOG_TAIL_LINES} lines of {self.log_file}:\n{tail}"
                if tail
                else f"{self.log_file} is empty or missing."
            )
        return BrokerError("\n".join(parts))

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
            if _tcp_accepts(self.host, self._port):
                try:
                    cluster = run_sync(
                        functools.partial(
                            _probe_metadata, self.bootstrap_servers, min(5.0, remaining),
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


def _read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot read the broker state file {state_file}: {exc}") from exc
    if not isinstance(data, dict) or not {"pid", "bootstrap", "data_dir"} <= data.keys():
        raise BrokerError(f"{state_file} is not a broker state file (delete it by hand)")
    return data


def _write_state(state_file: Path, record: Mapping[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(state_file.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(state_file)


def kafka_status(state_file: Path | None = None) -> dict[str, Any] | None:
    """The record of the broker started by ``kafka_up``, or None if there is none.

    The record is ``{pid, bootstrap, data_dir, started_at, ...}`` plus ``running``: whether
    that pid is still our java process (False means a stale record; ``kafka_down`` clears it).
    """
    path = state_file or default_state_file()
    record = _read_state(path)
    if record is None:
        return None
    record["running"] = _is_our_broker(int(record["pid"]), str(record["data_dir"]))
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
        _write_state(path, record)
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
    record = _read_state(path)
    if record is None:
        return None
    pid, data_dir = int(record["pid"]), str(record["data_dir"])
    record["was_running"] = _is_our_broker(pid, data_dir)
    if record["was_running"]:
        _terminate_pid(pid, grace)
    _remove_data_dir(data_dir)
    path.unlink(missing_ok=True)
    return record
