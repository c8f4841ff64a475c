"""The docs state the compaction size that core/cellstate.py uses (issue 15: they once
disagreed, 50,000 against 250,000)."""

from __future__ import annotations

import re
from pathlib import Path

from anonstream.core.cellstate import COMPACT_MIN_ROWS

DOCS = Path(__file__).parents[2] / "docs"


def test_architecture_states_the_compaction_size_of_the_code() -> None:
    text = " ".join((DOCS / "architecture.md").read_text().split())
    said = re.search(r"outnumber both ([\d,]+) \(`COMPACT_MIN_ROWS`\)", text)
    assert said is not None, "docs/architecture.md no longer states the compaction size"
    assert int(said.group(1).replace(",", "")) == COMPACT_MIN_ROWS


def test_benchmarks_state_the_compaction_size_of_the_code() -> None:
    text = " ".join((DOCS / "benchmarks.md").read_text().split())
    said = re.search(r"new rows not yet compacted: up to ([\d,]+)", text)
    assert said is not None
    assert int(said.group(1).replace(",", "")) == COMPACT_MIN_ROWS
