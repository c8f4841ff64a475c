"""Scale-out stages without a broker: when a release stage may take a raw partition as idle,
and that pre-aggregated partials give exactly single mode's releases (property test)."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import Pipeline, load_pipeline, parse_pipeline
from anonstream.core.step import Batch, StepResult
from anonstream.runtime.scaleout import (
    PARTIALS_VERSION,
    IngestStage,
    Partial,
    PartialsVersionError,
    Progress,
    ReleaseStage,
    WindowPartial,
    decode_partial,
    encode_partial,
)
from anonstream.synthetic import DEFAULT_START_MS, EventGenerator, Workload
from tests.unit.fields import web_test_fields
from tests.unit.test_release_properties import DAY, HOUR, N_WINDOWS, T0, event_sets

ROOT = Path(__file__).resolve().parents[2]
SECRET = load_secret({"ANONSTREAM_SECRET": "x" * 32})
IDLE_MS = 2_000
NOW = DEFAULT_START_MS + 3_600_000  # an hour after the first synthetic event
SOURCES = [("raw", 0), ("raw", 1)]


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def stages(ingest_clock: Clock, release_clock: Clock) -> tuple[IngestStage, ReleaseStage]:
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    ingest = IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=ingest_clock), "partials", 1)
    factory = partial(
        PipelineEngine, pipeline, SECRET, clock_ms=release_clock, idle_close_ms=IDLE_MS
    )
    release = ReleaseStage(factory, pipeline, "partials", 1)
    release.sources = list(SOURCES)
    release.assign([("partials", 0)])
    ingest.assign(list(SOURCES))
    return ingest, release


def ingest_both_sources(ingest: IngestStage, events: list[bytes]) -> list[bytes]:
    """Half the events from each raw partition; the partials messages ingest sends."""
    pidx = np.arange(len(events), dtype=np.int64) % 2
    offs = np.arange(len(events), dtype=np.int64)
    step = ingest.process_batch(Batch(events, pidx, list(SOURCES), offs))
    return [value for _, _, _, value in step.forward]


def release(stage: ReleaseStage, values: list[bytes], first_offset: int = 0) -> list[str]:
    pidx = np.zeros(len(values), dtype=np.int64)
    offs = np.arange(first_offset, first_offset + len(values), dtype=np.int64)
    step = stage.process_batch(Batch(values, pidx, [("partials", 0)], offs))
    step.extend(stage.tick())
    return [r["kind"] for r in step.releases]


def test_a_release_stage_behind_the_ingest_does_not_take_busy_sources_as_idle() -> None:
    """The owner reported data just now; we read the report 3 s later, past the idle close.
    The sources are busy, so the open window must stay open."""
    ingest_clock, release_clock = Clock(NOW), Clock(NOW)
    ingest, stage = stages(ingest_clock, release_clock)
    events = list(EventGenerator(Workload(users=50, seed=1)).encoded_web_events(200))
    values = ingest_both_sources(ingest, events)
    release_clock.ms += 3_000
    assert release(stage, values) == []
    assert stage.engines[("partials", 0)].open_windows == 1


def test_sources_whose_owner_reports_no_data_go_idle_and_the_window_is_released() -> None:
    ingest_clock, release_clock = Clock(NOW), Clock(NOW)
    ingest, stage = stages(ingest_clock, release_clock)
    events = list(EventGenerator(Workload(users=50, seed=1)).encoded_web_events(200))
    values = ingest_both_sources(ingest, events)
    assert release(stage, values) == []
    # Heartbeats of an owner without new data, read as they come: idle after the close.
    ingest_clock.ms += IDLE_MS + 500
    release_clock.ms += IDLE_MS + 500
    beats = [value for _, _, _, value in ingest.tick().forward]
    assert "window_summary" in release(stage, beats, first_offset=len(values))


# -- pre-aggregated partials: exactly single mode's releases ----------------------------------


def scale_pipeline(
    k: int, max_events: int, max_cells: int, hopping: bool, secondary: bool,
    lateness: str = "5h",
) -> Pipeline:  # fmt: skip
    """The release properties' pipeline (type, url; duration summed, averaged, banded),
    optionally with 30-minute hops and a second output by type only (derived cells)."""
    doc: dict[str, Any] = {
        "pipeline": "props",
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": web_test_fields(),
        "window": {"size": "1h", "allowed_lateness": lateness}
        | ({"step": "30m"} if hopping else {}),
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
    if secondary:
        doc["outputs"] = [
            {"name": "default", "topic": "out.default"},
            {"name": "by_type", "topic": "out.by_type", "dimensions": ["type"], "k": k + 1},
        ]
    return parse_pipeline(doc, "test_scaleout")


def raw_messages(events: list[dict[str, Any]], raw_parts: int) -> list[tuple[int, int, bytes]]:
    """(raw partition, offset, value): event i in partition i mod raw_parts."""
    nxt = [0] * raw_parts
    out = []
    for i, e in enumerate(events):
        p = i % raw_parts
        out.append((p, nxt[p], orjson.dumps(e)))
        nxt[p] += 1
    return out


def batch_of(msgs: list[tuple[int, int, bytes]]) -> Batch:
    parts = sorted({p for p, _, _ in msgs})
    at = {p: i for i, p in enumerate(parts)}
    pidx = np.array([at[p] for p, _, _ in msgs], dtype=np.int64)
    offs = np.array([o for _, o, _ in msgs], dtype=np.int64)
    return Batch([v for _, _, v in msgs], pidx, [("raw", p) for p in parts], offs)


def cuts(rnd: random.Random, n: int) -> list[tuple[int, int]]:
    """Random consecutive slices covering 0..n."""
    out, i = [], 0
    while i < n:
        j = min(n, i + rnd.randint(1, max(1, n // 3 + 1)))
        out.append((i, j))
        i = j
    return out


def single_mode(pipeline: Pipeline, msgs: list[tuple[int, int, bytes]], seed: int) -> StepResult:
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    result = StepResult()
    for i, j in cuts(random.Random(seed), len(msgs)):
        result.extend(engine.process_batch(batch_of(msgs[i:j])))
    result.extend(engine.close_all())
    assert not result.dead_letters and engine.counters["late"] == 0
    return result


def scale_out(
    pipeline: Pipeline,
    msgs: list[tuple[int, int, bytes]],
    raw_parts: int,
    workers: int,
    partials: int,
    seed: int,
) -> StepResult:
    """Raw partition r read by worker r mod workers, in random batches, the workers'
    batches interleaved at random; each partials partition read in random chunks by one
    release stage."""
    rnd = random.Random(seed)
    ingests = [
        IngestStage(
            PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY), "partials", partials
        )
        for _ in range(workers)
    ]
    queues = []
    for w in range(workers):
        mine = [m for m in msgs if m[0] % workers == w]
        queues.append([mine[i:j] for i, j in cuts(rnd, len(mine))])
    topic: list[list[bytes]] = [[] for _ in range(partials)]
    while any(queues):
        w = rnd.choice([w for w, q in enumerate(queues) if q])
        step = ingests[w].process_batch(batch_of(queues[w].pop(0)))
        assert all(d.value == b"not json" for d in step.dead_letters)
        for _, p, _, value in step.forward:
            topic[p].append(value)
    factory = partial(PipelineEngine, pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    stage = ReleaseStage(factory, pipeline, "partials", partials)
    stage.sources = [("raw", r) for r in range(raw_parts)]
    stage.assign([("partials", p) for p in range(partials)])
    result = StepResult()
    for p in range(partials):
        for i, j in cuts(rnd, len(topic[p])):
            offs = np.arange(i, j, dtype=np.int64)
            pidx = np.zeros(j - i, dtype=np.int64)
            result.extend(stage.process_batch(Batch(topic[p][i:j], pidx, [("partials", p)], offs)))
    result.extend(stage.close_all())
    assert sum(e.counters["late"] for e in stage.engines.values()) == 0
    return result


def canonical(result: StepResult) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in result.releases)


@settings(deadline=None, max_examples=60)
@given(
    event_sets(),
    st.integers(2, 5),  # k
    st.integers(1, 4),  # L: events per person per cell (bites often)
    st.integers(1, 4),  # M: cells per person per window (bites often)
    st.booleans(),  # hopping windows
    st.booleans(),  # a second output (derived cells)
    st.integers(1, 4),  # raw partitions
    st.integers(1, 3),  # workers
    st.integers(1, 3),  # partials partitions
    st.integers(0, 2**16),  # batches and interleaving
)
def test_scale_out_releases_exactly_what_single_mode_releases(
    events: list[dict[str, Any]], k: int, max_events: int, max_cells: int, hopping: bool,
    secondary: bool, raw_parts: int, workers: int, partials: int, seed: int,
) -> None:  # fmt: skip
    pipeline = scale_pipeline(k, max_events, max_cells, hopping, secondary)
    msgs = raw_messages(events, raw_parts)
    want = single_mode(pipeline, msgs, seed)
    got = scale_out(pipeline, msgs, raw_parts, min(workers, raw_parts), partials, seed)
    assert canonical(got) == canonical(want)


def test_a_person_over_the_bounds_is_bounded_globally_not_per_batch() -> None:
    """One visitor with 12 events in each of 6 cells of one window, spread over batches and
    workers so that no batch sees more than the bounds: L and M still hold on the window."""
    events = [
        {"event_id": f"e{c}-{i}", "ts": T0 + 60_000 * i, "type": "page_view",
         "visitor_id": "heavy", "url": f"https://shop.example.com/{c}", "duration_ms": 10}
        for c in "abcdef" for i in range(12)
    ] + [
        {"event_id": f"o{c}-{v}", "ts": T0, "type": "page_view", "visitor_id": f"v{c}{v}",
         "url": f"https://shop.example.com/{c}", "duration_ms": 10}
        for c in "abcdef" for v in range(3)
    ]  # fmt: skip
    pipeline = scale_pipeline(2, 3, 2, hopping=False, secondary=False)
    msgs = raw_messages(events, 4)
    want = single_mode(pipeline, msgs, 1)
    got = scale_out(pipeline, msgs, 4, 2, 2, 1)
    assert canonical(got) == canonical(want)
    # The heavy visitor counts in 2 cells with 3 events each: 6 + 18 others.
    assert sum(r["metrics"]["events"] for r in got.releases if r["kind"] == "aggregate") == 24


def test_partials_are_compacted_per_batch() -> None:
    """Duplicates and events over L per (cell, person) do not leave the ingest."""
    events = [
        {"event_id": f"e{i % 20}", "ts": T0 + i, "type": "page_view", "visitor_id": "v1",
         "url": "https://shop.example.com/a", "duration_ms": 5}
        for i in range(40)
    ]  # fmt: skip
    pipeline = scale_pipeline(2, 3, 5, hopping=False, secondary=False)
    ingest = IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY), "p", 1)
    step = ingest.process_batch(batch_of(raw_messages(events, 1)))
    (rec,) = [decode_partial(v) for _, _, _, v in step.forward]
    (wp,) = rec.windows
    assert (len(wp), wp.rows_in, wp.duplicates, wp.over_limit, wp.first_events) == (
        3,
        40,
        20,
        17,
        40,
    )


def test_the_partials_format_round_trips_and_an_unknown_version_fails_clearly() -> None:
    wp = WindowPartial(
        T0, np.array([3, 9], dtype=np.uint64), {9: ("c", "d")},
        np.array([1, 2], dtype=np.int64), np.array([1, 2, 3], dtype=np.uint64),
        np.array([4, 5, 6], dtype=np.uint64), np.array([[1.5], [np.nan], [2.0]]), 3, 4, 1, 0,
    )  # fmt: skip
    rec = Partial([Progress("raw", 0, T0, 1, 2)], 7, [wp])
    back = decode_partial(encode_partial(rec))
    assert back.progress == rec.progress and back.rejected == 7
    (got,) = back.windows
    assert got.names == wp.names and (got.first_events, got.rows_in, got.duplicates) == (3, 4, 1)
    for a, b in ((got.cells, wp.cells), (got.unit, wp.unit), (got.event, wp.event)):
        assert a.tolist() == b.tolist()
    assert np.array_equal(got.measures, wp.measures, equal_nan=True)
    newer = bytearray(encode_partial(rec))
    newer[4] = PARTIALS_VERSION + 1
    with pytest.raises(PartialsVersionError, match="newer worker"):
        decode_partial(bytes(newer))


def test_a_release_stage_still_reads_version_1_partials() -> None:
    """A worker upgraded first reads what the old ones sent (one JSON row per event)."""
    pipeline = scale_pipeline(2, 10, 10, hopping=False, secondary=False)
    events = [
        {"event_id": f"e{i}", "ts": T0 + i, "type": "page_view", "visitor_id": f"v{i % 3}",
         "url": "https://shop.example.com/a", "duration_ms": 5}
        for i in range(6)
    ]  # fmt: skip
    msgs = raw_messages(events, 1)
    want = single_mode(pipeline, msgs, 0)
    # What a version 1 ingest sent for this batch: one row per event, names once.
    cols, _, _ = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY).ingest(batch_of(msgs))
    v1 = orjson.dumps({"v": 1, "progress": [["raw", 0, T0 + 5, 1, 1]], "rows": {
        "w": [T0] * 6, "ts": cols.ts.tolist(), "u": cols.unit.tolist(),
        "e": cols.event.tolist(), "d": [0] * 6, "names": [list(cols.dims[0])],
        "m": cols.measures.tolist(),
    }})  # fmt: skip
    stage = ReleaseStage(partial(PipelineEngine, pipeline, SECRET, clock_ms=lambda: T0 + DAY),
                         pipeline, "partials", 1)  # fmt: skip
    stage.sources = [("raw", 0)]
    stage.assign([("partials", 0)])
    got = stage.process_batch(
        Batch([v1], np.zeros(1, np.int64), [("partials", 0)], np.zeros(1, np.int64))
    )
    got.extend(stage.close_all())
    assert canonical(got) == canonical(want)


def test_cells_are_named_once_per_window_and_a_missing_name_fails_clearly() -> None:
    """The second batch of a window names none of the cells the first named; a release
    stage that reads the second without the first (a record lost) says so."""
    pipeline = scale_pipeline(2, 10, 10, hopping=False, secondary=False)
    events = [
        {"event_id": f"e{i}", "ts": T0 + i, "type": "page_view", "visitor_id": f"v{i % 3}",
         "url": "https://shop.example.com/a", "duration_ms": 5}
        for i in range(6)
    ]  # fmt: skip
    msgs = raw_messages(events, 1)
    ingest = IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY), "p", 1)
    first, second = (
        [v for _, _, _, v in ingest.process_batch(batch_of(part)).forward]
        for part in (msgs[:3], msgs[3:])
    )
    assert [len(w.names) for w in decode_partial(first[0]).windows] == [1]
    assert [len(w.names) for w in decode_partial(second[0]).windows] == [0]
    stage = ReleaseStage(
        partial(PipelineEngine, pipeline, SECRET, clock_ms=lambda: T0 + DAY), pipeline, "p", 1
    )
    stage.sources = [("raw", 0)]
    stage.assign([("p", 0)])
    with pytest.raises(RuntimeError, match="no name"):
        stage.process_batch(Batch(second, np.zeros(1, np.int64), [("p", 0)], np.ones(1, np.int64)))


# -- late and rejected events: the summaries' counters ----------------------------------------


def mode_single(
    pipeline: Pipeline, msgs: list[tuple[int, int, bytes]], raw_parts: int,
    batches: list[tuple[int, int]],
) -> StepResult:  # fmt: skip
    """Single mode, the raw partitions assigned up front (each holds the watermark)."""
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    engine.assign([("raw", r) for r in range(raw_parts)])
    result = StepResult()
    for i, j in batches:
        result.extend(engine.process_batch(batch_of(msgs[i:j])))
    result.extend(engine.close_all())
    return result


def mode_scale_out(
    pipeline: Pipeline, msgs: list[tuple[int, int, bytes]], raw_parts: int,
    batches: list[tuple[int, int]], partials: int, seed: int,
) -> StepResult:  # fmt: skip
    """One ingest reading the same batches as single mode; each partials partition read
    by one release stage in random chunks, the partitions' chunks interleaved at random."""
    rnd = random.Random(seed)
    ingest = IngestStage(
        PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY), "partials", partials
    )
    ingest.assign([("raw", r) for r in range(raw_parts)])
    topic: list[list[bytes]] = [[] for _ in range(partials)]
    for i, j in batches:
        for _, p, _, value in ingest.process_batch(batch_of(msgs[i:j])).forward:
            topic[p].append(value)
    factory = partial(PipelineEngine, pipeline, SECRET, clock_ms=lambda: T0 + DAY)
    stage = ReleaseStage(factory, pipeline, "partials", partials)
    stage.sources = [("raw", r) for r in range(raw_parts)]
    stage.assign([("partials", p) for p in range(partials)])
    chunks = [[(p, i, j) for i, j in cuts(rnd, len(topic[p]))] for p in range(partials)]
    result = StepResult()
    while any(chunks):
        p, i, j = rnd.choice([c for c in chunks if c]).pop(0)
        offs = np.arange(i, j, dtype=np.int64)
        pidx = np.zeros(j - i, dtype=np.int64)
        result.extend(stage.process_batch(Batch(topic[p][i:j], pidx, [("partials", p)], offs)))
    result.extend(stage.close_all())
    return result


