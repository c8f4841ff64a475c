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
