"""Whatever one producer sends, no message fails a batch: every one is accepted or rejected
with a reason, the fast path and the reference path agree, and an unexpected error costs
the one message that met it (internal_error), never the batch or the worker."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anonstream.core import generalizers as generalizers_module
from anonstream.core import release
from anonstream.core.contract import SERVICE_USAGE, WEB_ACTIVITY, Contract
from anonstream.core.decode import (
    BAD_TIMESTAMP,
    DEFAULT_MAX_BYTES,
    FUTURE_TIMESTAMP,
    INTERNAL_ERROR,
    MAX_TS_MS,
    MIN_TS_MS,
    REASONS,
    Decoded,
    Rejection,
    TimestampCache,
    parse_ts,
)
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import (
    MAX_EDGES,
    Pipeline,
    PipelineError,
    load_pipeline,
    parse_pipeline,
)
from anonstream.core.policy import NO_PRIVACY_UNIT, PolicyRecord
from anonstream.core.records import rfc3339
from anonstream.core.step import Message, StepResult
from anonstream.synthetic import EventGenerator, Workload

SECRET = load_secret({"ANONSTREAM_SECRET": "h" * 32})
NOW = 1_796_100_000_000  # 2026-12-01T05:20:00Z, a day after the generator's events
PIPES = {
    "web_activity": load_pipeline("pipelines/web_activity.yaml"),
    "service_usage": load_pipeline("pipelines/service_usage.yaml"),
}
CONTRACTS: dict[str, Contract] = {"web_activity": WEB_ACTIVITY, "service_usage": SERVICE_USAGE}
# The output schema's window bounds (streams/anonstream/schemas/release-v1.json).
_SCHEMA = json.loads(Path("streams/anonstream/schemas/release-v1.json").read_text())
_WINDOW_START = re.compile(_SCHEMA["$defs"]["timestamp"]["pattern"])
YEAR_ONE = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00-01:00"]


def _engine(pipeline: Pipeline, *, fast: bool = True, now: int = NOW) -> PipelineEngine:
    return PipelineEngine(pipeline, SECRET, clock_ms=lambda: now, fast_path=fast)


def _run(e: PipelineEngine, raws: list[bytes]) -> StepResult:
    e.assign([0])
    step = e.process([Message(r, 0, i) for i, r in enumerate(raws)])
    step.extend(e.close_all())
    return step


def _reference(e: PipelineEngine, raw: bytes) -> PolicyRecord | Rejection:
    d = e.decoder.decode(raw)
    return e.policy.apply(d) if isinstance(d, Decoded) else d


def _base_events(name: str, n: int, seed: int = 3) -> list[dict[str, Any]]:
    gen = EventGenerator(Workload(users=15, seed=seed))
    return list(gen.web_events(n) if name == "web_activity" else gen.usage_events(n))


# -------------------------------------------------------------------- arbitrary JSON ---

_DATES = st.builds(
    lambda dt, sep, frac, off: dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + off,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from(["T", "t", " ", "_"]),
    st.sampled_from(["", ".5", ".123456", ".1234567"]),
    st.sampled_from(["Z", "z", "+00:00", "+01:00", "-23:59", "+23:59", "+24:00", "", "+0100"]),
)
_ODD_TIMES = st.sampled_from(
    [*YEAR_ONE, "9999-12-31T23:59:59-23:59", "2099-12-31T23:59:59-01:00",
     "1999-12-31T23:30:00-01:00", "2026-02-29T00:00:00Z", "2026-11-30T12:00:00\u0660Z",
     "２０２６-11-30T12:00:00Z", MIN_TS_MS - 1, MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS,
     NOW + 120_000, NOW + 120_001, -(2**63), 2**63 - 1, 2**64, 1.5e12, "1796100000000"]
)  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30])
    | st.floats()  # NaN and infinities are not JSON: both decoders must say not_json
    | st.text()
    | st.text(st.characters(codec="utf-8"), max_size=50)
    | st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "@", "é", "\x1f", "{", "🙂"]),
        st.integers(0, 20_000),
    )
    | _DATES
    | _ODD_TIMES
)
_VALUES = st.recursive(
    _SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=8,
)


def _field_overrides(contract: Contract) -> st.SearchStrategy[dict[str, Any]]:
    """Arbitrary values (or absence) for any fields of the contract, nested ones too."""
    names = [*contract.names, "unlisted"]
    nested = [f for f in contract.fields if f.children]
    objects = [
        st.fixed_dictionaries(
            {}, optional={c.name: _VALUES for c in f.children} | {"other": _VALUES}
        ).map(lambda d, n=f.name: {n: d})
        for f in nested
    ]
    plain = st.dictionaries(st.sampled_from(names), _VALUES | st.just(...), max_size=4)
    # Event times get their own share: most arbitrary values are simply of the wrong type.
    times = st.fixed_dictionaries(
        {"ts": _DATES | _ODD_TIMES | st.integers(MIN_TS_MS - 10**6, MAX_TS_MS + 10**6)}
    )
    return st.one_of(plain, times, *objects)


def _apply(ev: dict[str, Any], o: dict[str, Any], ascii: bool = False) -> bytes:
    ev = dict(ev)
    for k, v in o.items():
        if v is ...:
            ev.pop(k, None)
        else:
            ev[k] = v
    # The stdlib encoder writes any int, NaN and lone surrogates: what a careless producer
    # could send. Lone surrogates become non-UTF-8 bytes, or \\udXXX escapes with `ascii`.
    return json.dumps(ev, ensure_ascii=ascii).encode("utf-8", "surrogatepass")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(PIPES)),
    overrides=st.data(),
    ascii=st.booleans(),
)
def test_arbitrary_json_in_any_field_is_accepted_or_rejected_alike_by_both_paths(
    name: str, overrides: st.DataObject, ascii: bool
) -> None:
    contract = CONTRACTS[name]
    changes = overrides.draw(st.lists(_field_overrides(contract), min_size=1, max_size=6))
    base = _base_events(name, len(changes))
    raws = [_apply(ev, o, ascii) for ev, o in zip(base, changes, strict=True)]
    pipeline = PIPES[name]
    fast, slow = _engine(pipeline), _engine(pipeline, fast=False)
    steps = [_run(fast, raws), _run(slow, raws)]
    # Every message accounted for, with a known reason, and never an internal error.
    reasons = {*REASONS, NO_PRIVACY_UNIT} - {INTERNAL_ERROR}
    for step, e in zip(steps, (fast, slow), strict=True):
        assert {d.reason for d in step.dead_letters} <= reasons
        assert e.counters["accepted"] + len(step.dead_letters) == len(raws)
        for d in step.dead_letters:
            ref = _reference(e, raws[d.offset])
            assert isinstance(ref, Rejection) and (ref.reason, ref.field) == (d.reason, d.field)
    for i, raw in enumerate(raws):
        ref = _reference(fast, raw)
        dead = [d for d in steps[0].dead_letters if d.offset == i]
        assert isinstance(ref, Rejection) == bool(dead), raw[:200]
    # Both paths: the same dead letters, the same releases, the same counters.
    for a, b in [(steps[0], steps[1])]:
        assert sorted((d.offset, d.reason, d.field) for d in a.dead_letters) == sorted(
            (d.offset, d.reason, d.field) for d in b.dead_letters
        )
        dump = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in a.releases]
        assert sorted(dump) == sorted(
            orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in b.releases
        )
        for r in a.releases:
            assert _WINDOW_START.fullmatch(r["window_start"]), r["window_start"]
    assert dict(fast.counters) == dict(slow.counters)
    # Accepted rows: the fast path's columns are the reference's records.
    e = _engine(pipeline)
    cols, _flagged = e.columns.run(raws)
    for row, i in enumerate(cols.index.tolist()):
        r = _reference(e, raws[i])
        assert isinstance(r, PolicyRecord)
        assert (r.ts_ms, r.unit, r.event_hash, r.dims) == (
            cols.ts[row], cols.unit[row], cols.event[row], cols.dims[row],
        )  # fmt: skip
        np.testing.assert_array_equal(np.array(r.measures), cols.measures[row])


@settings(max_examples=300, deadline=None)
@given(value=_DATES | _ODD_TIMES)
def test_every_time_parser_keeps_the_one_range(value: object) -> None:
    """parse_ts, the cache and msgspec's bounds: one verdict, always within the range,
    and every window it can open formats as the schema wants."""
    ms = parse_ts(value)
    assert ms is None or MIN_TS_MS <= ms < MAX_TS_MS
    if isinstance(value, str):
        cached = TimestampCache()(value)
        assert cached == 0 or cached == ms
    if ms is not None:
        week = 7 * 86_400_000
        for bound in (ms - ms % week - week, ms + week):
            assert _WINDOW_START.fullmatch(rfc3339(bound))


# ------------------------------------------------------------------ year-1 and range ---


@pytest.mark.parametrize("step", ["1h", "15m"])
@pytest.mark.parametrize("ts", [*YEAR_ONE, -(2**62), MAX_TS_MS, 2**63 - 1])
def test_a_time_out_of_range_is_bad_timestamp_and_the_batch_goes_on(ts: object, step: str) -> None:
    doc = {
        "pipeline": "hostile", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id", "user_email"],
        "fields": {**_web_fields(), "type": "keep"},
        "window": {"size": "1h", "step": step}, "dimensions": ["type"], "k": 2,
    }  # fmt: skip
    pipeline = parse_pipeline(doc)
    good = _base_events("web_activity", 40)
    raws = [orjson.dumps(ev) for ev in good]
    raws.insert(17, orjson.dumps({**good[0], "ts": ts}))
    for fast in (True, False):
        step_result = _run(_engine(pipeline, fast=fast), raws)
        assert [(d.offset, d.reason, d.field) for d in step_result.dead_letters] == [
            (17, BAD_TIMESTAMP, "ts")
        ]
        assert step_result.releases
        for r in step_result.releases:
            assert _WINDOW_START.fullmatch(r["window_start"])


def _web_fields() -> dict[str, Any]:
    return {
        "event_id": "dedupe", "ts": "window", "customer_id": "drop", "reseller_id": "drop",
        "type": "keep", "visitor_id": "pseudonymize", "user_email": "pseudonymize",
        "ip": "drop", "user_agent": "drop", "url": "drop", "referrer": "drop",
        "campaign_id": "keep", "duration_ms": "drop",
    }  # fmt: skip


# ---------------------------------------------------------------------- internal_error ---

MARKER = "internal-error-probe"


@pytest.fixture
def buggy_url_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generalizer with a bug that one value meets: what internal_error is for."""
    real = generalizers_module.url_template

    def url_template(value: str) -> str:
        if MARKER in value:
            raise RuntimeError("a bug met by one value")
        return real(value)

    monkeypatch.setattr(generalizers_module, "url_template", url_template)


