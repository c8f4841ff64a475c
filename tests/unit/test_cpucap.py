"""The scale run's CPU cap (load/cpucap.py): parsing, validation, layout detection and the
groups' life cycle, on fake cgroup trees (no root needed, nothing touches /sys)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonstream_load import cpucap
from anonstream_load.cpucap import (
    CgroupLayout,
    CpuCapError,
    CpuGroup,
    cpu_groups,
    detect_layout,
    format_cpu_max,
    parse_cap,
    parse_controllers,
    parse_cpu_max,
    quota_us,
)


@pytest.mark.parametrize(
    ("text", "cores"), [("0.25", 0.25), ("1", 1.0), ("2.5", 2.5), ("1e-1", 0.1)]
)
def test_parse_cap_takes_positive_numbers(text: str, cores: float) -> None:
    assert parse_cap(text) == cores


@pytest.mark.parametrize("text", ["0", "-0.5", "abc", "", "nan", "inf", "-inf", "0.25cores"])
def test_parse_cap_refuses_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="cores per worker"):
        parse_cap(text)


def test_quota_is_cores_times_period() -> None:
    assert quota_us(0.25) == 25_000
    assert quota_us(1.5, 200_000) == 300_000
    assert quota_us(0.01) == 1_000  # the kernel's smallest quota


@pytest.mark.parametrize(("cores", "period"), [(0.005, 100_000), (0.0, 100_000), (-1, 100_000),
                                                (0.5, 999), (0.5, 1_000_001)])  # fmt: skip
def test_quota_refuses_what_the_kernel_would(cores: float, period: int) -> None:
    with pytest.raises(CpuCapError):
        quota_us(cores, period)


@given(quota=st.one_of(st.none(), st.integers(1, 10**9)), period=st.integers(1, 10**7))
def test_cpu_max_round_trips(quota: int | None, period: int) -> None:
    assert parse_cpu_max(format_cpu_max(quota, period)) == (quota, period)
    assert parse_cpu_max(format_cpu_max(quota, period) + "\n") == (quota, period)


@pytest.mark.parametrize(
    "text", ["", "max", "25000", "25000 100000 1", "max max", "-1 100000", "0 100000",
             "25000 0", "x 100000", "25000 1e5"],
)  # fmt: skip
def test_cpu_max_rejects_malformed_lines(text: str) -> None:
    with pytest.raises(ValueError, match=r"cpu\.max"):
        parse_cpu_max(text)


def test_controllers_are_whitespace_separated_names() -> None:
    assert parse_controllers("cpuset cpu io memory pids\n") == {
        "cpuset",
        "cpu",
        "io",
        "memory",
        "pids",
    }
    assert "cpu" not in parse_controllers("cpuset io memory")
    assert parse_controllers("") == frozenset()


# -- layouts, on fake trees ---------------------------------------------------------------------


def _v1(root: Path, name: str = "cpu") -> Path:
    base = root / name
    base.mkdir(parents=True)
    for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cgroup.procs"):
        (base / f).write_text("")
    return base


def test_v2_when_the_root_lists_cpu(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    _v1(tmp_path)  # a v1 tree next to it does not matter
    assert detect_layout(tmp_path) == CgroupLayout(2, tmp_path)


def test_v1_when_v2_has_no_cpu(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    base = _v1(tmp_path)
    assert detect_layout(tmp_path) == CgroupLayout(1, base)


def test_v1_under_its_joint_name(tmp_path: Path) -> None:
    base = _v1(tmp_path, "cpu,cpuacct")
    assert detect_layout(tmp_path) == CgroupLayout(1, base)


def test_neither_fails_saying_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    with pytest.raises(CpuCapError) as err:
        detect_layout(tmp_path)
    text = str(err.value)
    assert "cgroup.controllers" in text and "cpu.cfs_quota_us" in text and "--cap" in text


@pytest.fixture
def cgroupfs_rmdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """rmdir as on cgroupfs: a group's control files go with it."""
    real = Path.rmdir

    def rmdir(self: Path) -> None:
        if self.is_dir():
            for child in self.iterdir():
                child.unlink()
        real(self)

    monkeypatch.setattr(Path, "rmdir", rmdir)


