"""Producing synthetic raw events into Kafka with aiokafka (`anonstream generate`, the demo,
the tests and the benchmarks).

Usage::

    python -m anonstream.synthetic.produce --bootstrap 127.0.0.1:9092 --count 10000 \\
        --kind web|usage|mixed --rate 0 --users 1000 --seed 7

(``anonstream generate`` runs it with its own defaults.)

Messages are sent **without a key** by default.  Our own tools never use a raw identifier
(visitor id, e-mail, ...) as a Kafka key: keys are stored in clear in the log and in
partitioner statistics.  Unkeyed records are packed into record batches that are handed
round-robin to the topic's partitions (sticky partitioning per batch), which is also the
fastest path through aiokafka.  A ``key_fn`` can be supplied for experiments; it then
goes through the regular per-message ``send`` path and the default partitioner.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka import codec as _codec
from aiokafka.errors import KafkaError

from anonstream.synthetic.generator import EventGenerator
from anonstream.synthetic.kinds import DEFAULT_START_MS, TOPIC_USAGE, TOPIC_WEB, Workload

__all__ = ["available_compressions", "main", "produce"]

Payload = bytes | dict[str, Any]
KeyFn = Callable[[str, Payload], bytes | None]

_COMPRESSION_CHECKS: dict[str, Callable[[], bool]] = {
    "gzip": _codec.has_gzip,
    "snappy": _codec.has_snappy,
    "lz4": _codec.has_lz4,
    "zstd": _codec.has_zstd,
}


def available_compressions() -> list[str]:
    """Compression codecs aiokafka can use in this environment ("none" is always there).

    aiokafka ships gzip itself; snappy, lz4 and zstd need the optional ``cramjam``
    package.
    """
    return ["none", *(name for name, ok in _COMPRESSION_CHECKS.items() if ok())]


def _compression_type(name: str | None) -> str | None:
    if name is None or name == "none":
        return None
    if name not in _COMPRESSION_CHECKS:
        raise ValueError(f"unknown compression {name!r}; choose from {list(_COMPRESSION_CHECKS)}")
    if not _COMPRESSION_CHECKS[name]():
        raise ValueError(
            f"compression {name!r} needs the optional 'cramjam' package; "
            f"available here: {available_compressions()}"
        )
    return name


class _Pacer:
    """Token-bucket pacing in small bursts.

    Events are released in bursts of at most ~10 ms worth of the target rate, and the
    bucket never accumulates more than ``max_debt_s`` of credit, so a stall (slow broker,
    GC pause) is followed by a bounded catch-up burst rather than an unbounded one.
    """

    def __init__(self, rate: float, max_debt_s: float = 1.0) -> None:
        self.rate = rate
        self.burst = max(1, min(1000, int(rate / 100)))
        self.max_debt_s = max_debt_s
        self._start = time.monotonic()
        self._released = 0

    def delay(self, sent: int) -> float:
        """Seconds to wait before sending event number ``sent`` (0 when not a boundary)."""
        if sent % self.burst:
            return 0.0
        due = self._start + sent / self.rate
        lag = due - time.monotonic()
        if lag < -self.max_debt_s:
            self._start += -lag - self.max_debt_s
            return 0.0
        return max(0.0, lag)


class _Progress:
    """Optional rich progress bar; every method is a no-op when disabled."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]producing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10} ev/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),  # stdout stays free for the caller's output
            transient=False,
        )
        self._task = self._bar.add_task("produce", total=total, rate="-")
        self._t0 = time.monotonic()
        self._bar.start()

    def update(self, done: int) -> None:
        if self._bar is not None:
            elapsed = max(time.monotonic() - self._t0, 1e-9)
            self._bar.update(self._task, completed=done, rate=f"{done / elapsed:,.0f}")

    def close(self, done: int) -> None:
        if self._bar is not None:
            self.update(done)
            self._bar.stop()


class _OpenBatch:
    __slots__ = ("builder", "count", "created")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.count = 0
        self.created = time.monotonic()


