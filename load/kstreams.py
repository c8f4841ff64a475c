"""The JVM peer of the benchmark: the job as a Kafka Streams application (``load/jvm``).

The application's source (Java 17, a ``pom.xml`` naming its Maven Central dependencies)
lives in ``load/jvm``. The first run builds it with ``mvn -q -B package`` in a scratch copy
and keeps the jar and its dependencies in the cache of the broker's jars
(``$ANONSTREAM_CACHE_DIR`` or ``~/.cache/anonstream``), under ``kstreams-peer-<digest>``,
where the digest covers the pom and every source file: a changed source is rebuilt, an
unchanged one never. A marker file is written only after a complete build, and concurrent
callers serialise on a lock file, as for the broker's jars.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from anonstream.broker.local import BrokerError, cache_dir, find_java

__all__ = [
    "JVM_SOURCE",
    "PeerBuildError",
    "ensure_peer_jar",
    "peer_command",
    "source_digest",
]

#: The Kafka Streams application's Maven project.
JVM_SOURCE = Path(__file__).resolve().parent / "jvm"
JAR_NAME = "kstreams-peer.jar"
MARKER_NAME = ".complete"
MVN_TIMEOUT_S = 1800.0


class PeerBuildError(RuntimeError):
    """The Kafka Streams peer could not be built (no Maven or Java, or the build failed)."""


def _sources(source: Path) -> list[Path]:
    return sorted([source / "pom.xml", *source.glob("src/**/*.java")])


def source_digest(source: Path = JVM_SOURCE) -> str:
    """12 hex digits of SHA-256 over the project's files (relative names and contents)."""
    h = hashlib.sha256()
    for path in _sources(source):
        h.update(path.relative_to(source).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _complete(home: Path) -> bool:
    return (home / MARKER_NAME).is_file() and (home / JAR_NAME).is_file()


def peer_home(source: Path = JVM_SOURCE, cache: Path | None = None) -> Path:
    """Where the peer built from `source` lives (one directory per source digest)."""
    return (cache if cache is not None else cache_dir()) / f"kstreams-peer-{source_digest(source)}"


def peer_built(source: Path = JVM_SOURCE, cache: Path | None = None) -> bool:
    """Is the peer of `source` built already (then Maven is not needed)?"""
    return _complete(peer_home(source, cache))


def ensure_peer_jar(
    source: Path = JVM_SOURCE, cache: Path | None = None, *, quiet: bool = False
) -> Path:
    """The built jar (its dependencies in ``lib/`` next to it), building it if needed."""
    if not (source / "pom.xml").is_file():
        raise PeerBuildError(f"no Maven project at {source} (pom.xml missing)")
    home = peer_home(source, cache)
    if _complete(home):
        return home / JAR_NAME
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(home):  # another process may have finished while we waited
            _build(source, home, quiet=quiet)
    return home / JAR_NAME


def _build(source: Path, home: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise PeerBuildError(
            "Maven was not found (no `mvn` on PATH). It is needed once, to build the Kafka "
            "Streams peer from load/jvm; e.g. `apt-get install maven`."
        )
    try:
        find_java()
    except BrokerError as exc:
        raise PeerBuildError(str(exc)) from exc
    if not quiet:
        print(f"building the Kafka Streams peer with Maven into {home} (first run only)",
              file=sys.stderr, flush=True)  # fmt: skip
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anonstream-kstreams-build-") as work:
        project = Path(work) / "jvm"
        shutil.copytree(source, project, ignore=shutil.ignore_patterns("target"))
        cmd = [mvn, "-q", "-B", "package"]
        try:
            proc = subprocess.run(
                cmd, cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=MVN_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise PeerBuildError(
                f"Maven did not build the Kafka Streams peer within {MVN_TIMEOUT_S:.0f} s"
            ) from exc
        if proc.returncode != 0:
            last = "\n".join((proc.stdout or "(no output)").rstrip().splitlines()[-40:])
            raise PeerBuildError(
                f"Maven failed (exit code {proc.returncode}) building the Kafka Streams peer "
                f"in {project}. Command: {' '.join(cmd)}\nLast lines of its output:\n{last}"
            )
        target = project / "target"
        if not (target / JAR_NAME).is_file() or not (target / "lib").is_dir():
            raise PeerBuildError(f"Maven succeeded but {target} holds no {JAR_NAME} and lib/")
        (home / MARKER_NAME).unlink(missing_ok=True)
        shutil.rmtree(home / "lib", ignore_errors=True)
        shutil.copytree(target / "lib", home / "lib")
        shutil.copy2(target / JAR_NAME, home / JAR_NAME)
    marker = {
        "digest": home.name.rsplit("-", 1)[-1],
        "jars": sorted(p.name for p in (home / "lib").glob("*.jar")),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (home / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        print(f"built the Kafka Streams peer in {time.monotonic() - t0:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip


def peer_command(
    jar: Path,
    *,
    bootstrap: str,
    topic: str,
    output: str,
    group: str,
    events: int,
    partitions: int,
    threads: int,
    k: int,
    guarantee: str = "exactly_once_v2",
    timeout_s: float = 900.0,
    jvm_options: Sequence[str] = (),
) -> list[str]:
    """The command that runs the peer (the secret goes in ``$ANONSTREAM_SECRET``)."""
    return [
        find_java(), *jvm_options, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-jar", str(jar), "--bootstrap", bootstrap, "--topic", topic, "--output", output,
        "--group", group, "--events", str(events), "--partitions", str(partitions),
        "--threads", str(threads), "--k", str(k), "--guarantee", guarantee,
        "--timeout", str(timeout_s),
    ]  # fmt: skip
