"""The batch loop's contract, one suite for every backend (getsentry/arroyo's pattern).

Each test runs the real `BatchLoop` to the end of its input (a backfill: stop_at_end) over
one backend's clients, and reads back what a partner reading with read_committed sees:
it must be exactly what replay makes of the committed input, no release missing and none
twice, through a rebalance, an aborted upstream transaction, a failed producer and a crash
with a restart from the committed checkpoints. A fenced producer stops the loop.

Subclasses give the `backend` fixture: tests/unit/test_loop_contract.py the in-memory
broker, tests/integration/test_loop_contract.py the real one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced

from anonstream.core.keys import load_secret
from anonstream.core.pipeline import Pipeline, load_pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.runtime.clients import Clients
from anonstream.runtime.scaleout import partials_topic
from anonstream.runtime.shardstages import merge_topic
from anonstream.settings import Settings
from anonstream.synthetic import EventGenerator, Workload
from tests.contract.backends import Backend
from tests.integration.helpers import SECRET, canonical, diff_summary, replay_events

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
PARTIALS_PARTITIONS = 3  # not a multiple of PARTITIONS: no worker mirrors another
KINDS = ("aggregate", "window_summary")


class Crash(Exception):
    """The worker dies here (the loop does not catch it: it is no Kafka error)."""


@dataclass
class World:
    backend: Backend
    pipeline: Pipeline
    settings: Settings
    events: list[bytes]  # the committed input, in the order produced

    @property
    def outputs(self) -> list[str]:
        return [o.topic for o in self.pipeline.outputs]

    def loop(self, clients: Clients | None = None, settings: Settings | None = None) -> BatchLoop:
        return BatchLoop(
            settings or self.settings, [self.pipeline],
            load_secret({"ANONSTREAM_SECRET": SECRET}), Metrics(), stop_at_end=True,
            clients=clients or self.backend.clients,
        )  # fmt: skip

    async def scale_out(self, partials: int = PARTIALS_PARTITIONS, sharded: bool = False) -> None:
        """From here on the group runs in scale-out mode: its partials topic made (as
        `prepare` makes it), each worker slot a settings of its own (`worker(slot)`).
        `sharded`: the sharded release (runtime/shardstages.py), with its merge topic."""
        self.settings = self.settings.model_copy(
            update={"scale_out": True, "partials_partitions": partials,
                    "release_sharded": sharded}
        )  # fmt: skip
        topics = {partials_topic(self.settings.group_id, self.pipeline.name): partials}
        if sharded:
            topics[merge_topic(self.settings.group_id, self.pipeline.name)] = partials
        await self.backend.create_topics(topics)

    def worker(self, slot: int, clients: Clients | None = None) -> BatchLoop:
        return self.loop(clients, self.settings.model_copy(update={"instance_id": f"slot-{slot}"}))

    async def released(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for v in await self.backend.read(self.outputs)]

    def assert_exactly_replay(self, records: list[dict[str, Any]]) -> None:
        ids = [r["release_id"] for r in records]
        assert len(ids) == len(set(ids)), "a release was delivered twice"
        expected = replay_events(self.pipeline, self.events)
        assert canonical(records, kinds=KINDS) == canonical(expected, kinds=KINDS), diff_summary(
            records, expected
        )
        assert any(r["kind"] == "aggregate" for r in records)  # not trivially empty


async def make_world(backend: Backend, tmp: Path, n_events: int = 800) -> World:
    suffix = uuid.uuid4().hex[:8]
    doc = yaml.safe_load((ROOT / "pipelines" / "web_activity.yaml").read_text())
    doc["source_topic"] = f"contract.raw.{suffix}"
    doc["outputs"] = [{"name": "default", "topic": f"contract.out.{suffix}"}]
    (tmp / "pipelines").mkdir()
    path = tmp / "pipelines" / "web_activity.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    pipeline = load_pipeline(path)
    dead = f"contract.dead.{suffix}"
    await backend.create_topics(
        {pipeline.source_topic: PARTITIONS, **{t.topic: 1 for t in pipeline.outputs}, dead: 1}
    )
    gen = EventGenerator(Workload(users=40, events_per_second_of_event_time=0.15, seed=7))
    events = [orjson.dumps(ev) for ev in gen.web_events(n_events)]
    spread = [(i % PARTITIONS, v) for i, v in enumerate(events)]
    await backend.produce(pipeline.source_topic, spread)
    settings = Settings(
        bootstrap_servers=backend.bootstrap, group_id=f"contract-{suffix}",
        pipelines_dir=tmp / "pipelines", dead_letter_topic=dead, instance_id="slot-0",
        web_enabled=False,
    )  # fmt: skip
    return World(backend, pipeline, settings, events)


class Faulty:
    """A backend's clients with hooks: `on_begin(n)` before the n-th transaction begins,
    `on_send(n, topic)` before the n-th send; a hook may raise, or wait for something."""

    def __init__(
        self,
        inner: Clients,
        on_begin: Callable[[int], Awaitable[None]] | None = None,
        on_send: Callable[[int, str], None] | None = None,
    ) -> None:
        self.inner, self.on_begin, self.on_send = inner, on_begin, on_send
        self.begins = self.sends = 0

    def consumer(self, settings: Settings) -> Any:
        return self.inner.consumer(settings)

    def producer(self, settings: Settings, transactional_id: str) -> Any:
        return _FaultyProducer(self.inner.producer(settings, transactional_id), self)

    async def committed(self, consumer: Any, partitions: Any) -> Any:
        return await self.inner.committed(consumer, partitions)

    def fetch_state(self, consumer: Any, partition: Any) -> Any:
        return self.inner.fetch_state(consumer, partition)

    def install_fast_fetch(self) -> bool:
        return self.inner.install_fast_fetch()

    def leave_on_stop(self, consumer: Any) -> None:
        self.inner.leave_on_stop(consumer)


class _FaultyProducer:
    def __init__(self, inner: Any, hooks: Faulty) -> None:
        self.inner, self.hooks = inner, hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def begin_transaction(self) -> None:
        self.hooks.begins += 1
        if self.hooks.on_begin is not None:
            await self.hooks.on_begin(self.hooks.begins)
        await self.inner.begin_transaction()

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        self.hooks.sends += 1
        if self.hooks.on_send is not None:
            self.hooks.on_send(self.hooks.sends, topic)
        return await self.inner.send(topic, *args, **kwargs)


def run(backend: Backend, coro: Awaitable[Any]) -> Any:
    """One scenario in its own event loop; the backend's own clients close in it too."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout=180)
        finally:
            await backend.close()

    return asyncio.run(bounded())


