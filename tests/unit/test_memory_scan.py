"""The memory scan of load/ works, and state is bounded by pairs: at most L rows each."""

from __future__ import annotations

from anonstream_load.memory_scan import main, measure


def test_state_is_at_most_l_rows_per_person_and_cell() -> None:
    r = measure(users=50, events=3000)
    assert r["events"] == 3000 and r["open_windows"] == 1
    assert 0 < r["pairs"] <= r["rows_kept"] <= 10 * r["pairs"]  # L = 10 in the pipeline
    assert r["rows_kept"] < r["events"]  # heavy visitors are capped, not stored per event
    assert r["state_bytes"] > 0


def test_cli_runs_a_small_scan(capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["--users", "40", "--events", "800", "--scan-users", "20", "--scan-events", "800"])
        == 0
    )
    assert '"memory_scan"' in capsys.readouterr().out
