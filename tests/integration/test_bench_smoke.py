"""The load benchmark works end to end on a small workload (issues 5 and 6).

Only that it works: exit code, the shape of its last stdout line, event counts, the scale
run's releases, the chart. No timing is asserted: the benchmark is not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anonstream_load.harness import worker_supports_stop_at_end

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 20_000


def test_bench_small_workload(kafka_bootstrap: str, tmp_path: Path) -> None:
    runs = ["ceiling", "naive_faust", "quixstreams"]
    if worker_supports_stop_at_end():
        runs += ["anonstream", "faust_agent"]
    chart = tmp_path / "bench.png"
    before = set(ROOT.glob("*-data"))
    proc = subprocess.run(
        [
            sys.executable, "-m", "anonstream_load.bench", "--bootstrap", kafka_bootstrap,
            "--events", str(EVENTS), "--users", "2000", "--partitions", "2",
            "--runs", ",".join([*runs, "scale"]), "--scale", "1,2", "--chart", str(chart),
            "--timeout", "240",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "events", "users", "partitions", "runs", "machine",
        "ratio_ceiling", "ratio_naive_faust", "ratio_quixstreams",
    ):  # fmt: skip
        assert key in summary, key
    assert summary["events"] == EVENTS
    assert summary["machine"]["cpus"] >= 1 and summary["machine"]["python"]
    assert list(summary["runs"]) == runs
    for name, run in summary["runs"].items():
        assert run["ok"], (name, run["error"])
        assert run["count"] == EVENTS, name
        for figure in ("events_per_s", "seconds", "peak_rss_mib"):
            assert run[figure] > 0, (name, figure)
    if "anonstream" in runs:
        for key in ("ratio_ceiling", "ratio_naive_faust", "ratio_quixstreams"):
            assert summary[key] > 0, key
    # The scale run: 1 and 2 scale-out workers, each read the whole input and released
    # every window; the same number of aggregates whatever the worker count.
    assert [s["workers"] for s in summary["scale"]] == [1, 2]
    for s in summary["scale"]:
        assert s["ok"], (s["workers"], s["error"])
        assert s["count"] == EVENTS, s["workers"]
        assert s["releases"]["window_summary"] == summary["produce"]["windows"] >= 1
        for figure in ("events_per_s", "seconds", "cpu_s", "peak_rss_mib"):
            assert s[figure] > 0, (s["workers"], figure)
    aggregates = {s["releases"]["aggregate"] for s in summary["scale"]}
    if "anonstream" in runs:
        aggregates.add(summary["runs"]["anonstream"]["releases"]["aggregate"])
    if "faust_agent" in runs:  # the same engine in a Faust app: the same releases
        agent, worker = summary["runs"]["faust_agent"], summary["runs"]["anonstream"]
        assert agent["releases"] == worker["releases"]
        assert summary["ratio_faust_agent"] > 0
    assert len(aggregates) == 1 and aggregates.pop() > 0
    assert chart.is_file() and chart.stat().st_size > 1000
    assert set(ROOT.glob("*-data")) == before  # no Faust data directory left in the checkout
