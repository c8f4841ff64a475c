"""The command examples of README.md and docs/*.md work: each `anonstream ...` example parses
with the CLI's own parser (command and options exist, values have the right type), the ones
that need no broker (validate, explain, replay, audit of a file) run for real in a scratch
directory, each `make X` names a Makefile target, and each `python -m M` names a module.

Examples come from fenced code blocks and from inline code spans, so a renamed command or
option fails here rather than in a reader's terminal."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from anonstream import cli
from anonstream.synthetic import EventGenerator, Workload
from tests.unit.test_docker_files import check_cli_call, typer_tree

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECRET = "docs-examples-test-secret-0123456789abcdef"
RUNNER = CliRunner()
# Run for real when they read files only; the rest need a broker, or run until stopped.
OFFLINE = {"validate", "explain", "replay", "audit"}
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
HOUR = 3_600_000


@dataclass(frozen=True)
class Example:
    where: str  # file:line
    argv: tuple[str, ...]  # one simple command, environment assignments removed

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def _code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, shell text) of each fenced block line and each inline code span."""
    prose: list[tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append((n, ""))
        elif fenced:
            yield n, line
        else:
            prose.append((n, line))
    # Inline spans may wrap over lines (Markdown reads the newline as a space).
    joined = "\n".join(line for _, line in prose)
    for m in re.finditer(r"`([^`]+)`", joined):
        yield prose[joined.count("\n", 0, m.start())][0], m.group(1).replace("\n", " ")


def _commands(shell: str) -> Iterator[list[str]]:
    """Simple commands of a line: comments dropped, split at && ; |, env assignments off."""
    try:
        words = shlex.split(shell, comments=True)
    except ValueError:
        return
    current: list[str] = []
    for w in [*words, ";"]:
        if w in ("&&", ";", "|", "||"):
            while current and ENV_ASSIGNMENT.match(current[0]):
                current.pop(0)
            if current:
                yield current
            current = []
        else:
            current.append(w.removeprefix("[").removesuffix("]"))  # usage: [--k 10]


def examples() -> list[Example]:
    out = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8")
        # A fenced line ending in a backslash continues on the next.
        lines = lines.replace("\\\n", " ")
        for n, shell in _code(lines):
            for argv in _commands(shell):
                if argv[0] in ("anonstream", "make") or argv[:2] == ["python", "-m"]:
                    out.append(Example(f"{path.relative_to(ROOT)}:{n}", tuple(argv)))
    return out


EXAMPLES = examples()
ANONSTREAM = [e for e in EXAMPLES if e.argv[0] == "anonstream" and len(e.argv) > 1]


def test_the_docs_have_examples_of_every_offline_command() -> None:
    assert {e.argv[1] for e in ANONSTREAM} >= OFFLINE | {"worker", "kafka", "generate", "bench"}


def _is_mention(argv: tuple[str, ...]) -> bool:
    """`anonstream replay` or `anonstream kafka` in prose: a command named, not run."""
    tree = typer_tree(cli.app)
    for word in argv[1:]:
        if not isinstance(tree, dict) or word not in tree:
            return False
        tree = tree[word]
    return True


@pytest.mark.parametrize("example", ANONSTREAM, ids=str)
def test_example_parses_with_the_cli(example: Example) -> None:
    args = list(example.argv[1:])
    if args == ["--help"] or _is_mention(example.argv):
        return  # the command path exists (checked by _is_mention)
    check_cli_call(args)


def test_a_mention_is_only_a_command_path() -> None:
    assert _is_mention(("anonstream", "kafka"))
    assert _is_mention(("anonstream", "replay"))
    assert not _is_mention(("anonstream", "replay", "-p", "x"))
    assert not _is_mention(("anonstream", "rewind"))


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.argv[0] == "make"], ids=str)
def test_make_example_names_a_target(example: Example) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in example.argv[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.argv[0] == "python"], ids=str)
def test_python_module_example_names_a_module(example: Example) -> None:
    assert importlib.util.find_spec(example.argv[2]) is not None


# ------------------------------------------------------------------- the offline ones, run


