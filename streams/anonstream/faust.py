"""A pipeline inside a Faust app of your own: an agent on the raw topic, batched with
``noack_take``, releasing through the same `PipelineEngine` as the worker, in the same
output format (docs/faust.md).

    app = faust.App("shop", broker="kafka://127.0.0.1:9092")
    anonymize(app, load_pipeline("pipelines/web_activity.yaml"), load_secret())

What it owns: the engine of one pipeline in this process, the acks of the raw events it
has read, and a compacted checkpoint topic of its own. What it does not have: the worker's
transactions. Faust commits the offsets of acked events outside any transaction, so the
guarantee after a crash is at least once (docs/faust.md#after-a-crash):

- an event is acked only once every window it is in has been released and the releases
  and a checkpoint after them are on the broker, so the committed offset never passes
  the start of an open window (no event is lost);
- a restart re-reads from the committed offset, restores the checkpoint (which windows
  are released, what was counted) and releases again, with the same ``release_id`` and
  the same content, any window released after that checkpoint. Readers drop a repeated
  ``release_id`` (the output contract asks them to in any case).

Like the worker in single mode, one agent must own every partition of its raw topic (k
is checked on what one engine sees): it stops the app otherwise. A rebalance of the
app's group starts the pipeline over from its checkpoints. dp outputs are not supported
here: their budget ledger needs the worker's transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from anonstream.core.checkpoint import Checkpoint, CheckpointError
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.core.step import Batch, StepResult
from anonstream.runtime.topic_end import read_to_end
from anonstream.runtime.transactions import dead_letter_headers

__all__ = ["FaustPipeline", "PartitionsSplit", "anonymize", "checkpoint_topic"]

log = logging.getLogger("anonstream.faust")

TICK_S = 1.0  # how often windows are closed on idle input and rebalances noticed


class PartitionsSplit(RuntimeError):
    """The agent does not own every partition of its raw topic."""


def checkpoint_topic(app_id: str, pipeline: str) -> str:
    return f"{app_id}-anonstream-{pipeline}-checkpoints"


def _key(tp: Any) -> tuple[str, int]:
    return (tp.topic, tp.partition)


class FaustPipeline:
    """One pipeline as an agent of `app`; see the module's docstring and `anonymize`."""

    def __init__(
        self,
        app: Any,
        pipeline: Pipeline,
        secret: MasterSecret,
        *,
        take: int = 5000,
        within: float = 0.5,
        idle_close_seconds: float = 300.0,
        dead_letter_topic: str | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if pipeline.dp_budget is not None or any(o.privacy == "dp" for o in pipeline.outputs):
            raise ValueError(
                f"{pipeline.name}: dp outputs need the worker's transactional budget ledger; "
                "run `anonstream worker` for this pipeline"
            )
        self.app = app
        self.pipeline = pipeline
        self.secret = secret
        self.take = take
        self.within = within
        self.idle_close_ms = int(idle_close_seconds * 1000)
        self.client_options = dict(client_options or {})
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(pipeline.source_topic, key_type=bytes, value_type=bytes, **raw)
        self.outputs = {o.name: app.topic(o.topic, **raw) for o in pipeline.outputs}
        self.dead_letters = app.topic(dead_letter_topic, **raw) if dead_letter_topic else None
        self.checkpoints = app.topic(
            checkpoint_topic(app.conf.id, pipeline.name), partitions=1, compacting=True,
            internal=True, **raw,
        )  # fmt: skip
        self.engine: PipelineEngine | None = None
        self._generation: int | None = None
        self._held: dict[tuple[str, int], deque[Any]] = {}  # events read, not yet acked
        self._next: dict[tuple[str, int], int] = {}  # offset after the last event read
        self._caught_up: dict[tuple[str, int], int] = {}  # since when (ms) nothing unread
        self._stream: Any = None
        self.events_read = 0  # since this process started, re-reads included
        self._lock: asyncio.Lock | None = None
        self.agent = app.agent(self.source, name=f"anonstream-{pipeline.name}")(self._consume)
        app.timer(TICK_S)(self._tick)

    # -- the agent -------------------------------------------------------------------------
    async def _consume(self, stream: Any) -> None:
        self._stream = stream
        async for events in stream.noack_take(self.take, within=self.within):
            async with self._locked():
                engine = await self._current_engine()
                values: list[bytes] = []
                parts: list[tuple[str, int]] = []
                index: dict[tuple[str, int], int] = {}
                pidx: list[int] = []
                offs: list[int] = []
                for event in events:
                    msg = event.message
                    key = (msg.topic, msg.partition)
                    if key not in index:
                        index[key] = len(parts)
                        parts.append(key)
                    pidx.append(index[key])
                    offs.append(msg.offset)
                    values.append(msg.value or b"")
                    self._held.setdefault(key, deque()).append(event)
                    self._next[key] = msg.offset + 1
                    self._caught_up.pop(key, None)
                self.events_read += len(events)
                batch = Batch(
                    values, np.array(pidx, dtype=np.int64), list(parts),
                    np.array(offs, dtype=np.int64),
                )  # fmt: skip
                step = engine.process_batch(batch)
                await self._deliver(engine, step)

    async def _tick(self) -> None:
        """Idle close, and letting go of held events while the app rebalances (Faust waits
        for every event it handed out before it gives partitions up)."""
        if self.engine is None:
            return
        if not self.app.flow_control.is_active():
            if not self._locked().locked():  # else the next tick
                self._reset()
            return
        async with self._locked():
            engine = self.engine
            if engine is None:
                return
            now = engine.clock_ms()
            for tp in self._assigned():
                key = _key(tp)
                position = await self.app.consumer.position(tp)
                highwater = self.app.consumer.highwater(tp)
                read = self._next.get(key, position)
                if position is None or highwater is None or read < max(position, highwater):
                    self._caught_up.pop(key, None)
                    continue
                since = self._caught_up.setdefault(key, now)
                engine.silent(key, since, now)
            await self._deliver(engine, engine.tick())

    async def release_all(self) -> None:
        """End of input (a backfill, a benchmark): release every open window now, as the
        worker's --stop-at-end does, and ack what was read."""
        async with self._locked():
            if self.engine is not None:
                await self._deliver(self.engine, self.engine.close_all())

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _reset(self) -> None:
        """Drop the engine and the held events (unacked, so read again)."""
        self.engine = None
        self._generation = None
        self._held.clear()
        self._next.clear()
        self._caught_up.clear()

    def _assigned(self) -> list[Any]:
        topic = self.source.get_topic_name()
        mine = (tp for tp in self.app.consumer.assignment() if tp.topic == topic)
        return sorted(mine, key=lambda tp: tp.partition)

    async def _current_engine(self) -> PipelineEngine:
        """The engine of the consumer's current generation: a new generation (the first
        assignment, a rebalance) starts over from the checkpoints."""
        generation = self.app.consumer_generation_id
        if self.engine is not None and generation == self._generation:
            return self.engine
        self._reset()
        assigned = self._assigned()
        total = self.app.consumer.topic_partitions(self.source.get_topic_name())
        if total is not None and len(assigned) < total:
            raise PartitionsSplit(
                f"{self.pipeline.name}: this app owns {len(assigned)} of {total} partitions of "
                f"its raw topic; k is checked on what one engine sees, so one instance must "
                "own them all (docs/faust.md)"
            )
        engine = PipelineEngine(self.pipeline, self.secret, idle_close_ms=self.idle_close_ms)
        keys = [_key(tp) for tp in assigned]
        engine.assign(keys)
        saved = await self._read_checkpoints()
        for key in keys:
            if (cp := saved.get(key)) is not None:
                engine.restore(key, cp)
        self.engine, self._generation = engine, generation
        log.info("%s: %d partitions, %d checkpoints", self.pipeline.name, len(keys), len(saved))
        return engine

    async def _read_checkpoints(self) -> dict[tuple[str, int], Checkpoint]:
        await self.checkpoints.maybe_declare()
        hosts = ",".join(str(url).split("://", 1)[-1] for url in self.app.conf.broker)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=hosts, enable_auto_commit=False, isolation_level="read_committed",
            **self.client_options,
        )  # fmt: skip
        await consumer.start()
        saved: dict[tuple[str, int], Checkpoint] = {}
        try:
            tps = [TopicPartition(self.checkpoints.get_topic_name(), 0)]
            async for _, records in read_to_end(consumer, tps, timeout=60.0):
                for r in records:
                    key, cp = read_checkpoint_record(r.key, r.value, r.offset)
                    if cp is None:
                        saved.pop(key, None)  # a tombstone: that checkpoint was deleted
                    else:
                        saved[key] = cp
        finally:
            await consumer.stop()
        return saved

    # -- releases, checkpoints, acks -------------------------------------------------------
    async def _deliver(self, engine: PipelineEngine, step: StepResult) -> None:
        """Releases and rejects on the broker, then a checkpoint per partition whose safe
        offset moved, then the acks of the events before it: in that order, so Faust never
        commits past an event whose window is not out."""
        futures = []
        for rec in step.releases:
            topic = self.outputs[rec["output"]]
            key = rec["release_id"].encode()
            futures.append(await topic.send(key=key, value=orjson.dumps(rec)))
        for dl in step.dead_letters:
            if self.dead_letters is not None:
                headers = dead_letter_headers(self.pipeline, dl)
                futures.append(await self.dead_letters.send(value=dl.value, headers=headers))
        if futures:
            await asyncio.gather(*futures)
        if self.engine is not engine:
            return  # a rebalance reset the pipeline meanwhile: nothing of it is acked
        if step.releases:
            n = sum(1 for r in step.releases if r["kind"] == "aggregate")
            log.info("%s: released %d aggregates", self.pipeline.name, n)
        acks: dict[tuple[str, int], int] = {}
        for key, held in self._held.items():
            safe = engine.safe_offset(key)
            if safe is None:
                safe = self._next.get(key)
            if safe is not None and held and held[0].message.offset < safe:
                acks[key] = safe
        if not acks:
            return
        saved = []
        for key, safe in acks.items():
            value = orjson.dumps({**engine.checkpoint(key).to_json(), "offset": safe})
            topic_key = f"{key[0]}/{key[1]}".encode()
            saved.append(await self.checkpoints.send(key=topic_key, value=value))
        await asyncio.gather(*saved)
        if self.engine is not engine:
            return
        for key, safe in acks.items():
            held = self._held[key]
            while held and held[0].message.offset < safe:
                await self._stream.ack(held.popleft())


