"""The sharded scale-out release (runtime/shardstages.py) without a broker: sharded ingest,
shard stages, merge stage, against single mode (property tests, the scale-out ones of
test_scaleout.py run through the sharded path), and its merge records' format."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.engine import PipelineEngine
from anonstream.core.pipeline import Pipeline
from anonstream.core.step import Batch, StepResult
from anonstream.runtime.mergerecord import ShardRecordError, decode_shard, encode_shard
from anonstream.runtime.scaleout import IngestStage
from anonstream.runtime.shardstages import MergeStage, ShardEngine, ShardStage
from tests.unit.test_release_properties import DAY, T0, event_sets
from tests.unit.test_scaleout import (
    SECRET,
    batch_of,
    canonical,
    cuts,
    late_inputs,
    mode_single,
    raw_messages,
    raw_mixed,
    scale_pipeline,
    single_mode,
    summaries,
)


def clock() -> int:
    return T0 + DAY


def shard_factory(pipeline: Pipeline, partials: int) -> Any:
    def make(shard: int) -> PipelineEngine:
        return ShardEngine(
            pipeline, SECRET, clock_ms=clock, shard=shard, merge="merge", merge_partitions=partials
        )

    return make


def read_in_chunks(
    stage: Any, topic: list[list[bytes]], name: str, rnd: random.Random,
    fresh: Callable[[], Any] | None = None,
) -> tuple[Any, StepResult]:  # fmt: skip
    """Each partition read in random chunks, the partitions' chunks interleaved at random.
    With `fresh`: once, at a random point after a chunk (a commit), the stage is replaced
    by a fresh one restored from every partition's checkpoint, reading again from its
    safe offset, as the worker does after a crash or a rebalance. Returns the last stage."""
    pos = [0] * len(topic)
    restart_after = rnd.randrange(sum(len(t) for t in topic) + 1) if fresh else -1
    done = 0
    result = StepResult()
    while any(pos[p] < len(topic[p]) for p in range(len(topic))):
        p = rnd.choice([p for p in range(len(topic)) if pos[p] < len(topic[p])])
        i = pos[p]
        j = min(len(topic[p]), i + rnd.randint(1, max(1, len(topic[p]) // 3 + 1)))
        offs = np.arange(i, j, dtype=np.int64)
        pidx = np.zeros(j - i, dtype=np.int64)
        result.extend(stage.process_batch(Batch(topic[p][i:j], pidx, [(name, p)], offs)))
        pos[p] = j
        done += j - i
        if fresh is not None and done >= restart_after >= 0:
            restart_after = -1
            new = fresh()
            for q in range(len(topic)):
                key = (name, q)
                safe, cp = stage.safe_offset(key), stage.checkpoint(key)
                if cp is not None:
                    new.restore(key, cp)
                new.assign([key])
                pos[q] = safe if safe is not None else pos[q]
            stage = new
    return stage, result


def sharded(
    pipeline: Pipeline, msgs: list[tuple[int, int, bytes]], raw_parts: int, workers: int,
    partials: int, seed: int, batches: list[tuple[int, int]] | None = None,
    restart: bool = False,
) -> tuple[StepResult, list[list[bytes]]]:  # fmt: skip
    """Raw partition r read by worker r mod workers in random batches, interleaved at
    random; shards and merge partitions read in random chunks. Returns the releases and
    the merge topic."""
    rnd = random.Random(seed)
    ingests = [
        IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=clock), "partials", partials,
                    sharded=True)
        for _ in range(workers)
    ]  # fmt: skip
    for w, ingest in enumerate(ingests):
        ingest.assign([("raw", r) for r in range(raw_parts) if r % workers == w])
    queues = []
    for w in range(workers):
        mine = [m for m in msgs if m[0] % workers == w]
        queues.append([mine[i:j] for i, j in batches or cuts(rnd, len(mine))])
    topic: list[list[bytes]] = [[] for _ in range(partials)]
    while any(queues):
        w = rnd.choice([w for w, q in enumerate(queues) if q])
        for _, p, _, value in ingests[w].process_batch(batch_of(queues[w].pop(0))).forward:
            topic[p].append(value)
    for ingest in ingests:
        for _, p, _, value in ingest.close_all().forward:
            topic[p].append(value)

    def fresh_shards() -> ShardStage:
        stage = ShardStage(shard_factory(pipeline, partials), pipeline, "partials", partials)
        stage.sources = [("raw", r) for r in range(raw_parts)]
        return stage

    def fresh_merge() -> MergeStage:
        return MergeStage(pipeline, PipelineEngine(pipeline, SECRET).releaser, "merge", partials)

    shards = fresh_shards()
    shards.assign([("partials", p) for p in range(partials)])
    shards, step = read_in_chunks(shards, topic, "partials", rnd, fresh_shards if restart else None)
    # The ingests' heartbeats go on (each second, data or not): a shard restarted after the
    # last of its rows learns from them how far its sources are.
    for ingest in ingests:
        for _, p, _, value in ingest.tick().forward:
            offs = np.array([len(topic[p])], dtype=np.int64)
            topic[p].append(value)
            batch = Batch([value], np.zeros(1, dtype=np.int64), [("partials", p)], offs)
            step.extend(shards.process_batch(batch))
    step.extend(shards.close_all())
    assert not step.releases
    merge_topic: list[list[bytes]] = [[] for _ in range(partials)]
    for t, p, _, value in step.forward:
        assert t == "merge"
        merge_topic[p].append(value)
    merge = fresh_merge()
    merge.assign([("merge", p) for p in range(partials)])
    _, result = read_in_chunks(merge, merge_topic, "merge", rnd, fresh_merge if restart else None)
    return result, merge_topic


@settings(deadline=None, max_examples=60)
@given(
    event_sets(),
    st.integers(2, 5),  # k
    st.integers(1, 4),  # L: events per person per cell (bites often)
    st.integers(1, 4),  # M: cells per person per window (bites often)
    st.booleans(),  # hopping windows
    st.booleans(),  # a second output (derived cells: the shards send rows)
    st.integers(1, 4),  # raw partitions
    st.integers(1, 3),  # workers
    st.integers(1, 4),  # partials partitions = shards
    st.integers(0, 2**16),  # batches and interleaving
    st.booleans(),  # a restart of the shard and merge stages from their checkpoints
)
def test_the_sharded_scale_out_releases_exactly_what_single_mode_releases(
    events: list[dict[str, Any]], k: int, max_events: int, max_cells: int, hopping: bool,
    secondary: bool, raw_parts: int, workers: int, partials: int, seed: int, restart: bool,
) -> None:  # fmt: skip
    pipeline = scale_pipeline(k, max_events, max_cells, hopping, secondary)
    msgs = raw_messages(events, raw_parts)
    want = single_mode(pipeline, msgs, seed)
    w = min(workers, raw_parts)
    got, _ = sharded(pipeline, msgs, raw_parts, w, partials, seed, restart=restart)
    assert canonical(got) == canonical(want)


@settings(deadline=None, max_examples=60)
@given(
    late_inputs(),
    st.booleans(),  # hopping windows
    st.booleans(),  # a second output
    st.sampled_from(["0s", "20m", "5h"]),  # allowed lateness
    st.integers(1, 3),  # raw partitions
    st.integers(1, 3),  # partials partitions
    st.integers(0, 2**16),  # batches and interleaving
    st.booleans(),  # a restart of the shard and merge stages from their checkpoints
)
def test_sharded_summaries_count_late_and_rejected_events_as_single_mode_does(
    inputs: list[dict[str, Any] | bytes], hopping: bool, secondary: bool, lateness: str,
    raw_parts: int, partials: int, seed: int, restart: bool,
) -> None:  # fmt: skip
    """Late and rejected events, one ingest reading single mode's batches: the window
    summaries and releases are single mode's through the shards and the merge (with a
    restart: the aggregates, and the summaries' totals)."""
    pipeline = scale_pipeline(2, 3, 3, hopping, secondary, lateness)
    msgs = raw_mixed(inputs, raw_parts)
    batches = cuts(random.Random(seed), len(msgs))
    want = mode_single(pipeline, msgs, raw_parts, batches)
    got, _ = sharded(pipeline, msgs, raw_parts, 1, partials, seed, batches, restart)
    if not restart:
        assert summaries(got) == summaries(want)
        assert canonical(got) == canonical(want)
        return
    # A restart carries the counters not yet in a summary in its checkpoints, without
    # their target windows (as the by-window release stage does): the next summary counts
    # them. Their totals, and every aggregate, are still single mode's.
    assert totals(got) == totals(want)
    assert aggregates(got) == aggregates(want)


