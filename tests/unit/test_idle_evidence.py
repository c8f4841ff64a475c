"""Idle close under a slow output: the batch loop with a fake consumer and producer.

The issue: with a throttled output, the loop spends seconds delivering and committing
before it fetches again. Judged by the clock, a partition it had not read (or not read
lately) then looked idle: it stopped holding the watermark, windows closed, and its events,
read a moment later, were late. Here one clock drives the engines and the fetch responses,
and only the output's slowness moves it: the releases must equal replay's, with nothing late.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from anonstream.core import engine as engine_module
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.runtime.replay import replay
from anonstream.settings import Settings
from anonstream.synthetic import EventGenerator, Workload

ROOT = Path(__file__).resolve().parents[2]
SECRET = "x" * 32
DAY_MS = 86_400_000
IDLE_S = 3.0
SLOW_COMMIT_MS = 5_000  # what one throttled commit takes: longer than the idle close
WALL0 = 1_800_000_000_000


@dataclass
class Wall:
    """The one clock: the engines' and the fetch responses' (aiokafka stamps them)."""

    ms: int = WALL0


@dataclass
class _Part:
    position: int = 0
    highwater: int | None = None  # None: no fetch response yet
    polled_ms: int | None = None

    @property
    def has_valid_position(self) -> bool:
        return True


@dataclass
class FakeConsumer:
    """What the loop reads of aiokafka's consumer: fetch responses and positions."""

    wall: Wall
    parts: dict[TopicPartition, _Part] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assignment = SimpleNamespace(state_value=self.parts.__getitem__)
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))

    def fetched(self, tp: TopicPartition, highwater: int) -> None:
        """A fetch response for `tp` came in now."""
        p = self.parts.setdefault(tp, _Part())
        p.highwater, p.polled_ms = highwater, self.wall.ms

    def take(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        """getmany hands these over: the position moves past them."""
        self.parts[tp].position = records[-1].offset + 1
        return records

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.parts[tp].highwater

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.parts[tp].highwater

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.parts[tp].polled_ms


class FakeProducer:
    """The output; a throttled one when every commit takes `commit_ms` of the wall clock."""

    def __init__(self, wall: Wall, commit_ms: int = SLOW_COMMIT_MS) -> None:
        self.wall = wall
        self.commit_ms = commit_ms
        self.sent: list[tuple[str, bytes]] = []

    async def begin_transaction(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_offsets_to_transaction(self, *_: Any) -> None:
        return None

    async def commit_transaction(self) -> None:
        self.wall.ms += self.commit_ms

    async def abort_transaction(self) -> None:
        return None


def records(events: list[dict[str, Any]], first: int = 0) -> list[Any]:
    return [
        SimpleNamespace(offset=first + i, value=orjson.dumps(ev)) for i, ev in enumerate(events)
    ]


def aggregates(values: list[bytes]) -> list[bytes]:
    recs = [orjson.loads(v) for v in values]
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in recs if "kind" in r)


@pytest.mark.parametrize("p1", ["unread", "not fetched yet", "read to its end, then written"])
def test_a_slow_output_does_not_make_a_partition_idle(
    p1: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = Wall()
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(time_ns=lambda: wall.ms * 10**6))
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    settings = Settings(idle_close_seconds=IDLE_S, pipelines_dir=ROOT / "pipelines")
    loop = BatchLoop(settings, [pipeline], load_secret({"ANONSTREAM_SECRET": SECRET}), Metrics())
    consumer, producer = FakeConsumer(wall), FakeProducer(wall)
    loop.consumer, loop.txn.producer = consumer, producer  # type: ignore[assignment]
    tp0, tp1 = (TopicPartition(pipeline.source_topic, i) for i in (0, 1))
    loop.assigned = {tp0, tp1}
    for tp in (tp0, tp1):
        consumer.parts[tp] = _Part()
        loop.stages[pipeline.name].assign([(tp.topic, tp.partition)])

    # 2 events a second of event time from a day boundary: hours 0 and 1 of that day.
    start = (WALL0 // DAY_MS - 4) * DAY_MS
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=2.0, seed=5,
                                  start_ms=start))  # fmt: skip
    events = list(gen.web_events(9_000))
    ev0, ev1 = events[0::2], events[1::2]
    early = 10 if p1 == "read to its end, then written" else 0
    rec0, rec1 = records(ev0), records(ev1)

    async def run() -> None:
        def step(data: dict[TopicPartition, list[Any]]) -> Any:
            loop._last_tick = float("-inf")  # a tick in every step: the worst case
            return loop._step(data)

        # Partition 0 is read whole; partition 1 has data the loop has not taken yet.
        consumer.fetched(tp0, len(rec0))
        first = {tp0: consumer.take(tp0, rec0)}
        if p1 == "unread":
            consumer.fetched(tp1, len(rec1))
        elif early:
            consumer.fetched(tp1, early)
            first[tp1] = consumer.take(tp1, rec1[:early])
        await step(first)  # ... and its commit is slow: the clock moves on
        await step({})  # back after the slow commit, before any new fetch response
        await step({})
        consumer.fetched(tp1, len(rec1))
        await step({tp1: consumer.take(tp1, rec1[early:])})
        for e in loop.stages.values():
            await loop._deliver(e, e.close_all())

    asyncio.run(run())
    engine = loop.stages[pipeline.name]
    assert wall.ms - WALL0 >= 2 * SLOW_COMMIT_MS  # the output really was slow
    assert engine.counters["late"] == 0

    expected: list[bytes] = []
    ref = PipelineEngine(pipeline, load_secret({"ANONSTREAM_SECRET": SECRET}))
    replay(ref, [orjson.dumps(ev) for ev in ev0 + ev1], lambda r: expected.append(orjson.dumps(r)))
    assert aggregates([v for _, v in producer.sent]) == aggregates(expected)


