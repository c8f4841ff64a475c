"""dp outputs in scale-out without a broker: the windows of one privacy period meet in one
partials partition, so scale-out charges exactly what single mode charges.

The dp noise is drawn by OpenDP from the system's randomness, so the released numbers of
two runs differ; what is deterministic is compared: which windows are charged, at what
loss, and each window summary's privacy block (status, spending, budget)."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.budget import Ledger, MemoryLedgerStore, period_of
from anonstream.core.engine import PipelineEngine
from anonstream.core.pipeline import Pipeline, parse_pipeline
from anonstream.core.step import Batch, StepResult
from anonstream.runtime.scaleout import IngestStage, ReleaseStage, partials_partition
from tests.unit.fields import web_test_fields
from tests.unit.test_release_properties import DAY, HOUR, T0, event_sets
from tests.unit.test_scaleout import SECRET, batch_of, cuts, raw_messages

EPSILON = 1.0  # per window; the budget pays for two windows of a period


def dp_pipeline(max_events: int, max_cells: int, hopping: bool, k: int = 2) -> Pipeline:
    doc: dict[str, Any] = {
        "pipeline": "dpprops",
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": web_test_fields(),
        "window": {"size": "1h", "allowed_lateness": "5h"} | ({"step": "30m"} if hopping else {}),
        "dimensions": ["type", "url"],
        "metrics": {"sums": ["duration_ms"]},
        "contribution": {
            "max_events_per_unit_per_cell": max_events,
            "max_cells_per_unit_per_window": max_cells,
        },
        "k": k,
        "outputs": [
            {"name": "default", "privacy": "dp", "dp": {"epsilon": EPSILON, "delta": 1e-6}}
        ],
        "dp_budget": {"epsilon": 2.5 * EPSILON, "delta": 1e-3},
    }
    return parse_pipeline(doc, "test_dp_scaleout")


def single_mode(p: Pipeline, msgs: list[tuple[int, int, bytes]], seed: int) -> tuple[Any, Any]:
    store = MemoryLedgerStore()
    engine = PipelineEngine(p, SECRET, clock_ms=lambda: T0 + 3 * DAY, ledger=Ledger(p, store))
    result = StepResult()
    for i, j in cuts(random.Random(seed), len(msgs)):
        result.extend(engine.process_batch(batch_of(msgs[i:j])))
    result.extend(engine.close_all())
    assert engine.counters["late"] == 0
    return result, store.charges


def scale_out(
    p: Pipeline, msgs: list[tuple[int, int, bytes]], raw_parts: int, workers: int,
    partials: int, seed: int,
) -> tuple[Any, Any]:  # fmt: skip
    """As tests/unit/test_scaleout.py's, and the partials partitions are shared out over
    `workers` release stages, each a worker of its own with its own ledger view (no
    charge of one is seen by another)."""
    rnd = random.Random(seed)
    clock = lambda: T0 + 3 * DAY  # noqa: E731
    ingests = [
        IngestStage(PipelineEngine(p, SECRET, clock_ms=clock), "partials", partials)
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
        for _, part, _, value in step.forward:
            topic[part].append(value)
    result, charges = StepResult(), []
    for w in range(workers):
        store = MemoryLedgerStore()
        factory = partial(PipelineEngine, p, SECRET, clock_ms=clock, ledger=Ledger(p, store))
        stage = ReleaseStage(factory, p, "partials", partials)
        stage.sources = [("raw", r) for r in range(raw_parts)]
        owned = [part for part in range(partials) if part % workers == w]
        stage.assign([("partials", part) for part in owned])
        for part in owned:
            for i, j in cuts(rnd, len(topic[part])):
                offs = np.arange(i, j, dtype=np.int64)
                pidx = np.zeros(j - i, dtype=np.int64)
                batch = Batch(topic[part][i:j], pidx, [("partials", part)], offs)
                result.extend(stage.process_batch(batch))
        result.extend(stage.close_all())
        assert sum(e.counters["late"] for e in stage.engines.values()) == 0
        charges += store.charges
    return result, charges


def deterministic(result: StepResult, charges: list[Any]) -> tuple[list[Any], list[Any]]:
    """Each summary's window and privacy block; each charge without its content digest."""
    summaries = sorted(
        (r["window_start"], r["output"], sorted(r["privacy"].items()))
        for r in result.releases
        if r["kind"] == "window_summary"
    )
    bills = sorted(
        (c.pipeline, c.output, c.start_ms, c.end_ms, c.period, c.epsilon, c.delta, c.rerelease)
        for c in charges
    )
    return summaries, bills


