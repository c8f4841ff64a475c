"""Read a topic from its beginning to its end: the one way the product, the tools and the
benchmark do it (the budget ledger, `anonstream audit`, the load harness).

"The end" is each partition's end offset when the read starts, so records written while it
runs do not keep it going. Reached means the consumer's position is at or past that offset,
not that a record with the offset before it was seen: under read_committed the last offsets
may be transaction markers or aborted records, which the position moves past but which are
never returned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class EndNotReached(TimeoutError):
    """The timeout passed before every partition was read to its end."""


async def partitions_of(
    consumer: AIOKafkaConsumer, topic: str, timeout: float = 30.0
) -> list[TopicPartition]:
    """Every partition of an existing `topic`. `consumer.topics()` does not fill the
    consumer's own metadata; assigning partition 0 (every topic has one) makes it fetch the
    topic's, so the public `partitions_for_topic` answers."""
    consumer.assign([TopicPartition(topic, 0)])
    deadline = time.monotonic() + timeout
    while (parts := consumer.partitions_for_topic(topic)) is None:
        if time.monotonic() >= deadline:
            raise LookupError(f"no partitions of {topic!r} known after {timeout:g} s")
        await asyncio.sleep(0.05)
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    *,
    timeout: float | None = None,
    idle_seconds: float | None = None,
    poll_ms: int = 500,
) -> AsyncIterator[tuple[TopicPartition, list[Any]]]:
    """(partition, records) fetched from the beginning of `tps` until every one reaches its
    end offset. `consumer` is started and in no group; it is assigned `tps`. Stops early,
    without error, when `idle_seconds` pass with no record; raises `EndNotReached` when
    `timeout` seconds pass first."""
    tps = list(tps)
    if not tps:
        return
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end = await consumer.end_offsets(tps)
    now = time.monotonic()
    deadline = None if timeout is None else now + timeout
    last_record = now
    while True:
        left = [tp for tp in tps if await consumer.position(tp) < end[tp]]
        if not left:
            return
        now = time.monotonic()
        if idle_seconds is not None and now - last_record >= idle_seconds:
            return
        if deadline is not None and now >= deadline:
            topics = sorted({tp.topic for tp in left})
            raise EndNotReached(
                f"{len(left)} partition(s) of {', '.join(topics)} not read to their end "
                f"within {timeout:g} s"
            )
        batch = await consumer.getmany(*left, timeout_ms=poll_ms)
        for tp, records in batch.items():
            if records:
                last_record = time.monotonic()
                yield tp, records
