"""Hold a process to a fraction of a core with a cgroup of its own (the scale run's ``--cap``).

cgroup v2: a child of the root with ``cpu.max`` = "<quota> <period>", when the root's
``cgroup.controllers`` lists ``cpu`` (``+cpu`` is written to the root's
``cgroup.subtree_control`` if it is not enabled yet). cgroup v1: a child of the ``cpu``
controller's hierarchy with ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``. Each group
also gets a high weight (``cpu.weight`` / ``cpu.shares``), so that it gets its cap on a
busy machine. Either needs write access to the hierarchy (root). Anything else fails with
:class:`CpuCapError` saying what was looked for.

A process joins its group before it runs anything of its own: :meth:`CpuGroup.wrap` turns
a command into ``sh -c 'echo $$ > <group>/cgroup.procs && exec "$@"'``, so the pid the
harness measures is the capped process. :meth:`CpuGroup.remove` moves any process still
inside to the parent group and removes the directory; :func:`cpu_groups` removes every
group it made, also when the block raises.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_PERIOD_US",
    "CgroupLayout",
    "CpuCapError",
    "CpuGroup",
    "cpu_groups",
    "detect_layout",
    "format_cpu_max",
    "parse_cap",
    "parse_controllers",
    "parse_cpu_max",
    "quota_us",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses a smaller CFS quota
MAX_PERIOD_US = 1_000_000
# A high weight (8 times the default) as well as the quota: on a busy machine a group then
# gets its whole cap rather than one fair share among every other process; the quota still
# bounds it from above, so N groups never take more than N x cap cores.
SHARES_V1 = 8192
WEIGHT_V2 = 800


class CpuCapError(RuntimeError):
    """No usable cgroup cpu controller, or a value it cannot take."""


def parse_cap(text: str) -> float:
    """Cores per process from the command line: a number > 0, e.g. "0.25"."""
    try:
        cores = float(text)
    except ValueError:
        raise ValueError(f"expected cores per worker, e.g. 0.25, not {text!r}") from None
    if not 0 < cores < float("inf"):  # also rejects NaN
        raise ValueError(f"cores per worker must be a finite number > 0, not {text!r}")
    return cores


def quota_us(cores: float, period_us: int = DEFAULT_PERIOD_US) -> int:
    """The CFS quota that gives ``cores`` cores per ``period_us``."""
    if not 1_000 <= period_us <= MAX_PERIOD_US:
        raise CpuCapError(f"a CFS period must be 1,000 to 1,000,000 µs, not {period_us}")
    if not cores > 0:
        raise CpuCapError(f"cores must be > 0, not {cores}")
    quota = round(cores * period_us)
    if quota < MIN_QUOTA_US:
        raise CpuCapError(
            f"{cores} cores is {quota} µs per {period_us} µs period; the kernel needs at "
            f"least {MIN_QUOTA_US} µs"
        )
    return quota


def format_cpu_max(quota: int | None, period_us: int) -> str:
    """The cgroup v2 ``cpu.max`` line: "<quota> <period>" ("max" for no limit)."""
    return f"{'max' if quota is None else quota} {period_us}"


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """(quota or None for "max", period) of a cgroup v2 ``cpu.max`` line."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"cpu.max holds two fields, not {text!r}")
    quota_text, period_text = parts
    try:
        period = int(period_text)
        quota = None if quota_text == "max" else int(quota_text)
    except ValueError:
        raise ValueError(f"cpu.max fields are numbers (or 'max'), not {text!r}") from None
    if period <= 0 or (quota is not None and quota <= 0):
        raise ValueError(f"cpu.max fields are positive, not {text!r}")
    return quota, period


def parse_controllers(text: str) -> frozenset[str]:
    """Controller names of a ``cgroup.controllers`` or ``cgroup.subtree_control`` file."""
    return frozenset(text.split())


@dataclass(frozen=True)
class CgroupLayout:
    """Where groups are made: ``base`` is their parent directory."""

    version: Literal[1, 2]
    base: Path


