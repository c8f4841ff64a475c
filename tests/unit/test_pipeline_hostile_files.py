"""Pipeline files that are not text, or YAML nested beyond the parser's recursion: a
PipelineError (one line, exit 2 in the CLI), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from anonstream.core.pipeline import PipelineError, find_pipeline, load_pipeline


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00\x01\xff\xfe", "not UTF-8 text"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
    ids=["binary", "deeply nested"],
)
def test_a_hostile_file_is_a_pipeline_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=reason):
        load_pipeline(path)
    # Looking a pipeline up by name passes over such a file.
    with pytest.raises(PipelineError, match="no such pipeline"):
        find_pipeline("web_activity", tmp_path)


@pytest.mark.parametrize(
    ("line", "new"),
    [
        ("k: 10", "k: 99999999999999999999999"),
        ("max_events_per_unit_per_cell: 10", "max_events_per_unit_per_cell: 9223372036854775808"),
        ("version: 1", "version: 18446744073709551616"),
    ],
)
def test_an_integer_past_int64_is_a_pipeline_error(tmp_path: Path, line: str, new: str) -> None:
    """k = 10**23 was valid, and then every release failed to serialize (a replay
    traceback; a worker failing on the same window restart after restart)."""
    text = Path("pipelines/web_activity.yaml").read_text(encoding="utf-8")
    assert f"\n{line}" in text or f" {line}" in text
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(line, new, 1), encoding="utf-8")
    with pytest.raises(PipelineError, match="expected an integer <= 2147483647"):
        load_pipeline(path)


BOMB = (
    "["
    + ", ".join(
        [f"&a0 [{', '.join(['x'] * 9)}]"]
        + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    )
    + "]"
)


@pytest.mark.parametrize(
    ("line", "new"),
    [("k: 10", f"k: {BOMB}"), ("version: 1", f"version: {BOMB}"), ("k: 10", "k: &r [*r]")],
    ids=["bomb in k", "bomb in version", "recursive alias"],
)
def test_a_yaml_alias_bomb_is_refused_before_it_is_walked(
    tmp_path: Path, line: str, new: str
) -> None:
    """Eight lines of aliases expand to 9**8 values; quoting one in an error message
    (`got [...]`) took minutes and gigabytes."""
    text = Path("pipelines/web_activity.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(line, new, 1), encoding="utf-8")
    with pytest.raises(PipelineError, match="aliases are expanded"):
        load_pipeline(path)
