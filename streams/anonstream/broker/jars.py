"""The broker's jars: fetched once with Maven (``pom.xml`` next to this file) into a cache
outside the repository, ``$ANONSTREAM_CACHE_DIR`` or ``~/.cache/anonstream``, under
``kafka-<version>/libs``; and the ``java`` that runs them."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from anonstream.broker import BrokerError
from anonstream.broker.process import tail

KAFKA_VERSION = "4.1.1"
MARKER_NAME = ".complete"
MVN_TIMEOUT_SECONDS = 1800.0

# Jars whose presence tells a usable copy from an unrelated directory.
_REQUIRED_JARS = (f"kafka_2.13-{KAFKA_VERSION}.jar", "log4j-slf4j-impl-")


def cache_dir() -> Path:
    """Root of the cache: ``$ANONSTREAM_CACHE_DIR`` or ``~/.cache/anonstream``."""
    env = os.environ.get("ANONSTREAM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anonstream"


def _kafka_home(cache: Path | None) -> Path:
    return (cache if cache is not None else cache_dir()) / f"kafka-{KAFKA_VERSION}"


def _jars_complete(libs: Path) -> bool:
    if not (libs.parent / MARKER_NAME).is_file() or not libs.is_dir():
        return False
    names = [p.name for p in libs.glob("*.jar")]
    return all(any(n.startswith(req) for n in names) for req in _REQUIRED_JARS)


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
                f"Kafka jars.\n{tail(out)}"
            ) from exc
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BrokerError(
            f"Maven failed (exit code {proc.returncode}) while fetching the Kafka "
            f"{KAFKA_VERSION} jars. Command: {' '.join(cmd)}\nLast lines of its output:\n"
            f"{tail(proc.stdout or '(no output)')}"
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
