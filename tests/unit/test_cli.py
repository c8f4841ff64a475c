"""The `anonstream` command line (anonstream.cli), without a broker.

Every command is driven through typer's CliRunner (click 8.2+ keeps stdout and stderr apart:
``result.stdout`` / ``result.stderr``); a few checks run the real process with
``python -m anonstream.cli``. Commands that would need Kafka (worker, generate, demo, bench,
kafka up) are checked up to the point where they hand over: their happy paths call a stub
recording what it was given, their user errors must stop before any connection.

Every invocation is checked for the two things a CLI must never do: print a traceback for a
user mistake, and print the master secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from anonstream import cli
from anonstream.broker.local import DATA_DIR_PREFIX, STATE_FILE_NAME
from anonstream.core.keys import MasterSecret, load_secret
from anonstream.core.pipeline import find_pipeline
from anonstream.explain import explain_pipeline
from anonstream.synthetic import (
    TOPIC_WEB,
    EventGenerator,
    Workload,
    bad_messages,
    identifiers_of,
)

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
WEB_YAML = PIPELINES / "web_activity.yaml"
SECRET = "cli-test-master-secret-7d41c09e5ab2f3"  # must never show up in any output
FINGERPRINT = load_secret({"ANONSTREAM_SECRET": SECRET}).fingerprint()
HOUR = 3_600_000

# Leaf commands (as typed after `anonstream`) expected on the app; `dashboard` is optional.
EXPECTED = {
    "validate", "explain", "replay", "worker", "generate", "audit", "bench", "demo",
    "kafka up", "kafka down", "kafka status", "topics plan", "topics create",
}  # fmt: skip
RUNNER = CliRunner()


def leaf_commands() -> list[str]:
    def walk(cmd: Any, prefix: str) -> list[str]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [prefix]
        names: list[str] = []
        for name, sub in subs.items():
            names += walk(sub, f"{prefix} {name}".strip())
        return names

    return sorted(walk(typer.main.get_command(cli.app), ""))


# --------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ANONSTREAM_* leaks in from the developer's shell; no broker state of theirs is
    read; relative paths land in tmp; wide, colourless consoles so messages stay on one
    line whatever the terminal (the CLI's consoles are module globals looked up per call)."""
    for name in list(os.environ):
        if name.startswith("ANONSTREAM_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("ANONSTREAM_STATE_DIR", str(state))
    monkeypatch.setenv("ANONSTREAM_PIPELINES_DIR", str(PIPELINES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "out", Console(width=400, color_system=None))
    monkeypatch.setattr(cli, "err", Console(stderr=True, width=400, color_system=None))


def flat(text: str) -> str:
    return " ".join(text.split())


def check_clean(result: Result, *files: Path) -> None:
    """No traceback, no escaped exception, and the secret in neither output nor files."""
    if isinstance(result.exception, Exception):
        pytest.fail("".join(traceback.format_exception(*result.exc_info)))  # type: ignore[misc]
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    for f in files:
        if f.exists():
            assert SECRET.encode() not in f.read_bytes(), f


def invoke(*args: str, secret: bool = False, env: dict[str, str] | None = None) -> Result:
    full_env = {"ANONSTREAM_SECRET": SECRET} if secret else {}
    full_env.update(env or {})
    result = RUNNER.invoke(cli.app, list(args), env=full_env)
    check_clean(result)
    return result


def run_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANONSTREAM_")}
    base.update({"COLUMNS": "400", "NO_COLOR": "1", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-m", "anonstream.cli", *args],
        env=base, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    return proc


def broken_copy(tmp_path: Path, old: str, new: str, name: str = "web_activity.yaml") -> Path:
    text = WEB_YAML.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    d = tmp_path / "broken"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text.replace(old, new), encoding="utf-8")
    return d


# --------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------


def test_every_expected_command_is_registered() -> None:
    commands = set(leaf_commands())
    assert commands >= EXPECTED
    assert commands <= EXPECTED | {"dashboard"}, "a new command: add it to these tests"


def test_app_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("validate", "explain", "replay", "worker", "audit", "kafka"):
        assert name in result.stdout


def test_no_arguments_prints_help_not_a_traceback() -> None:
    result = invoke()
    assert "Usage" in result.output
    assert "validate" in result.output


@pytest.mark.parametrize("command", [c for c in leaf_commands() if c != "bench"] + ["kafka"])
def test_command_help(command: str) -> None:
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_bench_help_is_the_benchmarks_argparse_help() -> None:
    result = invoke("bench", "--help")
    assert result.exit_code == 0, result.output
    assert "usage: anonstream bench" in result.stdout
    for option in ("--events", "--users", "--partitions", "--runs", "--soak"):
        assert option in result.stdout


def test_generate_help_lists_its_options() -> None:
    result = invoke("generate", "--help")
    assert result.exit_code == 0
    for option in ("--bootstrap-servers", "--count", "--kind", "--rate", "--users", "--seed"):
        assert option in result.stdout


def test_unknown_option_is_a_usage_error() -> None:
    result = invoke("validate", "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------


def test_validate_ok() -> None:
    result = invoke("validate", secret=True)
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert "pipeline web_activity v1, k=10" in out
    assert "pipeline service_usage v1, k=10" in out
    assert f"secret from env ANONSTREAM_SECRET (fingerprint {FINGERPRINT})" in out


def test_validate_one_pipeline_from_the_flag() -> None:
    result = invoke(
        "validate", "-p", "web_activity", "--pipelines-dir", str(PIPELINES), secret=True
    )
    assert result.exit_code == 0, result.output
    assert "web_activity" in result.stdout
    assert "service_usage" not in result.stdout


def test_validate_without_secret_check() -> None:
    result = invoke("validate", "--no-check-secret")
    assert result.exit_code == 0, result.output
    assert "fingerprint" not in result.stdout


def test_validate_missing_secret() -> None:
    result = invoke("validate")
    assert result.exit_code == 2
    err = flat(result.stderr)
    assert "no secret" in err
    assert "ANONSTREAM_SECRET" in err
    assert "ANONSTREAM_SECRET_FILE" in err


def test_validate_short_secret_is_refused_without_printing_it() -> None:
    short = "tiny-secret-9q"
    result = invoke("validate", env={"ANONSTREAM_SECRET": short})
    assert result.exit_code == 2
    assert "shorter than 16 bytes" in flat(result.stderr)
    assert short not in result.output


def test_validate_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n", encoding="utf-8")
    result = invoke("validate", env={"ANONSTREAM_SECRET_FILE": str(f)})
    assert result.exit_code == 0, result.output
    assert f"secret from file {f} (fingerprint {FINGERPRINT})" in flat(result.stdout)


def test_validate_secret_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    result = invoke("validate", env={"ANONSTREAM_SECRET_FILE": str(missing)})
    assert result.exit_code == 2
    err = flat(result.stderr)
    assert f"cannot read ANONSTREAM_SECRET_FILE={missing}" in err
    assert "No such file or directory" in err


def test_validate_secret_file_is_a_directory(tmp_path: Path) -> None:
    result = invoke("validate", env={"ANONSTREAM_SECRET_FILE": str(tmp_path)})
    assert result.exit_code == 2
    assert "Is a directory" in result.stderr


def test_validate_secret_and_secret_file_both_set(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(SECRET, encoding="utf-8")
    result = invoke("validate", secret=True, env={"ANONSTREAM_SECRET_FILE": str(f)})
    assert result.exit_code == 2
    assert "set only one of ANONSTREAM_SECRET and ANONSTREAM_SECRET_FILE" in flat(result.stderr)


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        (
            "  ip: {generalize: ip_prefix, ipv4_bits: 24, ipv6_bits: 48}",
            "  ip: keep",
            "fields.ip",
            "action 'keep' is not allowed for a quasi field",
        ),
        ("  campaign_id: keep\n", "", "fields.campaign_id", "missing: every field"),
        ("\nk: 10\n", "\nk: 1\n", "k", "expected an integer >= 2, got 1"),
        (
            "{size: 1h, step: 1h,",
            "{size: 7m, step: 7m,",
            "window.size",
            "must divide the pseudonym",
        ),
        (
            "  customer_id: drop\n",
            "  customer_id: drop\n  shoe_size: keep\n",
            "fields.shoe_size",
            "not a field",
        ),
        ("dimensions: [type, url, user_agent]", "dimensions: [type, url", "", "not valid YAML"),
    ],
)
def test_validate_broken_pipeline(
    tmp_path: Path, old: str, new: str, field: str, reason: str
) -> None:
    d = broken_copy(tmp_path, old, new)
    result = invoke("validate", "--pipelines-dir", str(d), secret=True)
    assert result.exit_code == 2
    err = flat(result.stderr)
    assert f"{d / 'web_activity.yaml'}: {field}" in err
    assert reason in err
    assert "ok" not in result.stdout  # nothing half-validated is reported as fine


@pytest.mark.parametrize(
    ("old", "new", "shown"),
    [
        # Text from the file that looks like console markup must be shown as written, and
        # must not crash the error printer (MarkupError traceback before the fix in cli.fail).
        ("contract: web_activity", 'contract: "[red]"', "got '[red]'"),
        (
            "  customer_id: drop\n",
            '  customer_id: drop\n  "[/x]": drop\n',
            "fields.[/x]: not a field",
        ),
    ],
)
def test_validate_error_text_is_not_console_markup(
    tmp_path: Path, old: str, new: str, shown: str
) -> None:
    d = broken_copy(tmp_path, old, new)
    result = invoke("validate", "--pipelines-dir", str(d), secret=True)
    assert result.exit_code == 2
    assert shown in flat(result.stderr)


def test_validate_empty_pipelines_dir(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("validate", "--pipelines-dir", str(empty), secret=True)
    assert result.exit_code == 2
    assert f"no pipeline files (*.yaml) in {empty}" in flat(result.stderr)


def test_validate_missing_pipelines_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = invoke("validate", "--pipelines-dir", str(missing), secret=True)
    assert result.exit_code == 2
    assert str(missing) in flat(result.stderr)


def test_validate_unknown_pipeline_name() -> None:
    result = invoke("validate", "-p", "web_activty", secret=True)
    assert result.exit_code == 2
    assert "no such pipeline; known: service_usage, web_activity" in flat(result.stderr)


def test_validate_in_a_real_process() -> None:
    proc = run_process("validate", env={"ANONSTREAM_SECRET": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert FINGERPRINT in proc.stdout
    proc = run_process("validate")
    assert proc.returncode == 2
    assert "ANONSTREAM_SECRET" in proc.stderr


# --------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web_activity", "service_usage"])
def test_explain_prints_the_report_verbatim(name: str) -> None:
    """Every contract field with its sensitivity class and action, and the k. The report
    has `[identifier]`-like columns: they must not be eaten as console markup."""
    result = invoke("explain", "-p", name)
    assert result.exit_code == 0, result.output
    p = find_pipeline(name, PIPELINES)
    out = flat(result.stdout)
    assert out == flat(explain_pipeline(p))
    for spec in p.contract.fields:
        action = p.fields[spec.name].action
        assert f"{spec.name} [{spec.sensitivity.value}" in out, spec.name
        assert f"] {action} " in out
    assert f"k = {p.k} distinct people" in out


def test_explain_unknown_pipeline_lists_the_known_ones() -> None:
    result = invoke("explain", "-p", "nope")
    assert result.exit_code == 2
    err = flat(result.stderr)
    assert "no such pipeline" in err
    assert "known: service_usage, web_activity" in err


def test_explain_yaml_path(tmp_path: Path) -> None:
    d = broken_copy(tmp_path, "\nk: 10\n", "\nk: 25\n", name="custom.yaml")
    path = d / "custom.yaml"
    result = invoke("explain", "-p", str(path), "--pipelines-dir", str(tmp_path / "elsewhere"))
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert f"Pipeline web_activity v1 ({path})" in out
    assert "k = 25 distinct people" in out


def test_explain_missing_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = invoke("explain", "-p", str(path))
    assert result.exit_code == 2
    assert f"{path}: (file): No such file or directory" in flat(result.stderr)


def test_explain_requires_a_pipeline() -> None:
    result = invoke("explain")
    assert result.exit_code == 2
    assert "--pipeline" in result.stderr


# --------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------

N_EVENTS = 3000
NOT_JSON = b"this is not json"


class ReplayInput:
    def __init__(self, path: Path) -> None:
        now = int(time.time() * 1000)
        start = (now // HOUR - 3) * HOUR  # 3h ago: not future, one window of ~50 min
        gen = EventGenerator(
            Workload(users=60, pages=5, seed=3, start_ms=start, events_per_second_of_event_time=1)
        )
        self.events = list(gen.web_events(N_EVENTS))
        bad = [("not_json", NOT_JSON)] * 3 + bad_messages(TOPIC_WEB)
        self.bad_reasons = Counter(reason for reason, _ in bad)
        self.bad_lines = [payload for _, payload in bad]
        step = N_EVENTS // len(bad)
        with open(path, "wb") as f:
            for i, ev in enumerate(self.events):
                f.write(orjson.dumps(ev) + b"\n")
                if i % step == step // 2 and bad:
                    f.write(bad.pop(0)[1] + b"\n")
            for _, payload in bad:
                f.write(payload + b"\n")
        self.path = path
        self.lines = N_EVENTS + len(self.bad_lines)
        ids: set[str] = set()
        for ev in self.events:
            ids |= identifiers_of(ev)
        self.identifiers = {i.lower() for i in ids if len(i) >= 4}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> ReplayInput:
    return ReplayInput(tmp_path_factory.mktemp("replay") / "raw.jsonl")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, raw: ReplayInput) -> dict[str, Any]:
    """One replay of `raw` through web_activity, shared by the replay and audit tests."""
    d = tmp_path_factory.mktemp("replayed")
    out, rejects = d / "out.jsonl", d / "rejects.jsonl"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(cli, "err", Console(stderr=True, width=400, color_system=None))
        result = RUNNER.invoke(
            cli.app,
            ["replay", "-p", "web_activity", "-i", str(raw.path), "-o", str(out),
             "--rejects", str(rejects), "--pipelines-dir", str(PIPELINES)],
            env={"ANONSTREAM_SECRET": SECRET, "ANONSTREAM_SECRET_FILE": None},
        )  # fmt: skip
    finally:
        mp.undo()
    return {"result": result, "out": out, "rejects": rejects}


def test_replay_happy_path(raw: ReplayInput, replayed: dict[str, Any]) -> None:
    result, out = replayed["result"], replayed["out"]
    check_clean(result, out, replayed["rejects"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    aggregates = [r for r in records if r["kind"] == "aggregate"]
    assert aggregates, "expected some cells to reach k"
    assert any(r["kind"] == "window_summary" for r in records)
    for r in aggregates:
        assert r["pipeline"] == "web_activity"
        assert r["k"] >= 10
        assert r["metrics"]["users"] >= r["k"], r
    text = out.read_text(encoding="utf-8").lower()
    leaked = sorted(i for i in raw.identifiers if i in text)
    assert not leaked, leaked[:10]
    # The summary goes to stderr, stdout stays clean for piping.
    err = flat(result.stderr)
    assert f"{raw.lines:,} lines, {len(aggregates):,} aggregates" in err
    assert f"{sum(raw.bad_reasons.values()):,} rejected" in err
    assert str(out) in err
    assert result.stdout.strip() == ""


def test_replay_rejects_file_gets_the_bad_lines(raw: ReplayInput, replayed: dict[str, Any]) -> None:
    rejects = [json.loads(x) for x in replayed["rejects"].read_text(encoding="utf-8").splitlines()]
    assert Counter(r["reason"] for r in rejects) == raw.bad_reasons
    utf8 = {b.decode("utf-8", "replace") for b in raw.bad_lines}
    assert {r["value"] for r in rejects} == utf8
    assert all(isinstance(r["line"], int) and r["line"] >= 1 for r in rejects)


def test_replay_survives_year_one_and_judges_future_times_by_its_clock(tmp_path: Path) -> None:
    """Year-1 times used to crash window formatting (exit 1, empty output); a time ahead
    of --now (or, by default, of the file's modification time) is future_timestamp."""
    events = list(EventGenerator(Workload(users=300, seed=4)).web_events(3000))
    ahead = {**events[0], "event_id": "ahead", "ts": "2026-11-30T07:00:00Z"}
    lines = [orjson.dumps(ev) for ev in events]
    lines[1000:1000] = [
        orjson.dumps({**events[1], "event_id": "y1", "ts": "0001-01-01T00:00:00+01:00"}),
        orjson.dumps({**events[2], "event_id": "y0", "ts": "0001-01-01T00:00:00Z"}),
        orjson.dumps(ahead),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reasons = {}
    for now in ("2026-11-30T06:00:00Z", None):
        out, rej = tmp_path / f"out-{now}.jsonl", tmp_path / f"rej-{now}.jsonl"
        args = ["replay", "-p", "web_activity", "-i", str(path), "-o", str(out)]
        args += ["--rejects", str(rej), *(["--now", now] if now else [])]
        result = invoke(*args, secret=True)
        assert result.exit_code == 0, result.output
        records = [json.loads(x) for x in out.read_text().splitlines()]
        assert any(r["kind"] == "aggregate" for r in records)
        assert all(r["window_start"].startswith("2026-11-30T") for r in records)
        reasons[now] = Counter(json.loads(x)["reason"] for x in rej.read_text().splitlines())
    assert reasons["2026-11-30T06:00:00Z"] == {"bad_timestamp": 2, "future_timestamp": 1}
    assert reasons[None] == {"bad_timestamp": 2}  # the file was written after 07:00
    bad = invoke("replay", "-p", "web_activity", "-i", str(path), "-o", str(tmp_path / "x"),
                 "--now", "soon", secret=True)  # fmt: skip
    assert bad.exit_code == 2 and "--now" in flat(bad.stderr)


def test_replay_missing_input(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke(
        "replay", "-p", "web_activity", "-i", "missing.jsonl", "-o", str(out), secret=True
    )
    assert result.exit_code == 2
    assert "input file not found: missing.jsonl" in flat(result.stderr)
    assert not out.exists()


def test_replay_unknown_pipeline(raw: ReplayInput, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("replay", "-p", "nope", "-i", str(raw.path), "-o", str(out), secret=True)
    assert result.exit_code == 2
    assert "known: service_usage, web_activity" in flat(result.stderr)
    assert not out.exists()


def test_replay_without_secret_refuses(raw: ReplayInput, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("replay", "-p", "web_activity", "-i", str(raw.path), "-o", str(out))
    assert result.exit_code == 2
    assert "ANONSTREAM_SECRET" in flat(result.stderr)
    assert not out.exists()


def test_replay_demo_uses_a_throwaway_key_and_says_so(raw: ReplayInput, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("replay", "-p", "web_activity", "-i", str(raw.path), "-o", str(out), "--demo")
    assert result.exit_code == 0, result.output
    err = flat(result.stderr)
    assert "WARNING: demo mode: using a random throwaway key" in err
    assert "Never use demo mode for real data" in err
    assert out.stat().st_size > 0


def test_replay_demo_with_a_secret_uses_the_secret(raw: ReplayInput, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ("replay", "-p", "web_activity", "-i", str(raw.path), "-o", str(out), "--demo")
    result = invoke(*args, secret=True)
    assert result.exit_code == 0, result.output
    assert "throwaway" not in result.stderr
    check_clean(result, out)


def test_replay_output_dir_missing_is_a_clean_error(raw: ReplayInput, tmp_path: Path) -> None:
    """BUG (unfixed): `open(output)` in replay_file raises FileNotFoundError -> traceback."""
    out = tmp_path / "no-such-dir" / "out.jsonl"
    result = RUNNER.invoke(
        cli.app,
        ["replay", "-p", "web_activity", "-i", str(raw.path), "-o", str(out)],
        env={"ANONSTREAM_SECRET": SECRET},
    )
    check_clean(result)
    assert result.exit_code == 2
    assert str(out) in flat(result.stderr)


def test_replay_output_onto_its_input_is_refused(raw: ReplayInput, tmp_path: Path) -> None:
    """BUG (unfixed): -o equal to -i truncates the raw input before reading it: the run
    'succeeds' with 0 lines and the input is gone."""
    same = tmp_path / "raw.jsonl"
    same.write_bytes(raw.path.read_bytes())
    size = same.stat().st_size
    result = RUNNER.invoke(
        cli.app,
        ["replay", "-p", "web_activity", "-i", str(same), "-o", str(same)],
        env={"ANONSTREAM_SECRET": SECRET},
    )
    check_clean(result)
    assert same.stat().st_size == size, "the input file was overwritten"
    assert result.exit_code == 2


# --------------------------------------------------------------------------------------
# audit
# --------------------------------------------------------------------------------------


def leaking_record(users: int = 3) -> dict[str, Any]:
    return {
        "dims": {"type": "page_view", "url": "www.example.com/", "user_agent": "Chrome 129"},
        "k": 10,
        "kind": "aggregate",
        "metrics": {"events": 5, "users": users},
        "noise": None,
        "output": "default",
        "pipeline": "web_activity",
        "pipeline_version": 1,
        "release_id": "9108ce5594ed41dad7e34f32610168c4",
        "rollup_level": 0,
        "schema_version": 1,
        "window_start": "2026-11-30T09:00:00Z",
        "window_end": "2026-11-30T10:00:00Z",
    }


def test_audit_of_replay_output_is_clean(replayed: dict[str, Any]) -> None:
    assert replayed["result"].exit_code == 0
    result = invoke("audit", "--input", str(replayed["out"]))
    assert result.exit_code == 0, result.output
    assert "OK: 0 errors" in result.stdout


def test_audit_json_of_replay_output(replayed: dict[str, Any]) -> None:
    result = invoke("audit", "--input", str(replayed["out"]), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["counts"]["aggregates"] > 0


def test_audit_finds_a_cell_under_k(tmp_path: Path) -> None:
    leak = tmp_path / "leak.jsonl"
    leak.write_bytes(orjson.dumps(leaking_record(users=3)) + b"\n")
    result = invoke("audit", "--input", str(leak))
    assert result.exit_code == 1, result.output
    out = flat(result.stdout)
    assert "FAIL: 1 errors" in out
    assert "[k] 1 errors" in out
    assert "users 3 < k 10" in out


def test_audit_stricter_k_than_the_records(replayed: dict[str, Any]) -> None:
    result = invoke("audit", "--input", str(replayed["out"]), "--k", "1000", "--json")
    assert result.exit_code == 1
    assert {f["rule"] for f in json.loads(result.stdout)["findings"]} >= {"k"}


@pytest.mark.parametrize(
    "args",
    [(), ("--input", "x.jsonl", "--topic", "anon.aggregates.web_activity")],
    ids=["neither", "both"],
)
def test_audit_needs_exactly_one_source(args: tuple[str, ...]) -> None:
    result = invoke("audit", *args)
    assert result.exit_code == 2
    assert "give exactly one of --input FILE or --topic T" in result.stderr


def test_audit_bad_k(tmp_path: Path) -> None:
    result = invoke("audit", "--input", str(tmp_path / "x.jsonl"), "--k", "0")
    assert result.exit_code == 2
    assert "--k must be a positive integer" in result.stderr


def test_audit_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = invoke("audit", "--input", str(missing))
    assert result.exit_code == 2
    assert "cannot read the input" in result.stderr
    assert str(missing) in result.stderr


# --------------------------------------------------------------------------------------
# worker (stubbed run_worker: nothing here may reach a broker)
# --------------------------------------------------------------------------------------


@pytest.fixture
def worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import anonstream.runtime.run as run

    calls: list[dict[str, Any]] = []

    def fake_run_worker(settings: Any, pipelines: Any, secret: Any, **kw: Any) -> int:
        calls.append({"settings": settings, "pipelines": pipelines, "secret": secret, **kw})
        return 0

    monkeypatch.setattr(run, "run_worker", fake_run_worker)
    return calls


def test_worker_hands_settings_pipelines_and_secret_over(
    worker_calls: list[dict[str, Any]],
) -> None:
    result = invoke(
        "worker", "-p", "web_activity", "-b", "broker.invalid:9092", "--group-id", "g1",
        "--stop-at-end", secret=True,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (call,) = worker_calls
    assert [p.name for p in call["pipelines"]] == ["web_activity"]
    assert call["settings"].bootstrap_servers == "broker.invalid:9092"
    assert call["settings"].group_id == "g1"
    assert isinstance(call["secret"], MasterSecret)
    assert call["secret"].fingerprint() == FINGERPRINT
    assert call["stop_at_end"] is True


def test_worker_runs_every_pipeline_by_default(worker_calls: list[dict[str, Any]]) -> None:
    result = invoke("worker", secret=True)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in worker_calls[0]["pipelines"]) == ["service_usage", "web_activity"]


def test_worker_without_secret_fails_before_connecting(worker_calls: list[dict[str, Any]]) -> None:
    result = invoke("worker", "-b", "127.0.0.1:9")
    assert result.exit_code == 2
    assert "no secret: set ANONSTREAM_SECRET" in flat(result.stderr)
    assert worker_calls == []


def test_worker_demo_without_secret_warns(worker_calls: list[dict[str, Any]]) -> None:
    result = invoke("worker", "--demo")
    assert result.exit_code == 0, result.output
    assert "throwaway key" in flat(result.stderr)
    assert worker_calls[0]["secret"].throwaway is True


def test_worker_broken_pipeline(tmp_path: Path, worker_calls: list[dict[str, Any]]) -> None:
    d = broken_copy(tmp_path, "\nk: 10\n", "\nk: 0\n")
    result = invoke("worker", "--pipelines-dir", str(d), secret=True)
    assert result.exit_code == 2
    assert f"{d / 'web_activity.yaml'}: k: expected an integer >= 2" in flat(result.stderr)
    assert worker_calls == []


def test_worker_unknown_pipeline(worker_calls: list[dict[str, Any]]) -> None:
    result = invoke("worker", "-p", "nope", secret=True)
    assert result.exit_code == 2
    assert "known: service_usage, web_activity" in flat(result.stderr)
    assert worker_calls == []


def test_worker_bad_setting_from_the_environment(worker_calls: list[dict[str, Any]]) -> None:
    """BUG (unfixed): Settings() raises pydantic.ValidationError for a bad ANONSTREAM_* value
    and the CLI prints its traceback instead of a one-line error."""
    result = RUNNER.invoke(
        cli.app, ["worker"], env={"ANONSTREAM_SECRET": SECRET, "ANONSTREAM_BATCH_MAX": "lots"}
    )
    check_clean(result)
    assert result.exit_code == 2
    assert "batch_max" in result.stderr.lower()
    assert worker_calls == []


def test_worker_without_secret_in_a_real_process() -> None:
    """The real entry point: fails at once with the message, never tries the broker."""
    proc = run_process("worker", "-b", "127.0.0.1:9", timeout=30)
    assert proc.returncode == 2
    assert "ANONSTREAM_SECRET" in proc.stderr


# --------------------------------------------------------------------------------------
# generate, demo, bench (stubbed: they hand their arguments to the load tools)
# --------------------------------------------------------------------------------------


def test_generate_passes_its_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import anonstream.synthetic.produce as produce

    seen: list[list[str]] = []
    monkeypatch.setattr(produce, "main", lambda argv: seen.append(list(argv)) or 0)
    result = invoke("generate", "-b", "h:1", "--count", "50", "--kind", "web", "--users", "9")
    assert result.exit_code == 0, result.output
    (argv,) = seen
    assert argv[argv.index("--bootstrap") + 1] == "h:1"
    assert argv[argv.index("--count") + 1] == "50"
    assert argv[argv.index("--kind") + 1] == "web"
    assert argv[argv.index("--users") + 1] == "9"
    # no --start: now, so that a second run is not all late (it used to be a fixed instant)
    before = time.time() * 1000
    invoke("generate", "--count", "5")
    start = int(seen[-1][seen[-1].index("--start") + 1])
    assert before - 5_000 <= start <= time.time() * 1000
    invoke("generate", "--count", "5", "--start", "2026-11-30T00:00Z")
    assert seen[-1][seen[-1].index("--start") + 1] == "2026-11-30T00:00Z"


def test_generate_bad_count_is_a_usage_error() -> None:
    result = invoke("generate", "--count", "many")
    assert result.exit_code == 2
    assert "--count" in result.stderr


def test_demo_passes_its_options_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import anonstream.demo as demo

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.append(kw) or 0)
    result = invoke("demo", "--events", "100", "--users", "20", "--pipelines-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert seen == [{"events": 100, "users": 20, "pipelines_dir": tmp_path}]


def test_bench_passes_its_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import anonstream_load.bench as bench

    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(list(argv)) or 3)
    result = invoke("bench", "--events", "1000", "--runs", "ceiling", "--soak")
    assert result.exit_code == 3
    assert seen == [["--events", "1000", "--runs", "ceiling", "--soak"]]


def test_bench_bad_option_is_argparse_usage_error() -> None:
    result = invoke("bench", "--events", "lots")
    assert result.exit_code == 2
    assert "usage: anonstream bench" in result.stderr


# --------------------------------------------------------------------------------------
# kafka up / down / status (state dir is an empty tmp dir: never the developer's broker)
# --------------------------------------------------------------------------------------


def write_state(tmp_path: Path, record: dict[str, Any] | str) -> Path:
    f = Path(os.environ["ANONSTREAM_STATE_DIR"]) / STATE_FILE_NAME
    f.write_text(record if isinstance(record, str) else json.dumps(record), encoding="utf-8")
    return f


def test_kafka_status_no_broker() -> None:
    result = invoke("kafka", "status")
    assert result.exit_code == 1
    assert "no broker started by `anonstream kafka up` is running" in result.stdout


def test_kafka_down_nothing_running() -> None:
    """The code treats 'nothing recorded' as success: exit 0, 'Kafka is down.'"""
    result = invoke("kafka", "down")
    assert result.exit_code == 0, result.output
    assert "Kafka is down." in result.stdout


def test_kafka_stale_record(tmp_path: Path) -> None:
    """A record whose pid is not our broker: status shows it as not running (exit 0, see
    the report), down clears the record and its data dir, and signals nobody."""
    data_dir = tmp_path / f"{DATA_DIR_PREFIX}stale"
    data_dir.mkdir()
    rec = {"pid": os.getpid(), "bootstrap": "127.0.0.1:1", "data_dir": str(data_dir)}
    state = write_state(tmp_path, rec)
    result = invoke("kafka", "status")
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.stdout
    assert "state not running" in flat(result.stdout)
    result = invoke("kafka", "status", "--json")
    assert json.loads(result.stdout)["running"] is False
    result = invoke("kafka", "down")
    assert result.exit_code == 0, result.output
    assert not state.exists()
    assert not data_dir.exists()


@pytest.mark.parametrize("command", ["status", "down"])
def test_kafka_corrupt_state_file(tmp_path: Path, command: str) -> None:
    """A broken state file: one-line error, exit 1 (status printed a traceback before the
    fix in cli.kafka_status_cmd)."""
    state = write_state(tmp_path, "not json")
    result = invoke("kafka", command)
    assert result.exit_code == 1
    assert f"cannot read the broker state file {state}" in flat(result.stderr)


def test_kafka_up_failure_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import anonstream.broker.local as local

    def boom(*a: Any, **kw: Any) -> None:
        raise local.BrokerError("java not found: install a JRE 17+")

    monkeypatch.setattr(local, "kafka_up", boom)
    result = invoke("kafka", "up")
    assert result.exit_code == 1
    assert "error: java not found: install a JRE 17+" in flat(result.stderr)


def test_kafka_up_prints_the_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    import anonstream.broker.local as local

    class Started:
        bootstrap_servers = "127.0.0.1:39092"

    monkeypatch.setattr(local, "kafka_up", lambda *a, **kw: Started())
    result = invoke("kafka", "up", "--no-topics")
    assert result.exit_code == 0, result.output
    assert "export ANONSTREAM_BOOTSTRAP_SERVERS=127.0.0.1:39092" in result.stdout
    assert "port 9092 was taken: use -b 127.0.0.1:39092" in flat(result.stdout)


@pytest.mark.parametrize("free", [True, False])
def test_kafka_up_prefers_9092_and_creates_the_input_topics(
    monkeypatch: pytest.MonkeyPatch, free: bool
) -> None:
    """The README's examples use 9092: `kafka up` takes it when it is free; and it makes
    the pipelines' input topics, so that a worker started next does not wait for them."""
    import anonstream.broker.local as local
    import anonstream.broker.topics as topics

    asked: list[int | None] = []
    created: list[dict[str, int]] = []

    class Started:
        def __init__(self, port: int | None) -> None:
            self.bootstrap_servers = f"127.0.0.1:{port or 40001}"

    monkeypatch.setattr(local, "port_is_free", lambda host, port: free)
    monkeypatch.setattr(local, "kafka_up", lambda port=None: asked.append(port) or Started(port))
    monkeypatch.setattr(topics, "create_topics", lambda b, t, *a, **kw: created.append(t))
    result = invoke("kafka", "up", "--partitions", "3")
    assert result.exit_code == 0, result.output
    assert asked == [9092 if free else None]
    assert ("9092 was taken" in result.stdout) is not free
    assert created == [{"raw.usage": 3, "raw.web-activity": 3}]
    assert "input topics: raw.usage, raw.web-activity (3 partitions each)" in result.stdout


def test_kafka_status_is_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anonstream.broker.local as local

    data_dir = tmp_path / f"{DATA_DIR_PREFIX}live"
    rec = {"pid": 4242, "bootstrap": "127.0.0.1:9092", "data_dir": str(data_dir),
           "kafka_version": "4.1.1", "started_at": "2026-12-01T00:00:00+00:00"}  # fmt: skip
    write_state(tmp_path, rec)
    monkeypatch.setattr(local, "is_our_broker", lambda pid, d: True)
    result = invoke("kafka", "status")
    assert result.exit_code == 0, result.output
    lines = [flat(line) for line in result.stdout.splitlines()]
    assert "state running" in lines
    assert "bootstrap 127.0.0.1:9092" in lines
    assert "pid 4242" in lines
    assert "{" not in result.stdout  # not a Python dict any more
    doc = json.loads(invoke("kafka", "status", "--json").stdout)
    assert doc["bootstrap"] == "127.0.0.1:9092" and doc["running"] is True


# --------------------------------------------------------------------------------------
# topics plan / create
# --------------------------------------------------------------------------------------


def plan(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke("topics", "plan", "--json", *args, env=env)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_topics_plan_lists_every_topic_a_deployment_needs() -> None:
    doc = plan("--input-partitions", "12", "--replication-factor", "3")
    topics = {t["name"]: t for t in doc["topics"]}
    assert doc["replication_factor"] == 3
    assert {n: t["role"] for n, t in topics.items()} == {
        "raw.web-activity": "input", "raw.usage": "input",
        "anon.aggregates.web_activity": "output", "anon.aggregates.service_usage": "output",
        "anon.deadletter": "dead-letter",
    }  # fmt: skip
    assert topics["raw.usage"]["partitions"] == 12
    assert topics["anon.deadletter"]["configs"]["retention.ms"] == str(3 * 24 * HOUR)
    scale = plan(env={"ANONSTREAM_SCALE_OUT": "true", "ANONSTREAM_GROUP_ID": "g"})
    partials = [t for t in scale["topics"] if t["role"] == "partials"]
    assert {t["name"] for t in partials} == {
        "anonstream.partials.g.web_activity", "anonstream.partials.g.service_usage",
    }  # fmt: skip
    assert all(t["partitions"] == 6 and t["configs"]["retention.ms"] for t in partials)


def test_topics_plan_acls_least_privilege() -> None:
    """A reader (partner or dashboard) may read the aggregates and nothing else: never a
    raw topic, the dead-letter topic or the partials (the attacker's first try)."""
    doc = plan(
        "--worker-principal", "User:w", "--reader-principal", "User:p",
        "--dashboard-principal", "User:d",
        env={"ANONSTREAM_SCALE_OUT": "true", "ANONSTREAM_GROUP_ID": "g"},
    )  # fmt: skip
    roles = {t["name"]: t["role"] for t in doc["topics"]}
    for acl in doc["acls"]:
        assert acl["principal"] in {"User:w", "User:p", "User:d"}
        assert "All" not in acl["operations"]
        assert "Create" not in acl["operations"]  # the worker's host creates no topic
        if acl["principal"] != "User:w":
            assert acl["resource_type"] == "topic", acl
            assert roles[acl["name"]] == "output", acl
            assert set(acl["operations"]) == {"Read", "Describe"}
    worker = {(a["resource_type"], a["name"], a["pattern_type"]): set(a["operations"])
              for a in doc["acls"] if a["principal"] == "User:w"}  # fmt: skip
    assert worker[("transactional-id", "anonstream-g-", "prefixed")] == {"Write", "Describe"}
    assert worker[("group", "g", "literal")] == {"Read"}
    assert ("group", "g-host", "literal") not in worker  # the host joins no group
    assert worker[("topic", "raw.usage", "literal")] == {"Read", "Describe"}
    assert "Read" not in worker[("topic", "anon.deadletter", "literal")]
    partials = worker[("topic", "anonstream.partials.g.web_activity", "literal")]
    assert partials == {"Read", "Write", "Describe"}
    commands = doc["commands"]
    assert all(c.startswith("kafka-acls.sh --bootstrap-server") for c in commands)
    assert any("--resource-pattern-type prefixed --transactional-id anonstream-g-" in c
               for c in commands)  # fmt: skip


def test_topics_plan_text_names_topics_and_commands() -> None:
    result = invoke("topics", "plan", "-p", "web_activity")
    assert result.exit_code == 0, result.output
    assert "raw.web-activity partitions=6 input" in flat(result.stdout)
    assert "raw.usage" not in result.stdout
    assert "kafka-acls.sh --bootstrap-server 127.0.0.1:9092" in result.stdout


def test_topics_create_uses_the_security_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same SASL/TLS settings as the worker, the password from a file, the replication
    factor asked for; only the input topics with --only-inputs."""
    import anonstream.broker.topics as topics

    seen: list[tuple[dict[str, int], dict[str, Any]]] = []

    def fake(bootstrap: str, t: dict[str, int], configs: Any = None, **kw: Any) -> list[str]:
        seen.append((t, kw))
        return list(t)[:1]

    monkeypatch.setattr(topics, "create_topics", fake)
    pw = tmp_path / "pw"
    pw.write_text("file-password-123\n")
    env = {
        "ANONSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ANONSTREAM_SASL_USERNAME": "u",
        "ANONSTREAM_SASL_MECHANISM": "SCRAM-SHA-512", "ANONSTREAM_SASL_PASSWORD_FILE": str(pw),
    }  # fmt: skip
    result = invoke("topics", "create", "--only-inputs", "--replication-factor", "2", env=env)
    assert result.exit_code == 0, result.output
    assert "file-password-123" not in result.output
    ((t, kw),) = seen
    assert t == {"raw.usage": 6, "raw.web-activity": 6}
    assert kw["replication_factor"] == 2
    assert kw["client_options"]["sasl_plain_password"] == "file-password-123"
    assert kw["client_options"]["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "created  raw.usage" in result.stdout and "exists   raw.web-activity" in result.stdout


def test_password_variable_and_file_together_is_a_clean_error(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("file-password-123")
    env = {"ANONSTREAM_SASL_PASSWORD": "var-password-456", "ANONSTREAM_SASL_PASSWORD_FILE": str(pw)}
    result = invoke("topics", "create", env=env)
    assert result.exit_code == 2
    assert "ANONSTREAM_SASL_PASSWORD_FILE, not both" in flat(result.stderr)
    assert "password-123" not in result.output and "password-456" not in result.output
    missing = invoke(
        "topics", "create", env={"ANONSTREAM_SASL_PASSWORD_FILE": str(tmp_path / "no")}
    )
    assert missing.exit_code == 2
    assert "cannot read the SASL password file" in flat(missing.stderr)


def test_replay_of_a_dp_pipeline_without_a_ledger_warns(raw: ReplayInput, tmp_path: Path) -> None:
    """Each replay without --ledger spends a whole fresh budget: say so (red team)."""
    dp = ROOT / "pipelines" / "examples" / "web_activity_dp.yaml"
    out = tmp_path / "out.jsonl"
    args = ["replay", "-p", str(dp), "-i", str(raw.path), "-o", str(out), "--demo"]
    proc = run_process(*args, env={"ANONSTREAM_PIPELINES_DIR": str(PIPELINES)})
    assert proc.returncode == 0, proc.stderr
    assert "without --ledger" in proc.stderr
    proc = run_process(*args, "--ledger", str(tmp_path / "l.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "without --ledger" not in proc.stderr