def detect_layout(root: Path = CGROUP_ROOT) -> CgroupLayout:
    """The cgroup v2 layout when its root lists the cpu controller, else v1's cpu hierarchy."""
    controllers = root / "cgroup.controllers"
    if controllers.is_file():
        with contextlib.suppress(OSError):
            if "cpu" in parse_controllers(controllers.read_text()):
                return CgroupLayout(2, root)
    for name in ("cpu", "cpu,cpuacct"):
        base = root / name
        if (base / "cpu.cfs_quota_us").is_file() and (base / "cpu.cfs_period_us").is_file():
            return CgroupLayout(1, base)
    raise CpuCapError(
        f"cannot cap CPU: {controllers} does not list the cpu controller (cgroup v2) and "
        f"there is no cgroup v1 cpu hierarchy ({root}/cpu with cpu.cfs_quota_us). Run "
        "without --cap, or on a machine with a cgroup cpu controller."
    )


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise CpuCapError(
            f"cannot write {text.strip()!r} to {path}: {exc.strerror or exc} (the CPU cap "
            "needs write access to the cgroup hierarchy, i.e. root)"
        ) from exc


@dataclass
class CpuGroup:
    """One cgroup holding its processes to ``cores`` cores."""

    path: Path
    layout: CgroupLayout
    cores: float
    period_us: int = DEFAULT_PERIOD_US

    @classmethod
    def create(
        cls, layout: CgroupLayout, name: str, cores: float, period_us: int = DEFAULT_PERIOD_US
    ) -> CpuGroup:
        quota = quota_us(cores, period_us)
        if layout.version == 2:
            control = layout.base / "cgroup.subtree_control"
            with contextlib.suppress(OSError):
                if "cpu" not in parse_controllers(control.read_text()):
                    _write(control, "+cpu")
        path = layout.base / name
        try:
            path.mkdir()
        except OSError as exc:
            raise CpuCapError(f"cannot create the cgroup {path}: {exc.strerror or exc}") from exc
        group = cls(path, layout, cores, period_us)
        try:
            if layout.version == 2:
                _write(path / "cpu.max", format_cpu_max(quota, period_us))
                _write(path / "cpu.weight", str(WEIGHT_V2))
            else:
                # The period first: a quota is checked against the period in place.
                _write(path / "cpu.cfs_period_us", str(period_us))
                _write(path / "cpu.cfs_quota_us", str(quota))
                _write(path / "cpu.shares", str(SHARES_V1))
        except BaseException:
            group.remove()
            raise
        return group

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run by a shell that first moves itself into this group, then execs it."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs), *cmd]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs.read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self, attempts: int = 50) -> None:
        """Move any process left inside to the parent group, then remove the group."""
        parent_procs = self.layout.base / "cgroup.procs"
        for _ in range(attempts):
            if not self.path.exists():
                return
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    parent_procs.write_text(str(pid))
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise CpuCapError(f"cannot remove the cgroup {self.path}: {exc}") from exc
            time.sleep(0.1)  # an exiting process leaves the group a moment later
        raise CpuCapError(f"the cgroup {self.path} stayed busy; remove it with rmdir")


@contextlib.contextmanager
def cpu_groups(
    count: int, cores: float, *, prefix: str = "anonstream-bench", root: Path = CGROUP_ROOT
) -> Iterator[list[CpuGroup]]:
    """``count`` fresh groups of ``cores`` cores each, all removed on leaving the block."""
    layout = detect_layout(root)
    tag = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    groups: list[CpuGroup] = []
    try:
        for i in range(count):
            groups.append(CpuGroup.create(layout, f"{tag}-{i}", cores))
        yield groups
    finally:
        errors = []
        for group in groups:
            try:
                group.remove()
            except CpuCapError as exc:
                errors.append(str(exc))
        if errors and sys.exc_info()[0] is None:  # never hide the error that got us here
            raise CpuCapError("; ".join(errors))