def summaries(result: StepResult) -> list[tuple[Any, ...]]:
    return sorted(
        (r["output"], r["window_start"], r["late_events"], r["rejected_events"])
        for r in result.releases
        if r["kind"] == "window_summary"
    )


@st.composite
def late_inputs(draw: st.DrawFn) -> list[dict[str, Any] | bytes]:
    """Events out of time order (many late with no allowed lateness), some not JSON; the
    last three are accepted, so that every raw partition (up to 3) has an accepted event
    for its rejections' target window."""
    out: list[dict[str, Any] | bytes] = list(draw(event_sets()))
    for _ in range(draw(st.integers(0, 6))):
        out.insert(draw(st.integers(0, len(out))), b"not json")
    last = T0 + N_WINDOWS * HOUR - 1
    return out + [
        {"event_id": f"last{i}", "ts": last, "type": "page_view", "visitor_id": "visitor-1",
         "url": "https://shop.example.com/a"}
        for i in range(3)
    ]  # fmt: skip


def raw_mixed(inputs: list[dict[str, Any] | bytes], raw_parts: int) -> list[tuple[int, int, bytes]]:
    nxt = [0] * raw_parts
    out = []
    for i, e in enumerate(inputs):
        p = i % raw_parts
        out.append((p, nxt[p], e if isinstance(e, bytes) else orjson.dumps(e)))
        nxt[p] += 1
    return out


