"""The benchmark's command line and its derived figures (no Kafka, no JVM, no Maven):
--runs with kstreams, --cap, --kstreams-guarantee, the scale ratios, the peer's build cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anonstream_load import bench, kstreams
from anonstream_load.bench import (
    RUN_NAMES,
    RunResult,
    ScaleResult,
    _BusyClock,
    _cpu_ratio,
    _scale_ratios,
    build_parser,
    scale_label,
)
from anonstream_load.kstreams import PeerBuildError, ensure_peer_jar, peer_command, source_digest


def parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def test_kstreams_is_a_run_and_among_the_defaults() -> None:
    assert "kstreams" in RUN_NAMES
    args = parse("--runs", "anonstream,kstreams")
    assert args.runs == ("anonstream", "kstreams")  # type: ignore[attr-defined]
    assert "kstreams" in parse().runs  # type: ignore[attr-defined]


def test_unknown_runs_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--runs", "anonstream,kstream")
    assert "kstream" in capsys.readouterr().err


def test_cap_and_worker_counts() -> None:
    args = parse("--runs", "scale", "--scale", "1,2,4,8", "--cap", "0.25")
    assert args.cap == 0.25  # type: ignore[attr-defined]
    assert args.scale == (1, 2, 4, 8)  # type: ignore[attr-defined]
    assert parse().cap is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("cap", ["0", "-1", "x", "nan", "inf"])
def test_bad_caps_are_refused(cap: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--cap", cap)
    assert "--cap" in capsys.readouterr().err


def test_guarantee_choices() -> None:
    assert parse().kstreams_guarantee == "exactly_once_v2"  # type: ignore[attr-defined]
    guarantee = parse("--kstreams-guarantee", "at_least_once").kstreams_guarantee  # type: ignore[attr-defined]
    assert guarantee == "at_least_once"
    with pytest.raises(SystemExit):
        parse("--kstreams-guarantee", "exactly_once")


def test_a_cap_without_a_cgroup_fails_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anonstream_load.cpucap import CpuCapError

    def no_cgroup(*a: object, **k: object) -> None:
        raise CpuCapError("no cgroup cpu controller here")

    def must_not_run(*a: object, **k: object) -> None:
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(bench, "cpu_groups", no_cgroup)
    monkeypatch.setattr(bench, "run_benchmark", must_not_run)
    assert bench.main(["--runs", "scale", "--cap", "0.25"]) == 2
    out = capsys.readouterr()
    assert "no cgroup cpu controller" in out.err and '"ok": false' in out.out


# -- derived figures ------------------------------------------------------------------------------


def _scale(workers: int, busy: float, eps: float = 1000.0) -> ScaleResult:
    return ScaleResult(workers=workers, ok=True, events_per_s=eps, busy_events_per_s=busy)


def test_scale_ratios() -> None:
    single = RunResult(name="anonstream", ok=True, events_per_s=2000.0)
    single.extra["events_per_cpu_s"] = 50_000.0
    runs = [_scale(1, 100.0, eps=1600.0), _scale(2, 190.0), _scale(4, 300.0)]
    runs[0].cpu_us_per_event = 25.0  # 40,000 events per CPU second
    runs[0].efficiency, runs[1].efficiency, runs[2].efficiency = 1.0, 0.95, 0.75
    got = _scale_ratios({"anonstream": single}, runs)
    assert got == {
        "ratio_scale1_single": 0.8,
        "cpu_ratio_scale1_single": 0.8,
        "scale_efficiency_1": 1.0,
        "scale_efficiency_2": 0.95,
        "scale_efficiency_4": 0.75,
    }
    assert _scale_ratios({}, runs)["ratio_scale1_single"] is None


def test_capped_scale_runs_compare_single_mode_with_the_uncapped_worker() -> None:
    """With --cap, one uncapped worker runs beside the capped ones: single mode (uncapped)
    is compared with it, never with a worker held to a fraction of a core."""
    single = RunResult(name="anonstream", ok=True, events_per_s=2000.0)
    free = _scale(1, 900.0, eps=1800.0)
    capped = [_scale(1, 100.0, eps=400.0), _scale(4, 300.0, eps=900.0)]
    for r in capped:
        r.cap_cores = 0.25
    capped[0].efficiency, capped[1].efficiency = 1.0, 0.75
    got = _scale_ratios({"anonstream": single}, [free, *capped])
    assert got["ratio_scale1_single"] == 0.9
    assert (got["scale_efficiency_1"], got["scale_efficiency_4"]) == (1.0, 0.75)
    assert _scale_ratios({"anonstream": single}, capped)["ratio_scale1_single"] is None
    names = [scale_label(r.figures(), 0.25) for r in (free, *capped)]
    assert names == ["scale x1 uncapped", "scale x1", "scale x4"]
    assert scale_label(free.figures(), None) == "scale x1"


def test_cpu_ratio_is_events_per_cpu_second() -> None:
    a = RunResult(name="anonstream", ok=True, extra={"events_per_cpu_s": 300.0})
    k = RunResult(name="kstreams", ok=True, extra={"events_per_cpu_s": 100.0})
    assert _cpu_ratio({"anonstream": a, "kstreams": k}, "kstreams") == 3.0
    k.ok = False
    assert _cpu_ratio({"anonstream": a, "kstreams": k}, "kstreams") is None


def test_busy_clock_marks_first_commit_and_end() -> None:
    clock = _BusyClock(events=100, pids=[os.getpid()])
    clock.poll(0.5, 0)
    clock.poll(1.0, 10)
    clock.poll(1.5, 60)
    clock.poll(2.0, 100)
    clock.poll(2.5, 100)
    assert (clock.t_first, clock.committed_first, clock.t_end) == (1.0, 10, 2.0)
    assert clock.cpu_first is not None and clock.cpu_first > 0


# -- the JVM peer's build cache -------------------------------------------------------------------


def _project(root: Path) -> Path:
    src = root / "jvm"
    (src / "src/main/java/x").mkdir(parents=True)
    (src / "pom.xml").write_text("<project/>")
    (src / "src/main/java/x/A.java").write_text("class A {}")
    return src


def test_digest_follows_the_sources(tmp_path: Path) -> None:
    src = _project(tmp_path)
    first = source_digest(src)
    assert source_digest(src) == first and len(first) == 12
    (src / "src/main/java/x/A.java").write_text("class A { }")
    assert source_digest(src) != first
    (src / "target").mkdir()  # build output is not a source
    (src / "target/junk.java").write_text("")
    assert source_digest(src) == source_digest(src)


def test_the_shipped_project_is_there() -> None:
    assert (kstreams.JVM_SOURCE / "pom.xml").is_file()
    assert list(kstreams.JVM_SOURCE.glob("src/main/java/**/*.java"))


def test_a_complete_build_is_reused_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _project(tmp_path)
    home = tmp_path / "cache" / f"kstreams-peer-{source_digest(src)}"
    home.mkdir(parents=True)
    (home / kstreams.JAR_NAME).write_bytes(b"jar")
    (home / kstreams.MARKER_NAME).write_text("{}")
    monkeypatch.setattr(kstreams.shutil, "which", lambda name: None)  # no Maven needed
    assert ensure_peer_jar(src, tmp_path / "cache") == home / kstreams.JAR_NAME


def test_no_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _project(tmp_path)
    monkeypatch.setattr(kstreams.shutil, "which", lambda name: None)
    with pytest.raises(PeerBuildError, match="Maven was not found"):
        ensure_peer_jar(src, tmp_path / "cache")
    with pytest.raises(PeerBuildError, match=r"pom\.xml missing"):
        ensure_peer_jar(tmp_path / "nowhere", tmp_path / "cache")


def test_peer_command_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kstreams, "find_java", lambda: "/usr/bin/java")
    cmd = peer_command(
        Path("/x/peer.jar"), bootstrap="127.0.0.1:9092", topic="t", output="o", group="g",
        events=10, partitions=4, threads=2, k=10,
    )  # fmt: skip
    assert cmd[0] == "/usr/bin/java" and "-jar" in cmd
    flags = dict(
        zip(cmd[cmd.index("--bootstrap") :: 2], cmd[cmd.index("--bootstrap") + 1 :: 2], strict=True)
    )
    assert flags["--threads"] == "2" and flags["--guarantee"] == "exactly_once_v2"
    assert not any("secret" in c.lower() for c in cmd)


def test_without_maven_the_kstreams_rows_fail_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    from types import SimpleNamespace

    from rich.console import Console

    monkeypatch.setenv("ANONSTREAM_CACHE_DIR", str(tmp_path))  # no cached build here
    monkeypatch.setattr(kstreams.shutil, "which", lambda name: None)
    ctx = SimpleNamespace(console=Console(file=io.StringIO()))
    runs = bench._kstreams_runs(ctx, None)  # type: ignore[arg-type]
    assert runs and runs[0].name == "kstreams"
    assert all(not r.ok and "Maven was not found" in (r.error or "") for r in runs)


def test_dp_run_and_its_ratio_to_k_mode(tmp_path: Path) -> None:
    from anonstream.core.pipeline import load_pipeline
    from anonstream_load.bench import (
        DEFAULT_PIPELINE,
        DP_BUDGET,
        DP_OUTPUT,
        _cpu_ratio,
        _ratio_dp_k,
    )
    from anonstream_load.harness import write_pipeline

    assert parse("--runs", "anonstream,anonstream-dp").runs == (  # type: ignore[attr-defined]
        "anonstream", "anonstream-dp",
    )  # fmt: skip
    # The dp run's pipeline is the k run's with the privacy mode switched, nothing else.
    k_file = write_pipeline(DEFAULT_PIPELINE, tmp_path / "k", source_topic="s", output_topic="o")
    dp_file = write_pipeline(
        DEFAULT_PIPELINE, tmp_path / "dp", source_topic="s", output_topic="o",
        changes={"dp_budget": DP_BUDGET}, output_changes=DP_OUTPUT,
    )  # fmt: skip
    k_p, dp_p = load_pipeline(k_file), load_pipeline(dp_file)
    assert all(o.privacy == "dp" for o in dp_p.outputs) and dp_p.dp_budget is not None
    same = ("window", "dimensions", "fields", "sums", "means", "histograms", "contribution", "k")
    assert [getattr(dp_p, a) for a in same] == [getattr(k_p, a) for a in same]
    k = RunResult(name="anonstream", ok=True, events_per_s=2000.0)
    dp = RunResult(name="anonstream-dp", ok=True, events_per_s=1900.0)
    assert _ratio_dp_k({"anonstream": k, "anonstream-dp": dp}) == 0.95
    assert _ratio_dp_k({"anonstream": k}) is None
    k.extra["events_per_cpu_s"], dp.extra["events_per_cpu_s"] = 400.0, 300.0
    runs = {"anonstream": k, "anonstream-dp": dp}
    assert _cpu_ratio(runs, "anonstream", mine="anonstream-dp") == 0.75


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `modules` look uninstalled to the benchmark's checks."""
    from anonstream_load import extras

    real = extras._missing_module
    monkeypatch.setattr(extras, "_missing_module", lambda m: m in modules or real(m))