@pytest.mark.usefixtures("buggy_url_template")
@pytest.mark.parametrize("fast", [True, False])
def test_an_unexpected_error_rejects_that_message_only(fast: bool) -> None:
    pipeline = PIPES["web_activity"]
    good = _base_events("web_activity", 300)
    raws = [orjson.dumps(ev) for ev in good]
    poison = orjson.dumps({**good[5], "url": f"https://shop.example.com/{MARKER}"})
    e = _engine(pipeline, fast=fast)
    step = _run(e, [*raws[:150], poison, *raws[150:]])
    assert [(d.offset, d.reason, d.field) for d in step.dead_letters] == [
        (150, INTERNAL_ERROR, None)
    ]
    assert e.rejections[INTERNAL_ERROR] == 1 and e.counters["accepted"] == len(raws)
    # The good events count exactly as they do without the poison.
    clean = _run(_engine(pipeline), raws)
    assert [r for r in step.releases if r["kind"] == "aggregate"] == [
        r for r in clean.releases if r["kind"] == "aggregate"
    ]
    summaries = [r for r in step.releases if r["kind"] == "window_summary"]
    assert sum(r["rejected_events"] for r in summaries) == 1


def test_a_column_pass_that_fails_falls_back_to_the_reference_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = PIPES["service_usage"]
    raws = [orjson.dumps(ev) for ev in _base_events("service_usage", 200)]
    clean = _run(_engine(pipeline), raws)
    e = _engine(pipeline)

    def broken(values: list[bytes]) -> Any:
        raise MemoryError  # anything at all

    monkeypatch.setattr(e.columns, "run", broken)
    step = _run(e, raws)
    assert step.dead_letters == []
    assert step.releases == clean.releases