@settings(deadline=None, max_examples=100)
@given(
    late_inputs(),
    st.booleans(),  # hopping windows
    st.booleans(),  # a second output
    st.sampled_from(["0s", "20m"]),  # allowed lateness
    st.integers(1, 3),  # raw partitions
    st.integers(1, 3),  # partials partitions
    st.integers(0, 2**16),  # batches and interleaving
)
def test_summaries_count_late_and_rejected_events_as_single_mode_does(
    inputs: list[dict[str, Any] | bytes], hopping: bool, secondary: bool, lateness: str,
    raw_parts: int, partials: int, seed: int,
) -> None:  # fmt: skip
    """The same ingest batches: every window summary (late_events, rejected_events) is
    single mode's, whatever the number of partials partitions and how they are read."""
    pipeline = scale_pipeline(2, 3, 3, hopping, secondary, lateness)
    msgs = raw_mixed(inputs, raw_parts)
    batches = cuts(random.Random(seed), len(msgs))
    want = mode_single(pipeline, msgs, raw_parts, batches)
    got = mode_scale_out(pipeline, msgs, raw_parts, batches, partials, seed)
    assert summaries(got) == summaries(want)
    assert canonical(got) == canonical(want)


def interleaved(msgs: list[tuple[int, int, bytes]], rnd: random.Random) -> list[Any]:
    """The raw partitions merged in a random order, each partition's own order kept."""
    queues = [[m for m in msgs if m[0] == p] for p in sorted({m[0] for m in msgs})]
    out = []
    while any(queues):
        out.append(rnd.choice([q for q in queues if q]).pop(0))
    return out