async def produce(
    bootstrap: str,
    events: Iterable[tuple[str, Payload]],
    *,
    rate: float | None = None,
    key_fn: KeyFn | None = None,
    progress: bool = False,
    total: int | None = None,
    linger_ms: int = 20,
    max_batch_size: int = 256 * 1024,
    compression: str | None = None,
    acks: int | str = 1,
    client_id: str = "anonstream-load",
    max_in_flight: int = 64,
) -> int:
    """Send ``(topic, payload)`` pairs to Kafka; return how many were delivered.

    ``payload`` is either ready-made bytes or a dict (encoded with orjson).  ``rate`` paces
    the stream to that many events per second (``None`` or ``0``: as fast as possible).
    ``key_fn(topic, payload)`` may return a key; the default is no key (see module doc).
    ``linger_ms`` bounds how long a partially filled batch waits; ``max_batch_size`` is
    the record-batch size in bytes; ``compression`` is ``None``/"none" or one of
    :func:`available_compressions`.  ``max_in_flight`` bounds the number of undelivered
    batches (per-message sends when ``key_fn`` is given: ``max_in_flight * 1000``).
    All deliveries are awaited before returning; a failed delivery raises.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks=acks,
        compression_type=_compression_type(compression),
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        max_request_size=max(1024 * 1024, 2 * max_batch_size),
    )
    pacer = _Pacer(rate) if rate else None
    bar = _Progress(progress, total)
    pending: deque[asyncio.Future[Any]] = deque()
    sent = 0
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # release the client of a half-started producer
        raise
    try:
        if key_fn is None:
            sent = await _produce_batched(
                producer, events, pacer, bar, pending, linger_ms / 1000, max_in_flight
            )
        else:
            sent = await _produce_keyed(
                producer, events, key_fn, pacer, bar, pending, 1000 * max_in_flight
            )
        while pending:
            await pending.popleft()
    finally:
        bar.close(sent)
        await producer.stop()
    return sent


async def _produce_batched(
    producer: AIOKafkaProducer,
    events: Iterable[tuple[str, Payload]],
    pacer: _Pacer | None,
    bar: _Progress,
    pending: deque[asyncio.Future[Any]],
    linger_s: float,
    max_in_flight: int,
) -> int:
    dumps = orjson.dumps
    open_batches: dict[str, _OpenBatch] = {}
    partitions: dict[str, list[int]] = {}
    cursor: dict[str, int] = {}

    async def submit(topic: str) -> None:
        batch = open_batches.pop(topic)
        if batch.count == 0:
            return
        parts = partitions[topic]
        i = cursor[topic]
        cursor[topic] = i + 1
        fut = await producer.send_batch(batch.builder, topic, partition=parts[i % len(parts)])
        pending.append(fut)
        while len(pending) > max_in_flight:
            await pending.popleft()

    async def submit_stale() -> None:
        now = time.monotonic()
        for topic in [t for t, b in open_batches.items() if now - b.created >= linger_s]:
            await submit(topic)

    sent = 0
    for topic, payload in events:
        if pacer is not None:
            wait = pacer.delay(sent)
            if wait > 0:
                await submit_stale()
                await asyncio.sleep(wait)
        value = payload if isinstance(payload, bytes) else dumps(payload)
        batch = open_batches.get(topic)
        if batch is None:
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
                cursor[topic] = 0
            batch = open_batches[topic] = _OpenBatch(producer.create_batch())
        if batch.builder.append(timestamp=None, key=None, value=value) is None:
            await submit(topic)
            batch = open_batches[topic] = _OpenBatch(producer.create_batch())
            # The first record of a batch is always accepted, whatever its size.
            batch.builder.append(timestamp=None, key=None, value=value)
        batch.count += 1
        sent += 1
        if sent % 1024 == 0:
            bar.update(sent)
            await submit_stale()
    for topic in list(open_batches):
        await submit(topic)
    bar.update(sent)
    return sent


async def _produce_keyed(
    producer: AIOKafkaProducer,
    events: Iterable[tuple[str, Payload]],
    key_fn: KeyFn,
    pacer: _Pacer | None,
    bar: _Progress,
    pending: deque[asyncio.Future[Any]],
    max_pending: int,
) -> int:
    dumps = orjson.dumps
    sent = 0
    for topic, payload in events:
        if pacer is not None:
            wait = pacer.delay(sent)
            if wait > 0:
                await asyncio.sleep(wait)
        value = payload if isinstance(payload, bytes) else dumps(payload)
        pending.append(await producer.send(topic, value, key=key_fn(topic, payload)))
        while len(pending) > max_pending:
            await pending.popleft()
        sent += 1
        if sent % 1024 == 0:
            bar.update(sent)
    bar.update(sent)
    return sent


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _parse_start(text: str) -> int:
    """Epoch milliseconds from an integer or an ISO 8601 / RFC 3339 timestamp."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError("--start needs a UTC offset, e.g. 2026-11-30T00:00Z")
    return int(dt.timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonstream-generate",
        description="Produce synthetic (fake) raw events into Kafka.",
    )
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--count", type=int, default=10_000, help="number of events")
    p.add_argument("--kind", choices=("web", "usage", "mixed"), default="web")
    p.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    p.add_argument("--users", type=int, default=Workload.users)
    p.add_argument("--pages", type=int, default=Workload.pages)
    p.add_argument("--customers", type=int, default=Workload.customers)
    p.add_argument("--zipf-s", type=float, default=Workload.zipf_s)
    p.add_argument("--seed", type=int, default=Workload.seed)
    p.add_argument(
        "--start",
        type=_parse_start,
        default=DEFAULT_START_MS,
        help="event time of the first event: epoch ms or RFC 3339 (default 2026-11-30T00:00Z)",
    )
    p.add_argument(
        "--event-time-rate",
        type=float,
        default=Workload.events_per_second_of_event_time,
        help="events per second of event time (spacing of the ts field)",
    )
    p.add_argument("--web-topic", default=TOPIC_WEB)
    p.add_argument("--usage-topic", default=TOPIC_USAGE)
    p.add_argument(
        "--compression", default="none", help="none or gzip (lz4/snappy/zstd need cramjam)"
    )
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--batch-bytes", type=int, default=256 * 1024)
    p.add_argument("--acks", default="1", choices=("0", "1", "all"))
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    return p