def test_an_internal_error_in_the_decoder_is_one_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    e = _engine(PIPES["web_activity"], fast=False)
    real = e.decoder.decode

    def decode(raw: bytes) -> Decoded | Rejection:
        if b"boom" in raw:
            raise ValueError("boom")
        return real(raw)

    monkeypatch.setattr(e.decoder, "decode", decode)
    good = _base_events("web_activity", 20)
    raws = [orjson.dumps(ev) for ev in good]
    raws[3] = orjson.dumps({**good[3], "type": "boom"})
    step = _run(e, raws)
    assert [(d.offset, d.reason) for d in step.dead_letters] == [(3, INTERNAL_ERROR)]


# ---------------------------------------------------------------------- future times ---


def _skew_pipeline(**window: Any) -> Pipeline:
    return parse_pipeline(
        {
            "pipeline": "skewed", "version": 1, "contract": "web_activity",
            "privacy_unit": ["visitor_id"], "fields": _web_fields(),
            "window": {"size": "1h", "allowed_lateness": "2m", **window},
            "dimensions": ["type"], "k": 2,
        }
    )  # fmt: skip


def test_max_future_skew_is_read_checked_and_defaults_to_two_minutes() -> None:
    assert _skew_pipeline().window.max_future_skew_ms == 120_000
    assert _skew_pipeline(max_future_skew="30s").window.max_future_skew_ms == 30_000
    assert _skew_pipeline(max_future_skew=0).window.max_future_skew_ms == 0
    for bad in ("soon", "2d", -1, True):
        with pytest.raises(ValueError, match="max_future_skew"):
            _skew_pipeline(max_future_skew=bad)