class LoopContract:
    """The contract; a subclass provides the `backend` fixture."""

    def test_releases_equal_replay(self, backend: Backend, tmp_path: Path) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            await world.loop().run()
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    def test_a_rebalance_revokes_and_reassigns_and_releases_stay_exact(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            seen: dict[str, Any] = {}

            async def on_begin(n: int) -> None:
                if n == 2:  # mid-stream: one transaction committed, more to come
                    g0 = loop._generation
                    seen["assigned"] = set(loop.assigned)
                    await backend.rebalance(
                        world.settings.group_id,
                        lambda: loop._generation >= g0 + 2 and bool(loop.assigned),
                    )
                    seen["again"] = set(loop.assigned)

            loop = world.loop(Faulty(backend.clients, on_begin=on_begin))
            await loop.run()
            assert seen["assigned"] and seen["again"] == seen["assigned"]
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    def test_an_aborted_upstream_transaction_is_never_counted(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            # The same events again, in a transaction that aborts: counted, they would
            # double every cell; and after it, more committed events.
            aborted = [(i % PARTITIONS, v) for i, v in enumerate(world.events)]
            await backend.produce_aborted(world.pipeline.source_topic, aborted)
            gen = EventGenerator(Workload(users=40, events_per_second_of_event_time=0.15, seed=8))
            more = [orjson.dumps(ev) for ev in gen.web_events(200)]
            await backend.produce(
                world.pipeline.source_topic, [(i % PARTITIONS, v) for i, v in enumerate(more)]
            )
            world.events += more
            await world.loop().run()
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    def test_a_failed_producer_is_replaced_and_releases_stay_exact(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            outputs = set(world.outputs)
            state = {"n": 0, "failed": 0}

            def on_send(n: int, topic: str) -> None:
                if topic in outputs:
                    state["n"] += 1
                    if state["n"] == 5 and not state["failed"]:
                        state["failed"] = 1
                        raise OutOfOrderSequenceNumber()

            loop = world.loop(Faulty(backend.clients, on_send=on_send))
            await loop.run()
            assert state["failed"] == 1 and loop.producer_restarts == 1
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    def test_a_fenced_producer_stops_the_loop_and_its_transaction_is_never_read(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            outputs = set(world.outputs)
            state = {"fenced": False, "sent_after": 0}

            async def on_begin(n: int) -> None:
                if n == 2:
                    await backend.fence(world.settings, loop.transactional_id)
                    state["fenced"] = True

            def on_send(n: int, topic: str) -> None:
                if state["fenced"] and topic in outputs:
                    state["sent_after"] += 1

            loop = world.loop(Faulty(backend.clients, on_begin=on_begin, on_send=on_send))
            with pytest.raises(ProducerFenced):
                await loop.run()
            assert state["fenced"]
            released = await world.released()
            expected = replay_events(world.pipeline, world.events)
            # Only what was committed before the fence: a subset of replay, none twice.
            ids = [r["release_id"] for r in released]
            assert len(ids) == len(set(ids))
            assert set(canonical(released, kinds=KINDS)) <= set(canonical(expected, kinds=KINDS))
            assert len(canonical(released, kinds=KINDS)) < len(canonical(expected, kinds=KINDS))

        run(backend, scenario())

    def test_a_crash_then_a_restart_from_the_checkpoints_releases_exactly_replay(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            outputs = set(world.outputs)
            state = {"released": 0}

            def on_send(n: int, topic: str) -> None:
                if topic in outputs:
                    state["released"] += 1

            async def on_begin(n: int) -> None:
                if state["released"]:  # a transaction with releases has committed
                    raise Crash()

            first = world.loop(Faulty(backend.clients, on_begin=on_begin, on_send=on_send))
            with pytest.raises(Crash):
                await first.run()
            before = await world.released()
            assert before, "the crash came before any release was committed"
            await world.loop().run()  # the restart: same group, same transactional id
            after = await world.released()
            assert len(after) > len(before)  # open windows were rebuilt and released
            world.assert_exactly_replay(after)

        run(backend, scenario())

    # -- scale-out with --stop-at-end: the same contract, over the partials topic ------------
    @pytest.mark.parametrize("sharded", [False, True], ids=["by-window", "sharded"])
    def test_scale_out_one_worker_releases_exactly_replay(
        self, backend: Backend, tmp_path: Path, sharded: bool
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            await world.scale_out(sharded=sharded)
            await world.worker(0).run()
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    @pytest.mark.parametrize("sharded", [False, True], ids=["by-window", "sharded"])
    def test_scale_out_two_workers_release_exactly_replay_and_both_end(
        self, backend: Backend, tmp_path: Path, sharded: bool
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            await world.scale_out(sharded=sharded)
            a, b = world.worker(0), world.worker(1)
            await asyncio.gather(a.run(), b.run())  # both return: each saw its end
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    @pytest.mark.parametrize("sharded", [False, True], ids=["by-window", "sharded"])
    def test_scale_out_a_worker_that_owns_nothing_still_ends(
        self, backend: Backend, tmp_path: Path, sharded: bool
    ) -> None:
        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            await world.scale_out(partials=1, sharded=sharded)  # 2 raw + 1 partials, 4 workers
            await asyncio.gather(*(world.worker(i).run() for i in range(4)))
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())

    @pytest.mark.parametrize("sharded", [False, True], ids=["by-window", "sharded"])
    @pytest.mark.parametrize("when", ["mid_input", "at_the_first_release"])
    def test_scale_out_a_crash_then_a_restart_releases_exactly_replay(
        self, backend: Backend, tmp_path: Path, when: str, sharded: bool
    ) -> None:
        """The worker dies after its first committed transaction (part of the input read,
        its partials committed), or when it sends its first release (all partials and end
        marks committed, nothing released): a restart, with a second worker beside it,
        releases exactly replay. End marks and checkpoints carry over to whoever owns each
        partition then."""

        async def scenario() -> None:
            world = await make_world(backend, tmp_path)
            await world.scale_out(sharded=sharded)
            world.settings = world.settings.model_copy(update={"batch_max": 50})
            outputs = set(world.outputs)

            def on_send(n: int, topic: str) -> None:
                if when == "at_the_first_release" and topic in outputs:
                    raise Crash()

            async def on_begin(n: int) -> None:
                if when == "mid_input" and n == 2:
                    raise Crash()

            first = world.worker(0, Faulty(backend.clients, on_begin=on_begin, on_send=on_send))
            with pytest.raises(Crash):
                await first.run()  # it closes its clients: the crashed member leaves
            assert await world.released() == []
            await asyncio.gather(world.worker(0).run(), world.worker(1).run())
            world.assert_exactly_replay(await world.released())

        run(backend, scenario())
