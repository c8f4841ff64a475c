"""Ceiling: how fast one Python process can read and decode the topic, doing nothing else.

A raw aiokafka consumer in a fresh group: ``getmany`` with a large ``max_records`` and
``orjson.loads`` of every value.  It reads the end offsets once assigned and stops when
it has consumed up to them; it commits every second (so progress is visible from outside)
and once at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .common import parse_args, report

MAX_RECORDS = 100_000
COMMIT_EVERY_S = 1.0


async def consume(bootstrap: str, topic: str, group: str) -> tuple[int, float | None]:
    """Consume ``topic`` from the start up to its current end; (events, first event time)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id=f"ceiling-{group}",
    )
    await consumer.start()
    loads = orjson.loads
    count = 0
    first: float | None = None
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:  # metadata not loaded yet
            await asyncio.sleep(0.05)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp: end for tp, end in ends.items() if end > starts[tp]}
        last_commit = time.monotonic()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            for tp, records in batches.items():
                if not records:
                    continue
                if first is None:
                    first = time.time()
                for record in records:
                    loads(record.value)
                count += len(records)
                end = remaining.get(tp)
                if end is not None and records[-1].offset + 1 >= end:
                    del remaining[tp]
            if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                await consumer.commit()
                last_commit = time.monotonic()
        await consumer.commit()
    finally:
        await consumer.stop()
    return count, first


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("anonstream_load.runners.ceiling", argv)
    logging.basicConfig(level=logging.WARNING)
    count, first = asyncio.run(consume(args.bootstrap, args.topic, args.group))
    report("ceiling", count, first, expected=args.events)
    return 0 if count == args.events else 1


if __name__ == "__main__":
    raise SystemExit(main())