@pytest.mark.parametrize("fast", [True, False])
def test_an_event_past_the_skew_is_rejected_and_does_not_move_the_watermark(fast: bool) -> None:
    pipeline = _skew_pipeline(max_future_skew="1m")
    now = NOW
    e = _engine(pipeline, fast=fast, now=now)
    e.assign([0, 1])

    def ev(i: int, ts: int, user: str = "u") -> bytes:
        return orjson.dumps({"event_id": f"e{i}", "ts": ts, "type": "t", "visitor_id": user})

    # Partition 0 carries an event 1 ms past the skew, and one exactly at it.
    step = e.process(
        [Message(ev(0, now - 60_000, "a"), 0, 0), Message(ev(1, now + 60_001), 0, 1),
         Message(ev(2, now - 50_000, "b"), 1, 0)]
    )  # fmt: skip
    assert [(d.partition, d.offset, d.reason) for d in step.dead_letters] == [
        (0, 1, FUTURE_TIMESTAMP)
    ]
    assert e.watermark.current(now) < now
    step = e.process([Message(ev(3, now + 60_000, "c"), 0, 2)])
    assert step.dead_letters == []
    # Events right behind, on both partitions: none is late.
    e.process([Message(ev(4 + i, now - 30_000, f"d{i}"), i % 2, 3 + i) for i in range(4)])
    assert e.counters["late"] == 0


# -------------------------------------------------------------------------- cell ids ---


def _cells_pipeline() -> Pipeline:
    return parse_pipeline(
        {
            "pipeline": "cells", "version": 1, "contract": "web_activity",
            "privacy_unit": ["visitor_id"], "fields": _web_fields(),
            "window": {"size": "1h"}, "dimensions": ["type", "campaign_id"], "k": 10,
        }
    )  # fmt: skip


def test_dimension_tuples_that_once_joined_alike_are_different_cells() -> None:
    e = _engine(_cells_pipeline())
    a, b = ("a\x1fb", "c"), ("a", "b\x1fc")
    assert "\x1f".join(a) == "\x1f".join(b)  # the old encoding merged them
    assert e.cell_id(a) != e.cell_id(b)
    assert e.cell_id(("ab", "")) != e.cell_id(("a", "b")) != e.cell_id(("", "ab"))
    assert e.cell_id(a) == _engine(_cells_pipeline()).cell_id(a)  # stable across engines
    other = PipelineEngine(_cells_pipeline(), load_secret({"ANONSTREAM_SECRET": "o" * 32}))
    assert other.cell_id(a) != e.cell_id(a)  # keyed: not computable without the secret


