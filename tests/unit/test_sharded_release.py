"""The sharded release (core/sharded.py) against single mode: a window's rows split by
person shard, each shard reduced on its own (in random batches), the shards' parts merged
in any order, must release what single mode releases from the whole window, record for
record, with the same window counts and accounting (property test); and exact sums do not
depend on the order of their terms."""

from __future__ import annotations

import random
from collections import defaultdict
from fractions import Fraction
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.cellstate import Rows, WindowState
from anonstream.core.engine import PipelineEngine
from anonstream.core.exactsum import exact_sums
from anonstream.core.pipeline import Pipeline, parse_pipeline
from anonstream.core.release import OutputRelease
from anonstream.core.sharded import figures_path, reduce_shard, release_merged, shard_of
from anonstream.core.step import StepResult
from tests.unit.fields import web_test_fields
from tests.unit.test_release_properties import DAY, T0, event_sets
from tests.unit.test_scaleout import SECRET, batch_of, cuts, raw_messages


def sharded_pipeline(
    k: int, max_events: int, max_cells: int, hopping: bool, outputs: str, noise: bool,
    clamp_hi: float,
) -> Pipeline:  # fmt: skip
    """`outputs`: "one" (figures path), "two" (a derived output by type), "coarse" (one
    output over fewer dimensions than the pipeline's)."""
    doc: dict[str, Any] = {
        "pipeline": "props",
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": web_test_fields(
            duration_ms={"measure": True, "clamp": [0, clamp_hi], "edges": [100, 500]}
        ),
        "window": {"size": "1h", "allowed_lateness": "5h"} | ({"step": "30m"} if hopping else {}),
        "dimensions": ["type", "url"],
        "metrics": {
            "sums": ["duration_ms"],
            "means": ["duration_ms"],
            "histograms": ["duration_ms"],
        },
        "contribution": {
            "max_events_per_unit_per_cell": max_events,
            "max_cells_per_unit_per_window": max_cells,
        },
        "k": k,
    }
    if noise:
        doc["noise"] = {"mechanism": "laplace", "epsilon": 1}
    if outputs == "two":
        doc["outputs"] = [
            {"name": "default", "topic": "out.default"},
            {"name": "by_type", "topic": "out.by_type", "dimensions": ["type"], "k": k + 1},
        ]
    elif outputs == "coarse":
        doc["outputs"] = [{"name": "by_type", "topic": "out.by_type", "dimensions": ["type"]}]
    return parse_pipeline(doc, "test_sharded_release")


def view(outs: list[OutputRelease]) -> list[Any]:
    out = []
    for o in outs:
        records = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in o.records]
        counts = (o.cells_released, o.cells_rolled_up, o.cells_suppressed)
        out.append((o.output.name, records, counts, o.accounting))
    return out


def single_and_sharded(
    pipeline: Pipeline, events: list[dict[str, Any]], shards: int, seed: int
) -> tuple[list[Any], list[Any]]:
    """Single mode's releases of every window, and the sharded release of the same
    windows: each window's rows (as they arrived, before any bound) split by shard_of,
    each shard's rows added in random batches, the shards' parts merged in random order."""
    rnd = random.Random(seed)
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    releaser = engine.releaser
    single = releaser.release
    want: list[Any] = []
    got: list[Any] = []

    def both(state: WindowState) -> list[OutputRelease]:
        n_m = len(pipeline.measures)
        rows = Rows.concat(added.pop(state.start_ms), n_m)
        parts = []
        shard = shard_of(rows.unit, shards)
        for s in range(shards):
            mine = rows.take(shard == s)
            if not len(mine):
                continue
            ws = WindowState(state.start_ms, state.end_ms, n_m, state.max_events_per_unit_per_cell)
            ws.cells = dict(state.cells)
            for i, j in cuts(rnd, len(mine)):
                ws.add(mine.take(np.arange(i, j)))
            if rnd.random() < 0.5:
                ws.compact()  # as a big window does between batches
            parts.append(reduce_shard(releaser, ws))
        rnd.shuffle(parts)
        releaser.release = single  # type: ignore[method-assign]
        got.append(view(release_merged(releaser, parts)))
        releaser.release = both  # type: ignore[method-assign]
        out = single(state)
        want.append(view(out))
        return out

    added: dict[int, list[Rows]] = defaultdict(list)  # each window's rows as they came
    plain_add = WindowState.add

    def add(self: WindowState, rows: Rows) -> None:
        if self.max_events_per_unit_per_cell == pipeline.contribution.max_events_per_unit_per_cell:
            added[self.start_ms].append(rows)
        plain_add(self, rows)

    releaser.release = both  # type: ignore[method-assign]
    msgs = raw_messages(events, 1)
    result = StepResult()
    with patch.object(WindowState, "add", add):
        for i, j in cuts(rnd, len(msgs)):
            result.extend(engine.process_batch(batch_of(msgs[i:j])))
    result.extend(engine.close_all())
    return want, got