def read_checkpoint_record(
    key: bytes | None, value: bytes | None, offset: int
) -> tuple[tuple[str, int], Checkpoint | None]:
    """One record of the checkpoint topic: the raw partition it is about and its
    checkpoint (None: a tombstone). A record this agent did not write stops the agent with
    a CheckpointError that names its offset, never its content: starting without it
    could release a window a second time with other events in it."""
    try:
        topic, _, partition = (key or b"").decode().rpartition("/")
        where = (topic, int(partition))
        if not topic:
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(
            f"checkpoint topic, offset {offset}: a key that is not <topic>/<partition>"
        ) from None
    if value is None:
        return where, None
    try:
        doc = orjson.loads(value)
        if not isinstance(doc, dict):
            raise CheckpointError("not a JSON object")
        return where, Checkpoint.from_json(doc)
    except (orjson.JSONDecodeError, CheckpointError) as exc:
        reason = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
        raise CheckpointError(f"checkpoint topic, offset {offset}: {reason}") from None


def anonymize(app: Any, pipeline: Pipeline, secret: MasterSecret, **options: Any) -> FaustPipeline:
    """Run `pipeline` in `app` as an agent on its raw topic (options: see FaustPipeline).
    Call before the app starts, once per pipeline."""
    return FaustPipeline(app, pipeline, secret, **options)