def test_a_one_person_cell_is_never_counted_inside_a_ten_person_cell() -> None:
    ts = 1_795_996_800_000 + 600_000
    raws = [
        orjson.dumps({"event_id": f"e{i}", "ts": ts, "type": "a", "campaign_id": "b\x1fc",
                      "visitor_id": f"person-{i}"})
        for i in range(10)
    ]  # fmt: skip
    lone = {"event_id": "x", "ts": ts, "type": "a\x1fb", "campaign_id": "c", "visitor_id": "x"}
    raws.append(orjson.dumps(lone))
    step = _run(_engine(_cells_pipeline()), raws)
    cells = {
        tuple(r["dims"].values()): r["metrics"]["users"]
        for r in step.releases
        if r["kind"] == "aggregate"
    }
    # The ten people are released as their own cell; the one person is not released.
    assert cells[("a", "b\x1fc")] == 10
    assert ("a\x1fb", "c") not in cells
    assert all(users >= 10 for users in cells.values())


# ---------------------------------------------------------------------- replay clock ---


def test_replay_clock(tmp_path: Path) -> None:
    from anonstream.runtime.replay import replay_clock

    f = tmp_path / "events.jsonl"
    f.write_bytes(b"")
    mtime = int(datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp())
    os.utime(f, (mtime, mtime))
    assert replay_clock(None, f) == mtime * 1000
    assert replay_clock("2026-11-30T13:00:00+01:00", f) == mtime * 1000
    assert replay_clock(str(mtime * 1000), f) == mtime * 1000
    assert abs(replay_clock("wall", f) - datetime.now(UTC).timestamp() * 1000) < 60_000
    for bad in ("yesterday", "0001-01-01T00:00:00Z", "12"):
        with pytest.raises(ValueError, match="--now"):
            replay_clock(bad, f)


def test_oversized_fields_are_one_rejection_each() -> None:
    ev = _base_events("web_activity", 1)[0]
    big = orjson.dumps({**ev, "user_agent": "a" * DEFAULT_MAX_BYTES})
    for fast in (True, False):
        step = _run(_engine(PIPES["web_activity"], fast=fast), [big])
        assert [d.reason for d in step.dead_letters] == ["oversized"]


# ------------------------------------------------------------------- histogram edges ---


def _histogram_pipeline(n_edges: int) -> Pipeline:
    edges = [i * 100 for i in range(n_edges)]
    fields = {
        **_web_fields(),
        "duration_ms": {"measure": True, "clamp": [0, 10**6], "edges": edges},
    }
    return parse_pipeline(
        {
            "pipeline": "bands", "version": 1, "contract": "web_activity",
            "privacy_unit": ["visitor_id"], "fields": fields, "window": {"size": "1h"},
            "dimensions": ["type"], "metrics": {"histograms": ["duration_ms"]}, "k": 3,
        }
    )  # fmt: skip


def test_too_many_histogram_edges_is_a_clear_error() -> None:
    _histogram_pipeline(MAX_EDGES)
    with pytest.raises(PipelineError, match=f"at most {MAX_EDGES} edges"):
        _histogram_pipeline(MAX_EDGES + 1)


def test_the_most_edges_give_the_reference_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the maximum, the bit-mask histogram is the per-cell reference's, not empty."""
    ts = 1_795_996_800_000 + 600_000
    raws = [
        orjson.dumps({"event_id": f"e{i}", "ts": ts, "type": "t", "visitor_id": f"p{i % 40}",
                      "duration_ms": (i * 37) % 6500})
        for i in range(400)
    ]  # fmt: skip
    pipeline = _histogram_pipeline(MAX_EDGES)
    fast = _run(_engine(pipeline), raws).releases
    monkeypatch.setattr(release, "band_histograms", lambda g, b, u, n, e, k: [None] * n)
    reference = _run(_engine(pipeline), raws).releases
    hist = [r["metrics"]["duration_ms_histogram"] for r in fast if r["kind"] == "aggregate"]
    assert hist and all(h and len(h) > 10 for h in hist)
    assert fast == reference
