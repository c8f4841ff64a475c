"""The column-wise fast path gives exactly what the per-event reference path gives."""

from __future__ import annotations

import json
import random
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core import columns
from anonstream.core.decode import Decoded
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.core.policy import PolicyRecord
from anonstream.core.step import Message
from anonstream.synthetic import TOPIC_USAGE, TOPIC_WEB, EventGenerator, Workload, bad_messages

SECRET = load_secret({"ANONSTREAM_SECRET": "c" * 32})
NOW = 1_796_100_000_000
PIPES = {
    TOPIC_WEB: load_pipeline("pipelines/web_activity.yaml"),
    TOPIC_USAGE: load_pipeline("pipelines/service_usage.yaml"),
}


def _engine(topic: str, fast: bool) -> PipelineEngine:
    return PipelineEngine(PIPES[topic], SECRET, clock_ms=lambda: NOW, fast_path=fast)


def _mutate(ev: dict[str, Any], rnd: random.Random) -> bytes:
    """Sometimes break an event in one of the ways real producers do."""
    ev = dict(ev)
    r = rnd.random()
    if r < 0.05:
        ev["surprise"] = {"nested": [1, 2, {"x": "y"}]}
    elif r < 0.08:
        ev["ts"] = "2026-11-30 12:00:00"  # no offset
    elif r < 0.10:
        ev.pop("visitor_id", None)
        ev.pop("user_email", None)
    elif r < 0.12:
        ev["type"] = 42
    elif r < 0.13:
        ev["billing"] = {"card_number": "4000000000000002", "extra": 1}
    return orjson.dumps(ev)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), topic=st.sampled_from([TOPIC_WEB, TOPIC_USAGE]))
def test_fast_path_equals_reference_path(seed: int, topic: str) -> None:
    _assert_fast_equals_reference(seed, topic)


def test_fast_path_in_chunks_equals_reference_path() -> None:
    # Batches bigger than a chunk are cut into chunks: each row and each rejection in a
    # later chunk must still point at its own message.
    rnd = random.Random(5)
    gen = EventGenerator(Workload(users=60, seed=5))
    raws = [_mutate(ev, rnd) for ev in gen.web_events(300)]
    with patch.object(columns, "CHUNK", 37):
        e = _engine(TOPIC_WEB, fast=True)
        cols, flagged = e.columns.run(raws)
    assert sorted([*cols.index.tolist(), *flagged]) == list(range(len(raws)))
    assert flagged and max(flagged) > 37
    for i in flagged:
        d = e.decoder.decode(raws[i])
        assert (
            not isinstance(d, Decoded)
            or d.unknown_fields
            or not isinstance(e.policy.apply(d), PolicyRecord)
        )
    for row, i in enumerate(cols.index.tolist()):
        d = e.decoder.decode(raws[i])
        assert isinstance(d, Decoded)
        r = e.policy.apply(d)
        assert isinstance(r, PolicyRecord)
        assert (r.ts_ms, r.unit, r.event_hash, r.dims) == (
            cols.ts[row],
            cols.unit[row],
            cols.event[row],
            cols.dims[row],
        )


def _assert_fast_equals_reference(seed: int, topic: str) -> None:
    rnd = random.Random(seed)
    gen = EventGenerator(Workload(users=60, events_per_second_of_event_time=0.5, seed=seed))
    events = gen.web_events(400) if topic == TOPIC_WEB else gen.usage_events(400)
    payloads = [_mutate(ev, rnd) for ev in events]
    for _, bad in bad_messages(topic):
        payloads.insert(rnd.randrange(len(payloads)), bad)
    msgs = [Message(p, ("t", i % 3), i // 3) for i, p in enumerate(payloads)]
    outs = []
    for fast in (True, False):
        e = _engine(topic, fast)
        e.assign([("t", 0), ("t", 1), ("t", 2)])
        step = e.process(msgs[:250])
        step.extend(e.process(msgs[250:]))
        step.extend(e.close_all())
        releases = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in step.releases)
        dead = sorted((d.offset, d.partition, d.reason, d.field) for d in step.dead_letters)
        outs.append((releases, dead, dict(e.counters), dict(e.rejections)))
    assert outs[0] == outs[1]
    assert np.sum([len(o[0]) for o in outs]) > 0
    assert outs[0][3]  # some rejections took the per-event path


# Values of every JSON kind, including the ones decoders disagree on at the edges:
# integers past 63 and 64 bits, floats where ints belong, booleans, lone surrogates.
_odd_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2026-11-30T12:00:00.5+01:00", "2026-11-30t12:00:00z", "  ", ""])
)
_odd_values = st.recursive(
    _odd_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=5,
)