@settings(deadline=None, max_examples=150)
@given(
    event_sets(max_size=120),
    st.integers(2, 5),  # k
    st.integers(1, 4),  # L: events per person per cell (bites often)
    st.integers(1, 4),  # M: cells per person per window (bites often)
    st.booleans(),  # hopping windows
    st.sampled_from(["one", "one", "two", "coarse"]),  # outputs
    st.booleans(),  # noise (seeded by the exact figures)
    st.sampled_from([1000.0, 333.3]),  # clamp (values are integers): sums of fractions
    st.integers(1, 5),  # shards
    st.integers(0, 2**16),  # batches and order
)
def test_the_sharded_release_is_single_modes_release(
    events: list[dict[str, Any]], k: int, max_events: int, max_cells: int, hopping: bool,
    outputs: str, noise: bool, clamp_hi: float, shards: int, seed: int,
) -> None:  # fmt: skip
    pipeline = sharded_pipeline(k, max_events, max_cells, hopping, outputs, noise, clamp_hi)
    want, got = single_and_sharded(pipeline, events, shards, seed)
    assert got == want


def test_cells_with_k_people_in_a_shard_go_as_figures_and_the_rest_as_rows() -> None:
    """40 people in one cell and 3 in another: with 2 shards and k 5, the big cell is
    figures in both shards and the small one rows; the release is single mode's."""
    events = [
        {"event_id": f"e{i}", "ts": T0 + i, "type": "page_view", "visitor_id": f"v{i}",
         "url": "https://shop.example.com/a", "duration_ms": i}
        for i in range(40)
    ] + [
        {"event_id": f"s{i}", "ts": T0 + i, "type": "click", "visitor_id": f"v{i}",
         "url": "https://shop.example.com/b", "duration_ms": i}
        for i in range(3)
    ]  # fmt: skip
    pipeline = sharded_pipeline(5, 10, 20, False, "one", False, 1000.0)
    assert figures_path(pipeline)
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    engine.process_batch(batch_of(raw_messages(events, 1)))
    (state,) = engine.windows.values()
    rows = Rows.concat(state.pending, 1)
    parts = []
    for s in range(2):
        ws = WindowState(state.start_ms, state.end_ms, 1, 10)
        ws.cells = dict(state.cells)
        ws.add(rows.take(shard_of(rows.unit, 2) == s))
        parts.append(reduce_shard(engine.releaser, ws))
    assert all(p.big is not None and len(p.big) == 1 for p in parts)
    assert sum(len(p.rows) for p in parts) == 3
    assert view(release_merged(engine.releaser, parts)) == view(engine.releaser.release(state))


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=60), st.integers(0, 2**16))
def test_exact_sums_do_not_depend_on_order_or_grouping(values: list[float], seed: int) -> None:
    v = np.array(values, dtype=np.float64)
    g = np.zeros(len(v), dtype=np.int64)
    (whole,) = exact_sums(v, g, 1)
    assert whole == sum(Fraction(x) for x in values)
    perm = np.random.default_rng(seed).permutation(len(v))
    cut = len(v) // 2
    a = exact_sums(v[perm[:cut]], g[:cut], 1)[0]
    b = exact_sums(v[perm[cut:]], g[cut:], 1)[0]
    assert a + b == whole