def test_v1_group_gets_period_then_quota(tmp_path: Path, cgroupfs_rmdir: None) -> None:
    layout = CgroupLayout(1, _v1(tmp_path))
    group = CpuGroup.create(layout, "g", 0.25)
    assert (group.path / "cpu.cfs_period_us").read_text() == "100000"
    assert (group.path / "cpu.cfs_quota_us").read_text() == "25000"
    assert int((group.path / "cpu.shares").read_text()) > 1024  # above the default weight
    group.remove()
    assert not group.path.exists()


def test_v2_group_gets_cpu_max_and_enables_the_controller(
    tmp_path: Path, cgroupfs_rmdir: None
) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    (tmp_path / "cgroup.procs").write_text("")
    group = CpuGroup.create(detect_layout(tmp_path), "g", 0.5)
    assert parse_cpu_max((group.path / "cpu.max").read_text()) == (50_000, 100_000)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert int((group.path / "cpu.weight").read_text()) > 100  # above the default weight
    group.remove()
    assert not group.path.exists()


def test_a_group_that_exists_already_is_an_error(tmp_path: Path) -> None:
    layout = CgroupLayout(1, _v1(tmp_path))
    (layout.base / "g").mkdir()
    with pytest.raises(CpuCapError, match="cannot create"):
        CpuGroup.create(layout, "g", 0.5)


def test_the_wrapped_command_joins_the_group_as_itself(tmp_path: Path) -> None:
    """The shell writes its pid into the group, then execs: the measured pid is capped."""
    layout = CgroupLayout(1, _v1(tmp_path))
    group = CpuGroup(tmp_path / "cpu", layout, 0.5)
    proc = subprocess.run(
        group.wrap(["/bin/sh", "-c", "echo $$"]), capture_output=True, text=True, check=True
    )
    assert group.pids() == [int(proc.stdout)]


def test_a_wrapped_command_with_odd_arguments_is_passed_as_is(tmp_path: Path) -> None:
    group = CpuGroup(_v1(tmp_path), CgroupLayout(1, tmp_path / "cpu"), 0.5)
    args = ["a b", "$HOME", "'q'", '"d"', "--x=1;2"]
    proc = subprocess.run(
        group.wrap(["/usr/bin/printf", "%s\\n", *args]), capture_output=True, text=True, check=True
    )
    assert proc.stdout.splitlines() == args


def test_groups_are_removed_when_the_block_raises(
    tmp_path: Path, cgroupfs_rmdir: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _v1(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), cpu_groups(3, 0.25, root=tmp_path) as groups:
        assert len(groups) == 3 and all(g.path.is_dir() for g in groups)
        raise RuntimeError("boom")
    assert not [p for p in base.iterdir() if p.is_dir()]


def test_a_failed_setup_removes_the_groups_made_so_far(
    tmp_path: Path, cgroupfs_rmdir: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _v1(tmp_path)
    made: list[str] = []
    real = CpuGroup.create.__func__  # type: ignore[attr-defined]

    def create(cls: type[CpuGroup], layout: CgroupLayout, name: str, cores: float) -> CpuGroup:
        if len(made) == 2:
            raise CpuCapError("no more")
        made.append(name)
        return real(cls, layout, name, cores)  # type: ignore[no-any-return]

    monkeypatch.setattr(CpuGroup, "create", classmethod(create))
    with pytest.raises(CpuCapError, match="no more"), cpu_groups(4, 0.25, root=tmp_path):
        pass
    assert len(made) == 2
    assert not [p for p in base.iterdir() if p.is_dir()]


def test_processes_left_inside_are_moved_to_the_parent(
    tmp_path: Path, cgroupfs_rmdir: None
) -> None:
    layout = CgroupLayout(1, _v1(tmp_path))
    group = CpuGroup.create(layout, "g", 0.25)
    group.procs.write_text(f"{os.getpid()}\n")
    group.remove()
    assert (layout.base / "cgroup.procs").read_text() == str(os.getpid())
    assert not group.path.exists()


def test_a_busy_group_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = CgroupLayout(1, _v1(tmp_path))
    group = CpuGroup(layout.base / "g", layout, 0.25)
    group.path.mkdir()

    def busy(self: Path) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(Path, "rmdir", busy)
    monkeypatch.setattr(cpucap.time, "sleep", lambda s: None)
    with pytest.raises(CpuCapError, match="stayed busy"):
        group.remove(attempts=3)
