"""The batched Kafka loop: getmany, engine, transactional delivery with the offsets.

Why not a per-event Faust stream: every event through Faust's stream machinery costs more
than reading and decoding it (see docs/benchmarks.md), so the hot path takes whole fetches
with the consumer's getmany and hands them to the engine as one batch.

Crash safety without a state store: each transaction carries the releases of a batch AND
the consumer offsets, committed atomically. The committed offset of a partition is not the
position reached but the first offset of the oldest window still open, so a restart
re-reads exactly what it needs to rebuild open windows. The offset's metadata carries the
checkpoint (which windows are already released, how far the partition was read, its pending
counters), so replayed events of released windows are neither released again nor counted
twice. Consumers reading with isolation_level=read_committed see each release exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from anonstream.core.budget import Ledger, ledgers
from anonstream.core.engine import DeadLetter, PipelineEngine, StepResult
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.kafka_compat import committed_with_metadata, raw_records
from anonstream.runtime.kafka_compat import install as install_raw_records
from anonstream.runtime.ledger import KafkaLedgerStore, ledger_topic
from anonstream.runtime.quiet import Silence, fetch_state
from anonstream.runtime.scaleout import (
    IngestStage,
    ReleaseStage,
    StagesView,
    mark_busy,
    partials_topic,
)
from anonstream.runtime.startup import Deadlines, StartupError, missing_topics_message
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")

COMMIT_INTERVAL_S = 1.0
MAX_PRODUCER_RESTARTS = 5  # within 5 minutes; past that the worker exits (1)
GC_THRESHOLD = 100_000
TICK_INTERVAL_S = 1.0
MISSING_TOPICS_CHECK_S = 2.0
MISSING_TOPICS_SAY_S = 10.0
LATE_WARN_FRACTION = 0.5  # a batch mostly too late for its windows: say so,
LATE_WARN_INTERVAL_S = 60.0  # at most once a minute per pipeline


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.loop.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.loop.on_assigned(list(assigned))


class BatchLoop:
    """Consumes the raw topics of all pipelines and drives their engines."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Sequence[Pipeline],
        secret: MasterSecret,
        metrics: Metrics,
        *,
        stop_at_end: bool = False,
        prepare: Callable[[], None] | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.settings = settings
        self.deadlines = deadlines  # start-up phases, for a bounded start
        self.missing_topics: list[str] = []
        self._late_said: dict[str, float] = {}
        self.prepare = prepare  # blocking set-up (topic creation) run beside start()
        self.metrics = metrics
        self.stop_at_end = stop_at_end
        self.pipelines = list(pipelines)
        self.secret = secret
        # dp pipelines: their budget's ledger, on a topic written in the release transaction
        self.ledger = (
            KafkaLedgerStore(ledger_topic(settings.group_id))
            if any(p.dp_budget is not None for p in pipelines)
            else None
        )
        if self.ledger is not None and settings.scale_out:
            # Windows of one period would be released by several workers, each spending
            # the budget on its own ledger view.
            raise ValueError("dp outputs run in single mode only (ANONSTREAM_SCALE_OUT=false)")
        self._build_engines()
        self.raw_topics = {p.source_topic for p in pipelines}
        self.outputs = {(p.name, o.name): o.topic for p in pipelines for o in p.outputs}
        self.misconfigured: str | None = None
        instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.transactional_id = f"anonstream-{settings.group_id}-{instance}"
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.assigned: set[TopicPartition] = set()
        self.end_offsets: dict[TopicPartition, int] = {}
        self.consuming = False
        self.silence = Silence()  # Kafka's evidence of silent partitions: see quiet.py
        self._stopping = asyncio.Event()
        self._generation = 0
        self._reset_needed = False
        self._awaiting_assignment = True
        self._commit_idle = asyncio.Event()
        self._commit_idle.set()
        self._in_txn = False
        self._dirty = False
        self._last_commit = 0.0
        self._last_tick = 0.0
        self._producer_failures: list[float] = []
        self.producer_restarts = 0
        self.done = asyncio.Event()

    def _build_engines(self) -> None:
        """Fresh engines. A stage reads one topic: in single mode the engine itself (raw
        topic in, releases out); in scale-out mode an ingest stage (raw in, partials out)
        and a release stage (partials in, releases out) per pipeline."""
        settings, secret = self.settings, self.secret
        idle_ms = 0 if self.stop_at_end else int(settings.idle_close_seconds * 1000)
        self.engines: dict[str, Any] = {}
        views: dict[str, Any] = {}
        # One Ledger per budget: pipelines sharing a named budget spend it together.
        self._ledgers = ledgers(self.pipelines, self.ledger) if self.ledger is not None else {}
        for p in self.pipelines:
            if settings.scale_out:
                topic = partials_topic(settings.group_id, p.name)
                ingest = IngestStage(PipelineEngine(p, secret), topic, settings.partials_partitions)
                release = ReleaseStage(
                    partial(
                        PipelineEngine, p, secret, idle_close_ms=idle_ms, ledger=self._ledger(p)
                    ),
                    p,
                    topic,
                    settings.partials_partitions,
                )
                self.engines[f"{p.name}/ingest"] = ingest
                self.engines[f"{p.name}/release"] = release
                views[p.name] = StagesView(ingest, release)
            else:
                self.engines[p.name] = views[p.name] = PipelineEngine(
                    p, secret, idle_close_ms=idle_ms, ledger=self._ledger(p)
                )
        self.by_topic: dict[str, list[Any]] = defaultdict(list)
        for e in self.engines.values():
            self.by_topic[e.input_topic].append(e)
        self.metrics.bind_engines(views)

    def _ledger(self, p: Pipeline) -> Ledger | None:
        return self._ledgers.get(p.name)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        client = s.kafka_client_options()
        self.metrics.fetch_fallback.set(0 if install_raw_records() else 1)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=s.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",  # never count an upstream aborted write
            max_poll_records=s.batch_max, fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024, client_id=f"anonstream-{s.group_id}",
            value_deserializer=raw_records,  # offset and value only: see kafka_compat.py
            group_instance_id=s.instance_id if s.static_membership else None,  # see Settings
            **client,
        )  # fmt: skip
        self.producer = self._new_producer()
        self._phase("connecting the consumer and the transactional producer")
        # Both clients connect (and the producer registers its transactional id) at once.
        await asyncio.gather(self.producer.start(), self.consumer.start())
        await self._wait_for_topics()
        if self.missing_topics:
            return  # stopped while waiting: subscribing would let the broker auto-create them
        self._phase("joining the consumer group")
        self.consumer.subscribe(list(self.by_topic), listener=_Rebalance(self))

    def _phase(self, name: str) -> None:
        if self.deadlines is not None:
            self.deadlines.phase(name)

    async def _wait_for_topics(self) -> None:
        """A subscription to a missing topic finds it only at the next metadata refresh
        (5 minutes): wait until every input topic exists, saying which do not."""
        assert self.consumer is not None
        said = 0.0
        while not self._stopping.is_set():
            self.missing_topics = sorted(set(self.by_topic) - await self.consumer.topics())
            if not self.missing_topics:
                return
            message = missing_topics_message(self.missing_topics)
            if self.settings.exit_on_missing_topics:
                raise StartupError(message)
            if self.deadlines is not None:
                self.deadlines.pause()  # the operator has been told; not a hang
            if time.monotonic() - said >= MISSING_TOPICS_SAY_S:
                said = time.monotonic()
                log.warning("%s; waiting for them", message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), MISSING_TOPICS_CHECK_S)

    def _new_producer(self) -> AIOKafkaProducer:
        s = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, transactional_id=self.transactional_id,
            enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024, **s.kafka_client_options(),
        )  # fmt: skip

    async def _replace_producer(self, exc: KafkaError) -> None:
        """A producer whose transaction broke (a produce request that timed out and left
        its sequence numbers behind, an expired batch, a lost producer id) cannot go on.
        Rather than exit, start a new one with the same transactional id, which aborts the
        open transaction on the broker, and resume from the last commit as after a
        rebalance: re-read rows rebuild state, and the aborted releases are made again,
        the same. Too many in a short time is a real fault: give up (exit 1)."""
        now = time.monotonic()
        self._producer_failures = [t for t in self._producer_failures if now - t < 300] + [now]
        if len(self._producer_failures) > MAX_PRODUCER_RESTARTS:
            raise exc
        log.warning(
            "the producer failed (%s); restarting it and resuming from the last commit",
            type(exc).__name__,
        )
        old, self.producer = self.producer, None
        self._in_txn = False
        self._dirty = False
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        self.producer = self._new_producer()
        await self.producer.start()
        self.producer_restarts += 1
        self.metrics.producer_restarts.inc()
        self._reset_needed = True

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        try:
            if self.producer is not None and self._in_txn:
                await self.producer.abort_transaction()
                self._in_txn = False
        finally:
            if self.consumer is not None:
                await self.consumer.stop()
            if self.producer is not None:
                await self.producer.stop()

    # -- rebalance -------------------------------------------------------------------------
    # A rebalance is handled as a restart from the last checkpoint: the callbacks only
    # flag it (they run beside the loop, which may be inside a transaction), and the loop
    # aborts its open transaction, builds fresh engines and re-reads from the committed
    # offsets. Re-read rows are idempotent (duplicates drop by keyed event hash) and
    # checkpoints keep released windows from being released again.
    async def on_assigned(self, tps: list[TopicPartition]) -> None:
        assert self.consumer is not None
        self.assigned = set(tps)
        self._awaiting_assignment = False
        if self.deadlines is not None:
            self.deadlines.started()
        self._generation += 1
        self._reset_needed = True
        if self.stop_at_end:
            self.end_offsets.update(await self.consumer.end_offsets(tps))
        log.info("assigned %s", ", ".join(f"{t.topic}/{t.partition}" for t in sorted(tps)))

    async def on_revoked(self, tps: list[TopicPartition]) -> None:
        self._awaiting_assignment = True  # (also called, with nothing, before the first join)
        self._generation += 1
        self._reset_needed = True
        await self._commit_idle.wait()  # a commit already on its way finishes first
        self.assigned -= set(tps)
        for tp in tps:
            self.silence.forget((tp.topic, tp.partition))

    async def _reset(self) -> None:
        """Back to the last checkpoint of every assigned partition."""
        assert self.consumer is not None and self.producer is not None
        self._reset_needed = False
        if self._in_txn:
            await self.producer.abort_transaction()
            self._in_txn = False
        if self.ledger is not None:
            self.ledger.abort()
        self._dirty = False
        self._build_engines()
        self._check_single_mode()
        for stage in self.engines.values():
            if isinstance(stage, ReleaseStage):
                parts = self.consumer.partitions_for_topic(stage.pipeline.source_topic) or set()
                stage.sources = [(stage.pipeline.source_topic, p) for p in sorted(parts)]
        self.assigned &= self.consumer.assignment()
        tps = sorted(self.assigned)
        committed = await committed_with_metadata(self.consumer, tps)
        for tp in tps:
            meta = committed.get(tp)
            key = (tp.topic, tp.partition)
            for engine in self.by_topic.get(tp.topic, []):
                if meta is not None and meta.metadata:
                    try:
                        checkpoint = orjson.loads(meta.metadata).get(engine.pipeline.name)
                    except orjson.JSONDecodeError:
                        checkpoint = None
                    if checkpoint:
                        engine.restore(key, checkpoint)
                engine.assign([key])
            # Records fetched before the reset are dropped: read them again.
            try:
                if meta is not None and meta.offset >= 0:
                    self.consumer.seek(tp, meta.offset)
                else:
                    await self.consumer.seek_to_beginning(tp)
            except IllegalStateError:  # revoked meanwhile: another rebalance is on its way
                self._reset_needed = True
                return

    def _check_single_mode(self) -> None:
        """In single mode one worker must own every raw partition: k is checked on what
        this worker sees, which is everything only then."""
        if self.settings.scale_out or self.consumer is None or self._awaiting_assignment:
            return  # an assignment still on its way is no evidence of anything
        for topic in self.raw_topics:
            total = self.consumer.partitions_for_topic(topic) or set()
            mine = {tp.partition for tp in self.assigned if tp.topic == topic}
            if total and mine != total:
                self.misconfigured = (
                    f"this worker owns {len(mine)} of {len(total)} partitions of {topic}: "
                    "several workers share the group, and a k checked per worker would be "
                    "wrong. Run one worker per group, or set ANONSTREAM_SCALE_OUT=true on all."
                )

    # -- main loop -------------------------------------------------------------------------
    async def run(self) -> None:
        # A fetch allocates a record object per message and the batch path a few short-lived
        # lists per field: with the default threshold (700) the cycle collector runs every
        # few hundred messages and rescans the long-lived caches. Objects of the start-up
        # are frozen out of its scans, and it runs less often; cycles are still collected.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 50)
        prepared = asyncio.ensure_future(asyncio.to_thread(self.prepare)) if self.prepare else None
        try:
            try:
                await self.start()
            finally:
                if prepared is not None:
                    await prepared  # releases may go out only once their topics exist
            if self.ledger is not None:  # what the budget has spent, before any release
                await self.ledger.read(
                    self.settings.bootstrap_servers, self.settings.kafka_client_options()
                )
                self._reset_needed = True  # engines are rebuilt on the charges just read
            await self._loop()
        finally:
            try:
                await self.close()
            finally:
                self.done.set()  # also after a failed start: a stop waits for this

    async def _loop(self) -> None:
        assert self.consumer is not None
        s = self.settings
        self._last_tick = time.monotonic()
        while not self._stopping.is_set():
            if self.misconfigured:
                raise RuntimeError(self.misconfigured)
            if self._reset_needed:
                await self._reset()
                continue
            generation = self._generation
            data = await self.consumer.getmany(
                timeout_ms=int(s.batch_within_seconds * 1000), max_records=s.batch_max
            )
            if self._reset_needed or generation != self._generation:
                continue  # fetched across a rebalance: the reset reads it again
            try:
                if await self._step(data):
                    return
            except KafkaError as exc:
                if isinstance(exc, _FATAL):
                    raise
                await self._replace_producer(exc)

    async def _step(self, data: dict[TopicPartition, list[Any]]) -> bool:
        """One fetch through the engines, then ticks and commits; True at the end of a
        backfill. The Kafka calls in here are the producer's (and the consumer's position,
        which fails only across a rebalance, itself a restart from the last commit)."""
        self._note_silence()
        if data:
            self.consuming = True
            await self._process(data)
        now = time.monotonic()
        if now - self._last_tick >= TICK_INTERVAL_S:
            self._last_tick = now
            self._update_lag()
            self._note_silence()
            for engine in self.engines.values():
                await self._deliver(engine, engine.tick())
        if self.stop_at_end and await self._at_end():
            for engine in self.engines.values():
                await self._deliver(engine, engine.close_all())
            await self._commit(force=True)
            log.info("reached the end offsets; every window released")
            return True
        await self._commit()
        return False

    def _update_lag(self) -> None:
        """Messages behind the end of each partition, from the fetch's high watermarks."""
        assert self.consumer is not None
        lag = {}
        for tp in self.assigned:
            fs = fetch_state(self.consumer, tp)
            if fs.highwater is not None and fs.position is not None:
                lag[(tp.topic, tp.partition)] = max(0, fs.highwater - fs.position)
        self.metrics.lag = lag

    def _note_silence(self) -> None:
        """Tell the engines which raw partitions Kafka has shown silent, and for how long;
        every other partition (data waiting, or not known yet) is busy (see mark_busy)."""
        assert self.consumer is not None
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            span = self.silence.update(key, fetch_state(self.consumer, tp))
            for engine in self.by_topic.get(tp.topic, []):
                if span is None:
                    mark_busy(engine, key)
                elif isinstance(engine, PipelineEngine):
                    engine.silent(key, *span)

    async def _at_end(self) -> bool:
        assert self.consumer is not None
        if not self.end_offsets or not self.assigned:
            return False
        for tp in self.assigned:
            if await self.consumer.position(tp) < self.end_offsets.get(tp, 0):
                return False
        return True

    async def _process(self, data: dict[TopicPartition, list[Any]]) -> None:
        # Columns straight from the fetch: no object per message on the hot path.
        by_topic: dict[str, tuple[list[bytes], list[int], list[int], list[Any]]] = {}
        for tp, msgs in data.items():
            values, pidx, offsets, parts = by_topic.setdefault(tp.topic, ([], [], [], []))
            vals = list(map(_value, msgs))
            if None in vals:  # tombstones: not JSON, dead-lettered like any other
                vals = [v or b"" for v in vals]
            values.extend(vals)
            offsets.extend(map(_offset, msgs))
            pidx.extend([len(parts)] * len(msgs))
            parts.append((tp.topic, tp.partition))
        for topic, (values, pidx, offsets, parts) in by_topic.items():
            pidx_a = np.array(pidx, dtype=np.int64)
            offs_a = np.array(offsets, dtype=np.int64)
            for engine in self.by_topic.get(topic, []):
                name = engine.pipeline.name
                late = _late(engine)
                with self.metrics.batch_timer(name):
                    step = engine.process_batch(values, pidx_a, parts, offs_a)
                    await self._deliver(engine, step)
                self.metrics.observe_batch(name, len(values), step)
                self._warn_if_late(name, _late(engine) - late, len(values))
        self._dirty = True

    def _warn_if_late(self, pipeline: str, late: int, n: int) -> None:
        """Events for windows already released are counted, not lost silently: a batch
        that is mostly such events (old data replayed, a generator started in the past)
        is worth a line in the log."""
        if n == 0 or late < LATE_WARN_FRACTION * n:
            return
        now = time.monotonic()
        if now - self._late_said.get(pipeline, -LATE_WARN_INTERVAL_S) < LATE_WARN_INTERVAL_S:
            return
        self._late_said[pipeline] = now
        log.warning(
            "%s: %d of %d events in a batch came after their window was released and were "
            "counted as late, not aggregated (old event times? see anonstream_events_late_total)",
            pipeline, late, n,
        )  # fmt: skip

    async def _begin(self) -> None:
        assert self.producer is not None
        if not self._in_txn:
            await self.producer.begin_transaction()
            self._in_txn = True

    async def _deliver(self, engine: Any, step: StepResult) -> None:
        if not step.releases and not step.dead_letters and not step.forward:
            return
        assert self.producer is not None
        await self._begin()
        p = engine.pipeline
        futures = []
        for topic, partition, key, value in step.forward:
            futures.append(
                await self.producer.send(topic, value, key=key or None, partition=partition)
            )
        for rec in step.releases:
            topic = self.outputs[(p.name, rec["output"])]
            futures.append(await self.producer.send(
                topic, orjson.dumps(rec), key=rec["release_id"].encode()
            ))  # fmt: skip
        if self.ledger is not None:  # the charges of this step's windows, same transaction
            for key, value in self.ledger.drain():
                futures.append(await self.producer.send(self.ledger.topic, value, key=key))
        for dl in step.dead_letters:
            futures.append(await self.producer.send(
                self.settings.dead_letter_topic, dl.value, headers=_dl_headers(p, dl)
            ))  # fmt: skip
            log.warning(
                "rejected message %s offset %s: %s%s", _where(dl), dl.offset, dl.reason,
                f" ({dl.field})" if dl.field else "",
            )  # fmt: skip
        if futures:
            await asyncio.gather(*futures)
        self._dirty = True
        if step.releases:
            self.metrics.observe_batch(p.name, 0, step)
            n = sum(1 for r in step.releases if r["kind"] == "aggregate")
            log.info("%s: released %d aggregates", p.name, n)
            await self._commit(force=True)

    async def _commit(self, force: bool = False) -> None:
        """Offsets and checkpoints, in the same transaction as the releases before them."""
        if not self._dirty or self.producer is None or self.consumer is None:
            return
        if self._reset_needed:
            return  # a rebalance came: this transaction will be aborted
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_INTERVAL_S:
            return
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            engines = self.by_topic.get(tp.topic, [])
            safe = [o for e in engines if (o := e.safe_offset(key)) is not None]
            if not safe:
                continue
            meta = orjson.dumps({e.pipeline.name: e.checkpoint(key) for e in engines}).decode()
            offsets[tp] = OffsetAndMetadata(min(safe), meta)
        if not offsets and not self._in_txn:
            return
        await self._begin()
        self._commit_idle.clear()
        try:
            if offsets:
                await self.producer.send_offsets_to_transaction(offsets, self.settings.group_id)
            await self.producer.commit_transaction()
            if self.ledger is not None:
                self.ledger.committed()
        finally:
            self._commit_idle.set()
        self._in_txn = False
        self._dirty = False
        self._last_commit = now


_value, _offset = attrgetter("value"), attrgetter("offset")


def _late(engine: Any) -> int:
    counters = getattr(engine, "counters", None)  # scale-out stages decide lateness later
    return int(counters["late"]) if counters is not None else 0


# Another worker took over this slot (a zombie must stop), or the broker says no: a new
# producer would not help.
_FATAL = (
    ProducerFenced,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


def _where(dl: DeadLetter) -> str:
    if isinstance(dl.partition, tuple):
        return f"{dl.partition[0]}/{dl.partition[1]}"
    return str(dl.partition)


def _dl_headers(pipeline: Pipeline, dl: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("anonstream.reason", dl.reason.encode()),
        ("anonstream.field", (dl.field or "").encode()),
        ("anonstream.pipeline", pipeline.name.encode()),
        ("anonstream.source", f"{_where(dl)}/{dl.offset}".encode()),
    ]