@settings(deadline=None, max_examples=25)
@given(
    event_sets(max_size=60),
    st.integers(1, 3),  # L
    st.integers(1, 3),  # M
    st.booleans(),  # hopping windows
    st.booleans(),  # a third of the events a day later: two privacy periods
    st.integers(1, 3),  # raw partitions
    st.integers(1, 3),  # workers (ingest, and release: each with its own ledger)
    st.integers(1, 4),  # partials partitions
    st.integers(0, 2**16),
)
def test_scale_out_charges_exactly_what_single_mode_charges(
    events: list[dict[str, Any]], max_events: int, max_cells: int, hopping: bool,
    two_days: bool, raw_parts: int, workers: int, partials: int, seed: int,
) -> None:  # fmt: skip
    p = dp_pipeline(max_events, max_cells, hopping)
    if two_days:
        events = [e | {"ts": e["ts"] + DAY} if i % 3 == 0 else e for i, e in enumerate(events)]
    events = sorted(events, key=lambda e: e["ts"])  # in order: no late event in either mode
    msgs = raw_messages(events, raw_parts)
    want = deterministic(*single_mode(p, msgs, seed))
    got = deterministic(*scale_out(p, msgs, raw_parts, min(workers, raw_parts), partials, seed))
    assert got == want
    # No window charged twice, and no period over its budget.
    starts = [b[2] for b in got[1]]
    assert len(starts) == len(set(starts))
    by_period: dict[int, float] = {}
    for b in got[1]:
        by_period[b[4]] = by_period.get(b[4], 0.0) + b[5]
    assert all(spent <= 2.5 * EPSILON for spent in by_period.values())


def test_the_windows_of_a_period_meet_in_one_partials_partition() -> None:
    """dp: routed by privacy period, rows and the late and rejected events of its
    summaries alike (one function); k: by window, spread over the partitions."""
    dp = dp_pipeline(1, 1, hopping=True)
    starts = [T0 + i * 30 * 60_000 for i in range(48)]
    assert {partials_partition(dp, s, 6) for s in starts} == {partials_partition(dp, T0, 6)}
    days = {partials_partition(dp, T0 + d * DAY, 6) for d in range(6)}
    assert len(days) == 6  # consecutive periods spread over the partitions
    assert all(period_of(s, dp.rotation_ms) == T0 for s in starts)
    k_doc_pipeline = parse_pipeline(
        {**_k_doc(), "window": {"size": "1h", "allowed_lateness": "0s"}}, "k"
    )
    spread = {partials_partition(k_doc_pipeline, T0 + h * HOUR, 6) for h in range(6)}
    assert len(spread) == 6


def _k_doc() -> dict[str, Any]:
    return {
        "pipeline": "kprops", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id"], "fields": web_test_fields(), "dimensions": ["type"],
        "k": 2,
    }  # fmt: skip


@pytest.mark.parametrize("hopping", [False, True])
def test_late_and_rejected_events_go_where_their_window_is_released(hopping: bool) -> None:
    """The ingest sends a dp window's rows, and the counts its summary takes (late,
    rejected), to the same partials partition: the one of its period."""
    p = dp_pipeline(1, 1, hopping)
    ingest = IngestStage(PipelineEngine(p, SECRET, clock_ms=lambda: T0 + DAY), "partials", 5)
    ok = {"type": "page_view", "url": "https://shop.example.com/a", "visitor_id": "v"}
    import orjson

    values = [
        orjson.dumps(ok | {"event_id": f"e{h}", "ts": T0 + DAY + h * HOUR + 2_400_000})
        for h in range(4)
    ] + [b"not json"]
    pidx = np.zeros(len(values), dtype=np.int64)
    offs = np.arange(len(values), dtype=np.int64)
    step = ingest.process_batch(Batch(values, pidx, [("raw", 0)], offs))
    from anonstream.runtime.scaleout import decode_partial

    home = partials_partition(p, T0 + DAY, 5)
    for _, part, _, value in step.forward:
        rec = decode_partial(value)
        if part != home:
            assert not rec.windows and not rec.rejected_for and not rec.late
        else:
            assert rec.windows and rec.late
            assert {t for t, _ in rec.rejected_for} <= {w.start_ms for w in rec.windows}


def test_the_acl_plan_names_the_installation_ledger_and_the_legacy_one_read_only() -> None:
    from anonstream.broker.plan import Principals, acls, worker_topics
    from anonstream.settings import Settings

    s = Settings(group_id="g1")
    p = dp_pipeline(1, 1, hopping=False)
    (ledger,) = [t for t in worker_topics(s, [p]) if t.role == "ledger"]
    assert (ledger.name, ledger.partitions, ledger.configs) == (
        "anon.ledger", 1, {"cleanup.policy": "compact", "delete.retention.ms": str(2**63 - 1)},
    )  # fmt: skip
    grants = {
        (a.name, a.operations) for a in acls(s, [p], Principals()) if a.resource_type == "topic"
    }
    assert ("anon.ledger", ("Read", "Write", "Describe")) in grants
    assert ("anon.ledger.g1", ("Read", "Describe")) in grants  # never written
    assert not any(name == "anon.ledger.g1" and "Write" in ops for name, ops in grants)
