"""The batched Kafka loop: getmany, engine, transactional delivery with the offsets.

Why not a per-event Faust stream: every event through Faust's stream machinery costs more
than reading and decoding it (see docs/benchmarks.md), so the hot path takes whole fetches
with the consumer's getmany and hands them to the engine as one batch.

Crash safety without a state store: each transaction (runtime/transactions.py) carries
the releases of a batch AND the consumer offsets. The committed offset of a partition is
not the position reached but the first offset of the oldest window still open, so a
restart re-reads exactly what it needs to rebuild open windows; the offset's metadata
carries the stages' checkpoints (core/checkpoint.py), so replayed events of released
windows are neither released again nor counted twice. The loop only moves batches between
Kafka and its stages (core/stage.py); its clients come from runtime/clients.py, or from the
in-memory broker in the contract tests (tests/contract/).

Why this module is long: the loop's lifecycle, rebalance, reset and commit steps share
its state (assignment, generation, open transaction) and are kept together with the two
ends of a backfill (single mode's end offsets, scale-out's end marks).
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
from operator import attrgetter
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from anonstream.core.budget import Ledger, check_scale_out_budgets, ledgers
from anonstream.core.checkpoint import decode_checkpoints, encode_checkpoints
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.core.stage import Stage
from anonstream.core.step import Batch, StepResult
from anonstream.metrics import Metrics
from anonstream.runtime.clients import Clients, Consumer, KafkaClients, Rebalance
from anonstream.runtime.ledger import KafkaLedgerStore, legacy_ledger_topic
from anonstream.runtime.quiet import Silence
from anonstream.runtime.scaleout import IngestStage, ReleaseStage, StagesView
from anonstream.runtime.shardstages import MergeStage, scale_out_stages
from anonstream.runtime.startup import Deadlines, StartupError, missing_topics_message
from anonstream.runtime.transactions import FATAL, Transactions
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")

COMMIT_INTERVAL_S = 1.0
GC_THRESHOLD = 100_000
TICK_INTERVAL_S = 1.0
MISSING_TOPICS_CHECK_S = 2.0
MISSING_TOPICS_SAY_S = 10.0
LATE_WARN_FRACTION = 0.5  # a batch mostly too late for its windows: say so,
LATE_WARN_INTERVAL_S = 60.0  # at most once a minute per pipeline


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
        clients: Clients | None = None,
    ) -> None:
        self.settings = settings
        self.clients: Clients = clients or KafkaClients()  # the in-memory broker in tests
        self.deadlines = deadlines  # start-up phases, for a bounded start
        self.missing_topics: list[str] = []
        self._late_said: dict[str, float] = {}
        self.prepare = prepare  # blocking set-up (topic creation) run beside start()
        self.metrics = metrics
        self.stop_at_end = stop_at_end
        self.pipelines = list(pipelines)
        self.secret = secret
        # dp pipelines: their budget's ledger, on a topic written in the release transaction
        instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.transactional_id = f"anonstream-{settings.group_id}-{instance}"
        self.ledger = (
            KafkaLedgerStore(
                settings.ledger_topic,
                legacy_ledger_topic(settings.group_id),
                writer=self.transactional_id,
            )
            if any(p.dp_budget is not None for p in pipelines)
            else None
        )
        if self.ledger is not None and settings.scale_out:
            check_scale_out_budgets(pipelines)  # a period meets in one partials partition only
        # Read after every assignment, before any release: others may have spent (_reset).
        self._ledger_stale = True
        self._client_options = settings.kafka_client_options()
        self._build_stages()
        self.raw_topics = {p.source_topic for p in pipelines}
        self.outputs = {(p.name, o.name): o.topic for p in pipelines for o in p.outputs}
        self.misconfigured: str | None = None
        self.consumer: Consumer | None = None
        self.txn = Transactions(self.clients, settings, self.transactional_id, metrics, self.ledger)
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
        self._dirty = False
        self._last_commit = 0.0
        self._last_tick = 0.0
        self.done = asyncio.Event()

    @property
    def producer_restarts(self) -> int:
        return self.txn.restarts

    def _build_stages(self) -> None:
        """Fresh stages. A stage reads one topic: in single mode the engine itself (raw
        topic in, releases out); in scale-out mode an ingest stage (raw in, partials out)
        and a release stage (partials in, releases out) per pipeline, and with the sharded
        release a merge stage (runtime/shardstages.py)."""
        settings, secret = self.settings, self.secret
        idle_ms = 0 if self.stop_at_end else int(settings.idle_close_seconds * 1000)
        self.stages: dict[str, Stage] = {}
        views: dict[str, Any] = {}  # what the metrics read: an engine, or a StagesView
        # One Ledger per budget: pipelines sharing a named budget spend it together.
        book, again = self.ledger, settings.allow_rerelease
        self._ledgers = ledgers(self.pipelines, book, again) if book is not None else {}
        for p in self.pipelines:
            if settings.scale_out:
                ingest, release, merge = scale_out_stages(
                    settings, p, secret, idle_ms, self._ledger(p)
                )
                self.stages[f"{p.name}/ingest"] = ingest
                self.stages[f"{p.name}/release"] = release
                if merge is not None:
                    self.stages[f"{p.name}/merge"] = merge
                views[p.name] = StagesView(ingest, release, merge)
            else:
                self.stages[p.name] = views[p.name] = PipelineEngine(
                    p, secret, idle_close_ms=idle_ms, ledger=self._ledger(p)
                )
        self.by_topic: dict[str, list[Stage]] = defaultdict(list)
        for stage in self.stages.values():
            self.by_topic[stage.input_topic].append(stage)
        self.metrics.bind_engines(views)

    def _ledger(self, p: Pipeline) -> Ledger | None:
        return self._ledgers.get(p.name)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.metrics.fetch_fallback.set(0 if self.clients.install_fast_fetch() else 1)
        self.consumer = self.clients.consumer(self.settings)
        producer = self.txn.create()
        self._phase("connecting the consumer and the transactional producer")
        # Both clients connect (and the producer registers its transactional id) at once.
        await asyncio.gather(producer.start(), self.consumer.start())
        await self._wait_for_topics()
        if self.missing_topics:
            return  # stopped while waiting: subscribing would let the broker auto-create them
        self._phase("joining the consumer group")
        self.consumer.subscribe(
            list(self.by_topic), listener=Rebalance(self.on_revoked, self.on_assigned)
        )

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

    async def _replace_producer(self, exc: KafkaError) -> None:
        """A broken producer is replaced (runtime/transactions.py), and the loop resumes
        from the last commit as after a rebalance: re-read rows rebuild state, and the
        aborted releases are made again, the same."""
        await self.txn.replace(exc)
        self._dirty = False
        self._reset_needed = True

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        try:
            await self.txn.abandon()
        finally:
            if self.ledger is not None:
                await self.ledger.close()
            if self.consumer is not None:
                if self.stop_at_end:
                    # A finished backfill has no successor to keep its place for: leave,
                    # so that an offset reset can follow at once. A live worker stays a
                    # static member for its restarted self (no rebalance on a rollout).
                    self.clients.leave_on_stop(self.consumer)
                await self.consumer.stop()
            if self.txn.producer is not None:
                await self.txn.producer.stop()

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
        self._ledger_stale = True
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

    async def _ledger_news(self) -> None:
        """dp: what other deployments of these pipelines charged since the ledger was read."""
        if self.ledger is None or self._ledger_stale:
            return
        news = await self.ledger.news(self.settings.bootstrap_servers, self._client_options)
        if news:
            for book in {id(b): b for b in self._ledgers.values()}.values():
                book.learn(news)

    async def _reset(self) -> None:
        """Back to the last checkpoint of every assigned partition."""
        assert self.consumer is not None and self.txn.producer is not None
        self._reset_needed = False
        await self.txn.abort()
        if self.ledger is not None:
            self.ledger.abort()
            if self._ledger_stale:  # what others spent (flagged again if assigned meanwhile)
                self._ledger_stale = False
                await self.ledger.read(self.settings.bootstrap_servers, self._client_options)
        self._dirty = False
        self._build_stages()
        self._check_single_mode()
        for stage in self.stages.values():
            source = stage.pipeline.source_topic
            parts = self.consumer.partitions_for_topic(source) or set()
            stage.set_sources([(source, p) for p in sorted(parts)])
        self.assigned &= self.consumer.assignment()
        tps = sorted(self.assigned)
        committed = await self.clients.committed(self.consumer, tps)
        fresh = []  # no committed offset: from the beginning, all in one seek (below)
        for tp in tps:
            meta = committed.get(tp)
            key = (tp.topic, tp.partition)
            checkpoints = decode_checkpoints(meta.metadata if meta is not None else None)
            for stage in self.by_topic.get(tp.topic, []):
                checkpoint = checkpoints.get(stage.pipeline.name)
                if checkpoint is not None:
                    stage.restore(key, checkpoint)
                stage.assign([key])
            # Records fetched before the reset are dropped: read them again.
            try:
                if meta is not None and meta.offset >= 0:
                    self.consumer.seek(tp, meta.offset)
                else:
                    fresh.append(tp)
            except IllegalStateError:  # revoked meanwhile: another rebalance is on its way
                self._reset_needed = True
                return
        # One call for all: each waits for the fetch in flight (up to fetch_max_wait_ms on
        # empty partitions), which one at a time cost 0.5 s per partition at start-up.
        try:
            if fresh:
                await self.consumer.seek_to_beginning(*fresh)
        except IllegalStateError:
            self._reset_needed = True

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
            await self._loop()  # dp: the ledger is read at each assignment's reset (_reset)
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
                if isinstance(exc, FATAL):
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
            await self._ledger_news()
            for stage in self.stages.values():
                await self._deliver(stage, stage.tick())
        if self.stop_at_end and self.settings.scale_out:
            if await self._scale_out_at_end():
                await self._commit(force=True)
                if self._reset_needed:
                    return False  # a rebalance came meanwhile: aborted, read to the end again
                log.info("scale-out: read to the end offsets; every owned window released")
                return True
        elif self.stop_at_end and await self._at_end():
            for stage in self.stages.values():
                await self._deliver(stage, stage.close_all())
            await self._commit(force=True)
            if self._reset_needed:
                return False  # a rebalance came meanwhile: aborted, read to the end again
            log.info("reached the end offsets; every window released")
            return True
        await self._commit()
        return False

    def _update_lag(self) -> None:
        """Messages behind the end of each partition, from the fetch's high watermarks."""
        assert self.consumer is not None
        lag = {}
        for tp in self.assigned:
            fs = self.clients.fetch_state(self.consumer, tp)
            if fs.highwater is not None and fs.position is not None:
                lag[(tp.topic, tp.partition)] = max(0, fs.highwater - fs.position)
        self.metrics.lag = lag

    def _note_silence(self) -> None:
        """Tell the stages which partitions Kafka has shown silent, and for how long;
        every other partition (data waiting, or not known yet) is busy (see Stage.busy)."""
        assert self.consumer is not None
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            span = self.silence.update(key, self.clients.fetch_state(self.consumer, tp))
            for stage in self.by_topic.get(tp.topic, []):
                if span is None:
                    stage.busy(key)
                else:
                    stage.silent(key, *span)

    async def _scale_out_at_end(self) -> bool:
        """Scale-out's end (--stop-at-end): each ingest stage marks the owned raw
        partitions it has read to the end offsets seen at assignment (the mark goes to
        every partials partition, in the open transaction, with the offsets); a release
        stage releases a partials partition's windows once every raw partition's mark is
        read there (ReleaseStage._end_if_all_ended). This worker is done when both stages
        are, for what it owns now; the partitions of a worker that leaves go to the others,
        whose new stages mark and finish them again (nothing is released twice: the
        checkpoints). So the last worker standing ends only when everything has ended."""
        assert self.consumer is not None
        if self._awaiting_assignment or self._reset_needed:
            return False
        done, marked = True, False
        for stage in self.stages.values():
            if isinstance(stage, IngestStage):
                ended = []
                for tp in self.assigned:
                    if tp.topic != stage.input_topic:
                        continue
                    end = self.end_offsets.get(tp)
                    try:
                        if end is not None and await self.consumer.position(tp) >= end:
                            ended.append((tp.topic, tp.partition))
                    except IllegalStateError:  # revoked meanwhile: a reset is on its way
                        return False
                marks = stage.end_of_input(ended)
                if marks.forward:
                    await self._deliver(stage, marks)
                    marked = True
                done = done and stage.done
            elif isinstance(stage, ReleaseStage | MergeStage):
                done = done and stage.done
        if marked:  # the release stages wait for these: no commit interval
            await self._commit(force=True)
        return done

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
            for stage in self.by_topic.get(topic, []):
                name = stage.pipeline.name
                late = stage.late_events
                with self.metrics.batch_timer(name):
                    step = stage.process_batch(Batch(values, pidx_a, parts, offs_a))
                    await self._deliver(stage, step)
                self.metrics.observe_batch(name, len(values), step)
                self._warn_if_late(name, stage.late_events - late, len(values))
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

    async def _deliver(self, stage: Stage, step: StepResult) -> None:
        """A step's records, in the open transaction; releases are committed at once."""
        if not step.releases and not step.dead_letters and not step.forward:
            return
        p = stage.pipeline
        await self.txn.deliver(p, step, self.outputs, self.settings.dead_letter_topic)
        self._dirty = True
        if step.releases:
            self.metrics.observe_batch(p.name, 0, step)
            n = sum(1 for r in step.releases if r["kind"] == "aggregate")
            log.info("%s: released %d aggregates", p.name, n)
            await self._commit(force=True)

    async def _commit(self, force: bool = False) -> None:
        """Offsets and checkpoints, in the same transaction as the releases before them."""
        if not self._dirty or self.txn.producer is None or self.consumer is None:
            return
        if self._reset_needed:
            return  # a rebalance came: this transaction will be aborted
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_INTERVAL_S:
            return
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            stages = self.by_topic.get(tp.topic, [])
            safe = [o for st in stages if (o := st.safe_offset(key)) is not None]
            if not safe:
                continue
            meta = encode_checkpoints({st.pipeline.name: st.checkpoint(key) for st in stages})
            offsets[tp] = OffsetAndMetadata(min(safe), meta)
        if not offsets and not self.txn.open:
            return
        await self.txn.begin()
        self._commit_idle.clear()
        try:
            await self.txn.commit(offsets, self.settings.group_id)
        finally:
            self._commit_idle.set()
        self._dirty = False
        self._last_commit = now


_value, _offset = attrgetter("value"), attrgetter("offset")