def _raw(event: dict[str, Any], dup: str | None) -> bytes:
    # The stdlib encoder writes any int; a repeated key is spliced in by hand.
    body = json.dumps(event, ensure_ascii=False)
    if dup is not None and len(event) > 0:
        body = body[:-1] + ", " + json.dumps(dup) + ': "dup"}'
    return body.encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None)
@given(
    overrides=st.lists(
        st.dictionaries(
            st.sampled_from([*PIPES[TOPIC_USAGE].contract.names, "extra"]), _odd_values,
            max_size=3,
        ),
        min_size=1, max_size=8,
    ),
    dup=st.sampled_from([None, "type", "user_email", "ts", "duration_ms"]),
)  # fmt: skip
def test_fast_path_accepts_only_what_the_reference_accepts_identically(
    overrides: list[dict[str, Any]], dup: str | None
) -> None:
    gen = EventGenerator(Workload(users=20, seed=3))
    for topic in (TOPIC_WEB, TOPIC_USAGE):
        base = (
            gen.web_events(len(overrides))
            if topic == TOPIC_WEB
            else gen.usage_events(len(overrides))
        )
        raws = [_raw({**ev, **o}, dup) for ev, o in zip(base, overrides, strict=True)]
        e = _engine(topic, fast=True)
        cols, flagged = e.columns.run(raws)
        assert sorted([*cols.index.tolist(), *flagged]) == list(range(len(raws)))
        for row, i in enumerate(cols.index.tolist()):
            d = e.decoder.decode(raws[i])
            assert isinstance(d, Decoded) and d.unknown_fields == 0, raws[i]
            r = e.policy.apply(d)
            assert isinstance(r, PolicyRecord), raws[i]
            assert r.ts_ms == cols.ts[row] and r.unit == cols.unit[row]
            assert r.event_hash == cols.event[row] and r.dims == cols.dims[row]
            np.testing.assert_array_equal(np.array(r.measures), cols.measures[row])


def test_a_deeply_nested_object_field_is_rejected_not_a_crash() -> None:
    """Regression: msgspec overflows the stack on deep nesting inside an object field
    (within the size limit); that event alone goes to the per-event path (too_deep)."""
    gen = EventGenerator(Workload(users=20, seed=5))
    events = [orjson.dumps(ev) for ev in gen.usage_events(30)]
    good = orjson.loads(events[0])
    good["billing"] = "@@"
    deep = orjson.dumps(good).replace(b'"@@"', b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    assert len(deep) < 64 * 1024
    msgs = [Message(v, ("t", 0), i) for i, v in enumerate([*events[:15], deep, *events[15:]])]
    e = _engine(TOPIC_USAGE, fast=True)
    e.assign([("t", 0)])
    step = e.process(msgs)
    assert [(d.offset, d.reason) for d in step.dead_letters] == [(15, "too_deep")]


def test_new_pseudonyms_of_a_batch_match_the_reference_and_ignore_case_and_blanks() -> None:
    gen = EventGenerator(Workload(users=20, seed=9))
    events = list(gen.web_events(8))
    emails = ["Ann@X.example", " ann@x.example ", "ann@x.example", "   ", "", None, "b@y", "B@Y"]
    raws = []
    for ev, email in zip(events, emails, strict=True):
        ev = {k: v for k, v in ev.items() if k != "user_email"}
        ev["ts"] = events[0]["ts"]  # one key period
        raws.append(orjson.dumps(ev if email is None else {**ev, "user_email": email}))
    e = _engine(TOPIC_WEB, fast=True)
    cols, flagged = e.columns.run(raws)
    assert flagged == [] and cols.index.tolist() == list(range(8))
    for row, raw in enumerate(raws):
        d = e.decoder.decode(raw)
        assert isinstance(d, Decoded)
        r = e.policy.apply(d)
        assert isinstance(r, PolicyRecord) and r.unit == cols.unit[row]
    units = cols.unit.tolist()
    assert units[0] == units[1] == units[2] and units[6] == units[7] and units[0] != units[6]