def totals(result: StepResult) -> tuple[int, int]:
    rows = [s for s in summaries(result) if s[0] == "default"]
    return sum(s[2] for s in rows), sum(s[3] for s in rows)


def aggregates(result: StepResult) -> list[bytes]:
    return [r for r in canonical(result) if b'"kind":"aggregate"' in r]


def test_a_merge_record_round_trips_and_a_broken_one_is_refused() -> None:
    events = [
        {"event_id": f"e{i}", "ts": T0 + i, "type": "page_view", "visitor_id": f"v{i % 9}",
         "url": "https://shop.example.com/a", "duration_ms": 10 * i}
        for i in range(60)
    ]  # fmt: skip
    pipeline = scale_pipeline(3, 2, 2, False, False)
    _, merge_topic = sharded(pipeline, raw_messages(events, 1), 1, 1, 2, 1)
    records = [decode_shard(v, pipeline) for q in merge_topic for v in q]
    parts = [r for r in records if r.part is not None]
    assert parts and any(r.part.big is not None for r in parts if r.part is not None)
    for q in merge_topic:
        for v in q:
            assert encode_shard(decode_shard(v, pipeline), pipeline) == v
            for bad in (v[:-1], v + b"x", b"ASSH" + v[4:9]):
                with pytest.raises(ShardRecordError):
                    decode_shard(bad, pipeline)
