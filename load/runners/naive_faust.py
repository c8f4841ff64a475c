"""Naive Faust: the per-event agent a Faust user writes for the benchmark job.

``async for event in stream``: the value arrives decoded by Faust's ``json`` serializer,
identifiers are dropped or hashed (:func:`common.scrub`), and ``table[cell] += 1`` counts
it in an hourly tumbling windowed table whose time is the event's own ``ts``.  The table
lives in memory (``store="memory://"``) with Faust's default changelog topic.  When the
agent has seen ``--events`` events it flushes the producer (changelog writes), prints the
report line and leaves the process (``os._exit``: stopping a Faust worker from inside one
of its own agents is not clean).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from .common import event_time_ms, parse_args, report, run_faust_app, scrub


async def topic_partitions(bootstrap: str, topic: str) -> int:
    """Number of partitions of ``topic`` (the table must be co-partitioned with it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described[0]["partitions"] if described else []
    if not partitions:
        raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
    return len(partitions)


def build_app(
    bootstrap: str, topic: str, app_id: str, partitions: int, target: int, datadir: str
) -> faust.App:
    app = faust.App(
        app_id,
        datadir=datadir,  # Faust's default is "<app id>-data" in the working directory
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        loghandlers=[],
    )
    source = app.topic(topic, value_serializer="json")

    def event_time(event: Any) -> float:
        return event_time_ms(event.value["ts"]) / 1000.0

    # relative_to(callable) is Faust API, missing from its WindowWrapperT type stub.
    hourly: Any = app.Table("cell_counts", default=int).tumbling(
        timedelta(hours=1), expires=timedelta(hours=2)
    )
    counts = hourly.relative_to(event_time)
    seen = 0
    first: float | None = None

    @app.agent(source)
    async def count_cells(stream: Any) -> None:
        nonlocal seen, first
        async for event in stream:
            if first is None:
                first = time.time()
            row = scrub(event)
            counts[row["cell"]] += 1
            seen += 1
            if seen == target:
                await app.producer.flush()
                report("naive_faust", seen, first, expected=target)
                shutil.rmtree(datadir, ignore_errors=True)
                os._exit(0)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("anonstream_load.runners.naive_faust", argv)
    partitions = args.partitions or asyncio.run(topic_partitions(args.bootstrap, args.topic))
    return run_faust_app(
        lambda datadir: build_app(
            args.bootstrap, args.topic, args.group, partitions, args.events, datadir
        ),
        "anonstream-naive-faust-",
    )


if __name__ == "__main__":
    raise SystemExit(main())
