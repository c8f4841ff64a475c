"""The broker's processes on this machine: only our own broker is ever signalled (a java
``kafka.Kafka`` naming our data dir), it dies with the thread that started it, stale data
dirs are removed, and its logs are read back for error messages."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

DATA_DIR_PREFIX = "anonstream-kafka-"
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 20.0


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return ""


def first_error(path: Path, context: int = 1) -> str:
    """The first ERROR/FATAL line of a log (plus ``context`` following lines), or ''."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            return "\n".join(lines[i : i + 1 + context])
    return ""


def pdeathsig_preexec() -> Callable[[], None] | None:
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


def is_our_broker(pid: int, data_dir: str) -> bool:
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


def terminate_pid(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
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


def remove_data_dir(path: str | Path) -> None:
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


def failure_report(reason: str, log_file: Path | None) -> str:
    """Why a broker failed, with what its logs say: the first error of ``server.log``, the
    JVM's own output (start-up errors, uncaught exceptions) and the log's last lines."""
    parts = [reason]
    if log_file is not None:
        error = first_error(log_file)
        if error:
            parts.append(f"First error in the broker log:\n{error}")
        out_tail = tail_file(log_file.parent / "kafka.out", 20)
        if out_tail:
            parts.append(f"JVM output:\n{out_tail}")
        last = tail_file(log_file)
        parts.append(
            f"Last {LOG_TAIL_LINES} lines of {log_file}:\n{last}"
            if last
            else f"{log_file} is empty or missing."
        )
    return "\n".join(parts)