def test_a_partition_shown_silent_goes_idle_and_the_last_window_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle close still works: two fetch responses IDLE_S apart with nothing new."""
    wall = Wall()
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(time_ns=lambda: wall.ms * 10**6))
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    settings = Settings(idle_close_seconds=IDLE_S, pipelines_dir=ROOT / "pipelines")
    loop = BatchLoop(settings, [pipeline], load_secret({"ANONSTREAM_SECRET": SECRET}), Metrics())
    consumer, producer = FakeConsumer(wall), FakeProducer(wall, commit_ms=0)
    loop.consumer, loop.txn.producer = consumer, producer  # type: ignore[assignment]
    tp = TopicPartition(pipeline.source_topic, 0)
    loop.assigned = {tp}
    consumer.parts[tp] = _Part()
    engine = loop.stages[pipeline.name]
    engine.assign([(tp.topic, tp.partition)])
    start = (WALL0 // DAY_MS - 4) * DAY_MS
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=2.0, seed=5,
                                  start_ms=start))  # fmt: skip
    recs = records(list(gen.web_events(1_000)))

    async def run() -> None:
        loop._last_tick = float("-inf")
        consumer.fetched(tp, len(recs))
        await loop._step({tp: consumer.take(tp, recs)})
        assert engine.open_windows == 1
        # Nothing new, in responses up to IDLE_S later; but each proves silence only up to
        # the one before it (it may have been built long before aiokafka got to it).
        for later_ms in (int(IDLE_S * 1000) - 1, 1):
            wall.ms += later_ms
            consumer.fetched(tp, len(recs))
            loop._last_tick = float("-inf")
            await loop._step({})
            assert engine.open_windows == 1
        wall.ms += 1
        consumer.fetched(tp, len(recs))
        loop._last_tick = float("-inf")
        await loop._step({})
        assert engine.open_windows == 0

    asyncio.run(run())
    assert any(orjson.loads(v)["kind"] == "window_summary" for _, v in producer.sent)