@settings(deadline=None, max_examples=60)
@given(
    late_inputs(),
    st.booleans(),  # hopping windows
    st.integers(1, 3),  # raw partitions
    st.integers(1, 3),  # workers
    st.integers(1, 3),  # partials partitions
    st.integers(0, 2**16),  # batches and interleaving
)
def test_rejected_events_depend_on_each_partitions_order_only(
    inputs: list[dict[str, Any] | bytes], hopping: bool, raw_parts: int, workers: int,
    partials: int, seed: int,
) -> None:  # fmt: skip
    """Nothing late (5 h of allowed lateness): single mode's summaries, rejected_events
    included, are the same for any batching and interleaving of the raw partitions, and
    scale-out with several workers gives them too."""
    pipeline = scale_pipeline(2, 3, 3, hopping, False)
    msgs = raw_mixed(inputs, raw_parts)
    rnd = random.Random(seed)
    want = mode_single(pipeline, msgs, raw_parts, [(0, len(msgs))])
    other = interleaved(msgs, rnd)
    again = mode_single(pipeline, other, raw_parts, cuts(rnd, len(other)))
    got = scale_out(pipeline, msgs, raw_parts, min(workers, raw_parts), partials, seed)
    assert summaries(want) == summaries(again) == summaries(got)
    assert canonical(got) == canonical(want) == canonical(again)
    assert sum(s[3] for s in summaries(want) if s[0] == "default") == inputs.count(b"not json")
