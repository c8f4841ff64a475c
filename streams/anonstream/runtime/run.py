"""Start a worker process: check the cluster, create the topics it writes, run the host.

Everything before the Faust host starts runs under the start-up deadline and stops on
SIGTERM or SIGINT (the host installs its own handlers once it runs).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.runtime.startup import (
    ClusterCheck,
    Deadlines,
    StartupError,
    check_cluster,
    exit_now,
    missing_topics_message,
    one_line,
)
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")
_T = TypeVar("_T")


class _Stopped(Exception):
    """A signal arrived before the host was running."""


async def aensure_output_topics(
    settings: Settings, pipelines: Sequence[Pipeline], brokers: int | None = None
) -> None:
    """Output topics, and the dead-letter topic with short retention: it holds raw events.

    Only missing topics are created, so a worker granted only the ACLs of `anonstream
    topics plan` (no Create) runs once they exist. A failure is logged and the worker goes
    on: an existing topic with other settings is the operator's call.
    """
    from anonstream.broker.plan import worker_topics
    from anonstream.broker.topics import acreate_topics

    specs = worker_topics(settings, pipelines)
    rf = settings.replication_factor or (min(3, brokers) if brokers else None)
    try:
        created = await acreate_topics(
            settings.bootstrap_servers,
            {t.name: t.partitions for t in specs},
            {t.name: t.configs for t in specs if t.configs},
            replication_factor=rf,
            timeout=settings.startup_timeout_seconds,
            client_options=settings.kafka_client_options(),
        )
    except Exception as exc:
        log.warning("could not create output topics (%s); using them as they are", one_line(exc))
        return
    if created:
        log.info("created topics %s", ", ".join(created))


def ensure_output_topics(settings: Settings, pipelines: Sequence[Pipeline]) -> None:
    from anonstream.broker.local import run_sync

    run_sync(lambda: aensure_output_topics(settings, pipelines))


async def _guarded(coro: Coroutine[Any, Any, _T], deadlines: Deadlines) -> _T:
    """Run ``coro``; SIGTERM or SIGINT cancels it (raising _Stopped) under the stop
    deadline, and a second one exits at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    got: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig.name)
        deadlines.signalled(sig.name)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if got:
            raise _Stopped(got[0]) from None
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def prepare(settings: Settings, pipelines: Sequence[Pipeline]) -> ClusterCheck:
    """Reach and authenticate to the cluster, name missing input topics at once (or exit,
    with exit_on_missing_topics), create the topics the worker writes."""
    check = await check_cluster(settings, {p.source_topic for p in pipelines})
    if check.missing:
        message = missing_topics_message(check.missing)
        if settings.exit_on_missing_topics:
            raise StartupError(message)
        log.warning("%s; the worker waits for them", message)
    await aensure_output_topics(settings, pipelines, check.brokers)
    return check


def _exit_on_signal(signum: int, frame: Any) -> None:
    # Before the checks, and between them and the host's own handlers, nothing needs
    # cleaning up.
    exit_now(0, f"stopped by {signal.Signals(signum).name} during start-up")


def stop_on_signals() -> None:
    """SIGTERM and SIGINT end a worker that is still loading (exit 0, one line)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)


def run_worker(
    settings: Settings,
    pipelines: Sequence[Pipeline],
    secret: MasterSecret,
    log_level: str = "info",
    stop_at_end: bool = False,
) -> int:
    deadlines = Deadlines(settings.startup_timeout_seconds, settings.stop_timeout_seconds)
    deadlines.phase("connecting to Kafka")
    try:
        asyncio.run(_guarded(prepare(settings, pipelines), deadlines))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except _Stopped as stopped:
        log.warning("stopped by %s during start-up", stopped)
        return 0
    if stop_at_end:
        return run_to_end(settings, pipelines, secret, deadlines)  # no Faust host
    from anonstream.runtime.worker import Worker

    stop_on_signals()
    deadlines.phase("starting the host")
    worker = Worker(settings, pipelines, secret, deadlines)
    return worker.run(log_level)


def run_to_end(
    settings: Settings, pipelines: Sequence[Pipeline], secret: MasterSecret, deadlines: Deadlines
) -> int:
    """A backfill: the batch loop alone, no long-running host (no web server, no Faust
    group of its own), until the end offsets seen at start are processed. A signal
    cancels the loop, which aborts its open transaction on the way out."""
    from anonstream.metrics import Metrics
    from anonstream.runtime.batch import BatchLoop

    loop = BatchLoop(settings, pipelines, secret, Metrics(), stop_at_end=True, deadlines=deadlines)
    try:
        asyncio.run(_guarded(loop.run(), deadlines))
    except _Stopped as stopped:
        log.warning("stopped by %s", stopped)
        return 0
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
