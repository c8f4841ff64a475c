"""`run_until` with children that end on their own (the scale run's --stop-at-end workers)."""

from __future__ import annotations

import sys
from pathlib import Path

from anonstream_load.harness import run_until


def _cmd(code: int) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, "-c", f"raise SystemExit({code})"], {}


def test_children_that_exit_0_are_done_once_the_condition_holds(tmp_path: Path) -> None:
    result = run_until(
        [_cmd(0), _cmd(0)], done=lambda: True, timeout=60, log_dir=tmp_path, name="ok",
        may_end=True,
    )  # fmt: skip
    assert result.done and not result.timed_out
    assert [c.exited_early for c in result.children] == [False, False]
    assert [c.returncode for c in result.children] == [0, 0]


def test_a_child_that_fails_is_a_failure_and_exits_0_without_the_condition_too(
    tmp_path: Path,
) -> None:
    failed = run_until(
        [_cmd(0), _cmd(3)], done=lambda: False, timeout=60, log_dir=tmp_path, name="bad",
        may_end=True,
    )  # fmt: skip
    assert not failed.done and failed.children[1].exited_early
    # All exited 0 but the condition never held: a failure after the grace.
    never = run_until(
        [_cmd(0)], done=lambda: False, timeout=60, log_dir=tmp_path, name="never",
        may_end=True, stop_grace=0.3,
    )  # fmt: skip
    assert not never.done and never.children[0].exited_early


def test_without_may_end_an_exit_is_early_as_before(tmp_path: Path) -> None:
    result = run_until([_cmd(0)], done=lambda: False, timeout=60, log_dir=tmp_path, name="live")
    assert not result.done and result.children[0].exited_early