def _placeholder(argv: tuple[str, ...]) -> bool:
    return any("<" in a or "..." in a for a in argv)


def _write_events(path: Path) -> None:
    start = (int(time.time() * 1000) // HOUR - 3) * HOUR  # 3 hours ago: released, not late
    gen = EventGenerator(
        Workload(users=60, pages=5, seed=3, start_ms=start, events_per_second_of_event_time=1)
    )
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in gen.web_events(3000)))


def _invoke(args: list[str]) -> tuple[int, str]:
    result = RUNNER.invoke(
        cli.app, args, env={"ANONSTREAM_SECRET": SECRET, "ANONSTREAM_SECRET_FILE": None}
    )
    return result.exit_code, result.stdout + result.stderr


def _option(argv: tuple[str, ...], *names: str) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a in names:
            return argv[i + 1]
    return None


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the repository's pipelines, as a reader's checkout has."""
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "err", Console(stderr=True, width=400, color_system=None))
    monkeypatch.setattr(cli, "out", Console(width=400, color_system=None))
    return tmp_path


def test_offline_examples_run(scratch: Path) -> None:
    """In document order, in one directory: a replay's output is the next audit's input; an
    input no earlier example made is made here (synthetic events, fake identifiers)."""
    ran = []
    for example in ANONSTREAM:
        argv = example.argv
        if argv[1] not in OFFLINE or _placeholder(argv) or _option(argv, "--topic"):
            continue
        if _is_mention(argv) and argv[1] != "validate":
            continue  # `anonstream replay` in prose; validate alone is a whole command
        if argv[1] == "replay":
            source = scratch / str(_option(argv, "-i", "--input"))
            if not source.exists():
                _write_events(source)
        if argv[1] == "audit":
            releases = scratch / str(_option(argv, "-i", "--input"))
            if not releases.exists():
                _write_events(scratch / "made-for-audit.jsonl")
                code, text = _invoke(["replay", "-p", "web_activity", "-i",
                                      "made-for-audit.jsonl", "-o", str(releases)])  # fmt: skip
                assert code == 0, text
        code, text = _invoke(list(argv[1:]))
        assert code == 0, f"{example}\n{text}"
        ran.append(argv[1])
    assert set(ran) == OFFLINE, ran


def test_validate_prints_the_names_that_p_takes(scratch: Path) -> None:
    """`validate` prints `pipeline <name>`; that name is what -p takes, whatever the file
    is called (issue 17: -p used to take the file's name)."""
    (scratch / "pipelines" / "web_activity.yaml").rename(scratch / "pipelines" / "web-v1.yaml")
    code, text = _invoke(["validate", "--no-check-secret"])
    assert code == 0, text
    names = re.findall(r": pipeline (\w+) v\d+", text)
    assert sorted(names) == ["service_usage", "web_activity"]
    for name in names:
        code, text = _invoke(["explain", "-p", name])
        assert code == 0, text
        code, text = _invoke(["validate", "--no-check-secret", "-p", name])
        assert code == 0 and f"pipeline {name} " in text, text
    code, text = _invoke(["explain", "-p", "web-v1"])
    assert code == 2 and "use -p web_activity" in text, text


def test_two_files_with_one_pipeline_name_are_refused(scratch: Path) -> None:
    shutil.copy(scratch / "pipelines" / "web_activity.yaml", scratch / "pipelines" / "copy.yaml")
    code, text = _invoke(["validate", "--no-check-secret"])
    assert code == 2
    assert "pipeline web_activity is declared by more than one file" in text


def test_the_extractor_sees_wrapped_spans_chains_and_env_prefixes() -> None:
    text = (
        "Run `anonstream explain -p\n  web_activity` first.\n\n```sh\n"
        "ANONSTREAM_SECRET=x anonstream validate && anonstream audit -i o.jsonl  # why\n```\n"
    )
    got = [argv for _, shell in _code(text) for argv in _commands(shell)]
    assert got == [
        ["anonstream", "validate"],
        ["anonstream", "audit", "-i", "o.jsonl"],
        ["anonstream", "explain", "-p", "web_activity"],
    ]
