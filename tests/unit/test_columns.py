"""The column-wise fast path gives exactly what the per-event reference path gives."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.columns import Columns
from anonstream.core.engine import Message, PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream_load.generator import TOPIC_USAGE, TOPIC_WEB, EventGenerator, Workload, bad_messages

SECRET = load_secret({"ANONSTREAM_SECRET": "c" * 32})
NOW = 1_796_100_000_000
PIPES = {
    TOPIC_WEB: load_pipeline("pipelines/web_activity.yaml"),
    TOPIC_USAGE: load_pipeline("pipelines/service_usage.yaml"),
}


def _engine(topic: str, fast: bool) -> PipelineEngine:
    e = PipelineEngine(PIPES[topic], SECRET, clock_ms=lambda: NOW)
    if not fast:
        empty = Columns.from_records([], [], len(PIPES[topic].measures))
        e.columns.run = lambda values: (empty, list(range(len(values))))  # type: ignore[method-assign]
    return e


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
