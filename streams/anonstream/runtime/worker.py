"""The worker process: a Faust app hosting the batched Kafka loop, metrics and health.

Faust gives the process its lifecycle (signals, graceful stop, the stop deadline's first
signal), its web server (/metrics, /health) and its tasks; the hot path itself is
`BatchLoop` (runtime/batch.py), which reads whole fetches with getmany instead of pushing
each event through a Faust stream.

The host starts none of Faust's Kafka services (`_HostBoot`): no consumer group of its own,
no leader topic, no producer. Its only Kafka clients are the batch loop's, so a restarted
worker waits for nothing of Faust's; with `ANONSTREAM_INSTANCE_ID` set, the loop's consumer
is a static member of the anonstream group and takes its killed predecessor's place at
once (docs/operations.md#restarts). Users who run Faust apps of their own put a pipeline
into them as agents with `anonstream.faust` instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy

from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.runtime.startup import Deadlines, StartupError, exit_now, failure_line, one_line
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")


def _faust_datadir(group_id: str) -> Path:
    path = Path(tempfile.gettempdir()) / "anonstream-faust" / group_id
    path.mkdir(parents=True, exist_ok=True)
    return path


class _HostBoot(BootStrategy):
    """Web server, sensors and tasks only: Faust starts no Kafka client of its own (its
    consumer would join a group, elect a leader on a topic it creates and, after a crash,
    wait for its dead predecessor's session to expire before the host runs)."""

    enable_kafka = False


class _HostApp(faust.App):
    BootStrategy = _HostBoot


class _OneLine(logging.Filter):
    """Tracebacks only at debug level: a failure is one line saying what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            reason = one_line(record.exc_info[1]).replace("%", "%%")
            if reason not in str(record.msg):
                record.msg = f"{record.msg} ({reason})"
            record.exc_info = None
            record.exc_text = None
        return True


class _Host(faust.Worker):
    """Faust's worker, with the stop deadline armed by the first signal (a second one
    exits at once) and a start that fails ending the process in one line."""

    deadlines: Deadlines
    secret: MasterSecret
    worker: Worker

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        self.deadlines.signalled(sig.name)
        super()._schedule_shutdown(sig)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level > logging.DEBUG:
            for handler in logger.handlers:
                handler.addFilter(_OneLine())

    def on_worker_shutdown(self) -> None:
        failure = sys.exc_info()[1]  # called from the `finally` of a start that raised
        if failure is not None and not isinstance(failure, asyncio.CancelledError):
            exit_now(1, f"the worker's host (Faust) failed: {failure_line(failure)}")
        self.deadlines.stopping(self.worker.exit_code)


class Worker:
    def __init__(
        self,
        settings: Settings,
        pipelines: Sequence[Pipeline],
        secret: MasterSecret,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.settings = settings
        self.secret = secret
        self.metrics = Metrics()
        self.deadlines = deadlines or Deadlines(
            settings.startup_timeout_seconds, settings.stop_timeout_seconds
        )
        self.loop = BatchLoop(settings, pipelines, secret, self.metrics, deadlines=self.deadlines)
        self.exit_code = 0
        self._loop_running = False
        self._stopping: asyncio.Future[None] | None = None
        self.app = _HostApp(
            f"{settings.group_id}-host",
            # never contacted: the host starts no Kafka client (_HostBoot)
            broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
            store="memory://",
            web_enabled=settings.web_enabled,
            web_port=settings.web_port,
            web_host=settings.web_host,
            web_bind=settings.web_host,
            autodiscover=False,
            # Faust keeps table data in a dir of its own; the host has no tables, keep it
            # out of the working directory.
            datadir=_faust_datadir(settings.group_id),
            loghandlers=[],
        )
        self.faust_worker: faust.Worker | None = None
        self.app.task(self._run)
        self._add_pages()

    async def _run(self) -> None:
        if self.deadlines.is_stopping:
            return  # stopped before the host got here
        self._loop_running = True
        # Logged here, once Faust has set up logging (before, the line was lost).
        log.info(
            "worker for %s on %s (secret %s, fingerprint %s)",
            ", ".join(p.name for p in self.loop.pipelines), self.settings.bootstrap_servers,
            self.secret.source, self.secret.fingerprint(),
        )  # fmt: skip
        try:
            await self.loop.run()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            self.exit_code = 1
        except Exception as exc:
            log.error("the batch loop failed; stopping the worker: %s", failure_line(exc))
            log.debug("the batch loop failed", exc_info=True)
            self.exit_code = 1
        self.deadlines.stopping(self.exit_code)
        if self.faust_worker is not None:
            self._stopping = asyncio.ensure_future(self.faust_worker.stop())

    def _add_pages(self) -> None:
        metrics, loop = self.metrics, self.loop

        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

        async def health_page(web: Any, request: Any) -> Any:
            body = metrics.health(consuming=bool(loop.assigned))
            if loop.missing_topics:
                body.update(status="waiting_for_topics", missing_topics=loop.missing_topics)
            return web.json(body, status=200 if loop.assigned else 503)

        self.app.page("/metrics")(metrics_page)
        self.app.page("/health")(health_page)

    async def stop_loop(self) -> None:
        await self.loop.stop()
        if self._loop_running:
            await self.loop.done.wait()

    def run(self, log_level: str = "info") -> int:
        host = _Host(self.app, loglevel=log_level, quiet=True)
        host.deadlines, host.secret, host.worker = self.deadlines, self.secret, self
        self.faust_worker = host

        async def on_before_shutdown(app: Any, **kwargs: Any) -> None:
            await self.stop_loop()

        self.app.on_before_shutdown.connect(on_before_shutdown)  # type: ignore[arg-type]
        try:
            self.faust_worker.execute_from_commandline()
        except SystemExit as exc:
            return self.exit_code or int(exc.code or 0)
        return self.exit_code
