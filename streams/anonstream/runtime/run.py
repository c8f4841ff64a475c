"""Start a worker process: create the topics it writes, then run the Faust app."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import Pipeline
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")


def ensure_output_topics(settings: Settings, pipelines: Sequence[Pipeline]) -> None:
    """Output topics, and the dead-letter topic with short retention: it holds raw events."""
    from anonstream.broker.topics import create_topics

    topics = {o.topic: 1 for p in pipelines for o in p.outputs}
    topics[settings.dead_letter_topic] = 1
    if settings.scale_out:
        from anonstream.runtime.scaleout import partials_topic

        for p in pipelines:
            topics[partials_topic(settings.group_id, p.name)] = settings.partials_partitions
    # retention only deletes closed segments, so roll them often too
    configs = {
        settings.dead_letter_topic: {
            "retention.ms": str(settings.dead_letter_retention_ms),
            "segment.ms": str(min(settings.dead_letter_retention_ms, 3_600_000)),
        }
    }
    if settings.scale_out:
        from anonstream.runtime.scaleout import partials_topic

        for p in pipelines:
            configs[partials_topic(settings.group_id, p.name)] = {
                "retention.ms": str(settings.partials_retention_ms)
            }
    if any(p.dp_budget is not None for p in pipelines):
        from anonstream.runtime.ledger import COMPACTED, ledger_topic

        topics[ledger_topic(settings.group_id)] = 1  # one partition: one ordered history
        configs[ledger_topic(settings.group_id)] = COMPACTED
    try:
        create_topics(settings.bootstrap_servers, topics, configs)
    except Exception as exc:  # an existing topic with other settings is the operator's call
        log.warning("could not create output topics (%s); using them as they are", exc)


def run_worker(
    settings: Settings,
    pipelines: Sequence[Pipeline],
    secret: MasterSecret,
    log_level: str = "info",
    stop_at_end: bool = False,
) -> int:
    if stop_at_end:
        return run_to_end(settings, pipelines, secret)  # no Faust host: not even imported
    from anonstream.runtime.worker import Worker

    ensure_output_topics(settings, pipelines)
    worker = Worker(settings, pipelines, secret)
    log.info(
        "starting worker for %s on %s (secret %s, fingerprint %s)",
        ", ".join(p.name for p in pipelines), settings.bootstrap_servers, secret.source,
        secret.fingerprint(),
    )  # fmt: skip
    return worker.run(log_level)


def run_to_end(settings: Settings, pipelines: Sequence[Pipeline], secret: MasterSecret) -> int:
    """A backfill: the batch loop alone, no long-running host (no web server, no Faust
    group of its own), until the end offsets seen at start are processed."""
    import asyncio
    from functools import partial

    from anonstream.metrics import Metrics
    from anonstream.runtime.batch import BatchLoop

    loop = BatchLoop(
        settings, pipelines, secret, Metrics(), stop_at_end=True,
        prepare=partial(ensure_output_topics, settings, pipelines),
    )  # fmt: skip
    asyncio.run(loop.run())
    return 0
