"""A loaded machine for tests: one busy-looping process per core.

Releases must not depend on how fast the worker runs; a test that uses the `cpu_hog`
fixture shows it with every core busy beside the worker. Each hog ends by itself after
HOG_MAX_S (so a killed test run leaves nothing spinning for long) and is killed by its pid
when the test ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

HOG_MAX_S = 1_200
_SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture(name="cpu_hog")
def cpu_hog_fixture() -> Iterator[list[int]]:
    """The pids of one busy process per core, running for the test's duration."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPIN.format(s=HOG_MAX_S)]) for _ in range(cores())
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)