def _events(args: argparse.Namespace) -> Iterable[tuple[str, Payload]]:
    gen = EventGenerator(
        Workload(
            users=args.users,
            pages=args.pages,
            customers=args.customers,
            zipf_s=args.zipf_s,
            start_ms=args.start,
            events_per_second_of_event_time=args.event_time_rate,
            seed=args.seed,
        )
    )
    web_topic: str = args.web_topic
    usage_topic: str = args.usage_topic
    if args.kind == "web":
        return ((web_topic, b) for b in gen.encoded_web_events(args.count))
    if args.kind == "usage":
        return ((usage_topic, e) for e in gen.usage_events(args.count))
    rename = {TOPIC_WEB: web_topic, TOPIC_USAGE: usage_topic}
    return ((rename[t], e) for t, e in gen.mixed(args.count))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 0:
        print("--count must be >= 0", file=sys.stderr)
        return 2
    # aiokafka warns once per topic while auto-creating it; keep the CLI output clean.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    progress = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    acks: int | str = "all" if args.acks == "all" else int(args.acks)
    t0 = time.perf_counter()
    try:
        sent = asyncio.run(
            produce(
                args.bootstrap,
                _events(args),
                rate=args.rate or None,
                progress=progress,
                total=args.count,
                linger_ms=args.linger_ms,
                max_batch_size=args.batch_bytes,
                compression=args.compression,
                acks=acks,
            )
        )
    except (KafkaError, OSError, ValueError) as exc:
        print(f"produce failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0
    print(
        f"sent {sent} {args.kind} events to {args.bootstrap} in {elapsed:.2f} s "
        f"({sent / max(elapsed, 1e-9):,.0f} events/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