def test_a_peer_without_its_extra_is_skipped_by_name_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No quixstreams: the run is named as skipped with what to install; with nothing left
    to run the command stops at once (no broker is started, no traceback)."""
    from anonstream_load.extras import unavailable_runs

    _without(monkeypatch, "quixstreams")
    assert unavailable_runs(("anonstream", "quixstreams")) == {
        "quixstreams": "quixstreams is not installed (pip install 'anonstream[bench]')"
    }
    started: list[object] = []
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: started.append(a))
    assert bench.main(["--runs", "quixstreams"]) == 2
    assert started == []
    out = capsys.readouterr()
    assert '"skipped": {"quixstreams": "quixstreams is not installed' in out.out
    assert "skipping quixstreams" in out.err and "Traceback" not in out.err


def test_the_other_runs_go_on_without_the_skipped_one_and_the_chart_is_optional(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anonstream_load.extras import chart_unavailable

    _without(monkeypatch, "quixstreams", "matplotlib")
    assert chart_unavailable() == (
        "matplotlib is not installed (pip install 'anonstream[bench]'); no chart"
    )
    seen: list[tuple[str, ...]] = []

    def fake_run(cfg: bench.BenchConfig, console: object) -> dict[str, object]:
        seen.append(cfg.runs)
        return {"ok": True, "runs": {}, "scale": [], "events": 1, "users": 1,
                "partitions": 1, "chart": None, "chart_skipped": chart_unavailable()}  # fmt: skip

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    monkeypatch.setattr(bench, "render_table", lambda summary: "")
    assert bench.main(["--runs", "ceiling,quixstreams"]) == 0
    assert seen == [("ceiling",)]
    out = capsys.readouterr().out
    assert "quixstreams skipped" in out and "chart skipped" in out
