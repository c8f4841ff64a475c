"""The Kafka worker: a Faust app whose agents feed batches of raw events to the engine.

One agent per pipeline reads the pipeline's source topic in batches (`take_events`, so
offsets are acked only after a whole batch is processed and its releases are delivered),
and a timer closes windows when input goes idle. Releases go to each output's topic keyed
by release_id; rejected messages go to the dead-letter topic, which holds raw events and is
created with short retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
import orjson

from anonstream.core.engine import DeadLetter, Message, PipelineEngine, StepResult
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.metrics import Metrics
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")


def _credentials(settings: Settings) -> Any:
    proto = settings.security_protocol
    ssl_ctx = settings.kafka_client_options().get("ssl_context")
    if proto.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_ctx,
        )
    if proto == "SSL":
        return faust.SSLCredentials(ssl_ctx)
    return None


class Worker:
    """Builds the Faust app around one engine per pipeline."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Sequence[Pipeline],
        secret: MasterSecret,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        idle_ms = int(settings.idle_close_seconds * 1000)
        self.engines = {
            p.name: PipelineEngine(p, secret, idle_close_ms=idle_ms) for p in pipelines
        }
        self.app = faust.App(
            settings.group_id,
            broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
            broker_credentials=_credentials(settings),
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            web_enabled=settings.web_enabled,
            web_port=settings.web_port,
            web_host=settings.web_host,
            web_bind=settings.web_host,
            consumer_auto_offset_reset="earliest",
            topic_replication_factor=1,
            topic_allow_declare=True,
            stream_buffer_maxsize=max(4096, settings.batch_max * 2),
            broker_commit_every=settings.batch_max,
            broker_commit_interval=1.0,
            producer_linger_ms=10,
            loghandlers=[],
        )
        self.dead_letters = self.app.topic(
            settings.dead_letter_topic,
            value_serializer="raw",
            key_serializer="raw",
            retention=settings.dead_letter_retention_ms / 1000,
            partitions=1,
        )
        self.outputs = {
            (p.name, o.name): self.app.topic(o.topic, value_serializer="raw", key_serializer="raw")
            for p in pipelines
            for o in p.outputs
        }
        self.lock = asyncio.Lock()
        for p in pipelines:
            self._add_agent(p)
        self.app.timer(interval=1.0)(self._tick)
        self.metrics.bind_engines(self.engines)
        self._add_pages()

    def _add_pages(self) -> None:
        metrics = self.metrics

        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

        async def health_page(web: Any, request: Any) -> Any:
            consumer = self.app.consumer if self.app.started else None
            consuming = bool(consumer is not None and consumer.assignment())
            body = metrics.health(consuming=consuming)
            return web.json(body, status=200 if consuming else 503)

        self.app.page("/metrics")(metrics_page)
        self.app.page("/health")(health_page)

    def _add_agent(self, pipeline: Pipeline) -> None:
        engine = self.engines[pipeline.name]
        source = self.app.topic(pipeline.source_topic, value_serializer="raw")
        settings = self.settings

        async def agent(stream: Any) -> None:
            async for events in stream.take_events(
                settings.batch_max, within=settings.batch_within_seconds
            ):
                with self.metrics.batch_timer(pipeline.name):
                    batch = [
                        Message(ev.value, (ev.message.topic, ev.message.partition),
                                ev.message.offset)
                        for ev in events
                    ]  # fmt: skip
                    async with self.lock:
                        self._assign(engine, pipeline)
                        step = engine.process(batch)
                        await self._deliver(pipeline, step)
                    self.metrics.observe_batch(pipeline.name, len(batch), step)

        agent.__name__ = f"pipeline_{pipeline.name}"
        self.app.agent(source, name=f"anonstream.{pipeline.name}")(agent)

    def _assign(self, engine: PipelineEngine, pipeline: Pipeline) -> None:
        """Every assigned partition holds the watermark back until it has spoken."""
        assignment = self.app.consumer.assignment() if self.app.consumer else set()
        engine.assign(
            [(tp.topic, tp.partition) for tp in assignment if tp.topic == pipeline.source_topic]
        )

    async def _tick(self) -> None:
        async with self.lock:
            for name, engine in self.engines.items():
                step = engine.tick()
                if step.releases or step.dead_letters:
                    await self._deliver(engine.pipeline, step)
                    self.metrics.observe_batch(name, 0, step)

    async def _deliver(self, pipeline: Pipeline, step: StepResult) -> None:
        """Send releases and dead letters and wait until Kafka has them all."""
        futures = []
        for rec in step.releases:
            topic = self.outputs[(pipeline.name, rec["output"])]
            futures.append(
                await topic.send(key=rec["release_id"].encode(), value=orjson.dumps(rec))
            )
        for dl in step.dead_letters:
            futures.append(await self.dead_letters.send(
                key=None, value=dl.value, headers=self._dl_headers(pipeline, dl)
            ))  # fmt: skip
            log.warning(
                "rejected message from %s offset %s: %s%s",
                dl.partition, dl.offset, dl.reason, f" ({dl.field})" if dl.field else "",
            )  # fmt: skip
        if futures:
            await asyncio.gather(*futures)
        if step.releases:
            n_agg = sum(1 for r in step.releases if r["kind"] == "aggregate")
            log.info("%s: released %d aggregates", pipeline.name, n_agg)

    @staticmethod
    def _dl_headers(pipeline: Pipeline, dl: DeadLetter) -> list[tuple[str, bytes]]:
        topic, partition = dl.partition if isinstance(dl.partition, tuple) else ("?", -1)
        return [
            ("anonstream.reason", dl.reason.encode()),
            ("anonstream.field", (dl.field or "").encode()),
            ("anonstream.pipeline", pipeline.name.encode()),
            ("anonstream.source", f"{topic}/{partition}/{dl.offset}".encode()),
        ]
