"""The worker process: a Faust app hosting the batched Kafka loop, metrics and health.

Faust gives the process its lifecycle (signals, graceful stop), its web server (/metrics,
/health) and timers; the hot path itself is `BatchLoop` (runtime/batch.py), which reads
whole fetches with getmany instead of pushing each event through a Faust stream.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
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


def _faust_datadir(group_id: str) -> Path:
    path = Path(tempfile.gettempdir()) / "anonstream-faust" / group_id
    path.mkdir(parents=True, exist_ok=True)
    return path


class Worker:
    def __init__(
        self,
        settings: Settings,
        pipelines: Sequence[Pipeline],
        secret: MasterSecret,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.loop = BatchLoop(settings, pipelines, secret, self.metrics)
        self.exit_code = 0
        self._stopping: asyncio.Future[None] | None = None
        self.app = faust.App(
            f"{settings.group_id}-host",
            broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
            broker_credentials=_credentials(settings),
            store="memory://",
            web_enabled=settings.web_enabled,
            web_port=settings.web_port,
            web_host=settings.web_host,
            web_bind=settings.web_host,
            topic_replication_factor=1,
            autodiscover=False,
            # Faust keeps table data in a dir of its own; the host has no tables, keep it
            # out of the working directory.
            datadir=_faust_datadir(settings.group_id),
            # The host joins a group of its own (Faust's leader election); after a crash,
            # a restarted host waits for its dead predecessor to time out of it.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=3.0,
            loghandlers=[],
        )
        self.faust_worker: faust.Worker | None = None
        self.app.task(self._run)
        self._add_pages()

    async def _run(self) -> None:
        try:
            await self.loop.run()
        except Exception:
            log.exception("the batch loop failed; stopping the worker")
            self.exit_code = 1
        if self.faust_worker is not None:
            self._stopping = asyncio.ensure_future(self.faust_worker.stop())

    def _add_pages(self) -> None:
        metrics, loop = self.metrics, self.loop

        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

        async def health_page(web: Any, request: Any) -> Any:
            body = metrics.health(consuming=bool(loop.assigned))
            return web.json(body, status=200 if loop.assigned else 503)

        self.app.page("/metrics")(metrics_page)
        self.app.page("/health")(health_page)

    async def stop_loop(self) -> None:
        await self.loop.stop()
        await self.loop.done.wait()

    def run(self, log_level: str = "info") -> int:
        self.faust_worker = faust.Worker(self.app, loglevel=log_level, quiet=True)

        async def on_before_shutdown(app: Any, **kwargs: Any) -> None:
            await self.stop_loop()

        self.app.on_before_shutdown.connect(on_before_shutdown)  # type: ignore[arg-type]
        try:
            self.faust_worker.execute_from_commandline()
        except SystemExit as exc:
            return self.exit_code or int(exc.code or 0)
        return self.exit_code
