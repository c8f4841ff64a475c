"""Malformed messages on a raw topic are counted, set aside on the dead-letter topic with a
reason, and never stop the worker or cost a good event."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from anonstream.synthetic import TOPIC_USAGE, EventGenerator, Workload, bad_messages
from tests.integration.helpers import (
    canonical,
    expected_windows,
    isolated_pipelines,
    produce_events,
    read_all,
    replay_events,
    start_worker,
)

pytestmark = pytest.mark.integration


async def _dead_letters(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        for _ in range(60):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [(m.value, dict(m.headers)) for m in msgs]
            if len(out) >= n:
                break
    finally:
        await consumer.stop()
    return out


def test_bad_messages_go_to_dead_letters_and_good_events_still_count(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap)
    gen = EventGenerator(Workload(users=200, events_per_second_of_event_time=1.0, seed=5))
    good = list(gen.usage_events(3000))
    bad = bad_messages(TOPIC_USAGE)
    # Bad messages interleaved with good ones: before, between and after.
    stream: list[tuple[str, object]] = []
    step = len(good) // (len(bad) + 1)
    for i, (_, payload) in enumerate(bad):
        stream += [("service_usage", ev) for ev in good[i * step : (i + 1) * step]]
        stream.append(("service_usage", payload))
    stream += [("service_usage", ev) for ev in good[len(bad) * step :]]
    worker = start_worker(setup, kafka_bootstrap, tmp_path)
    try:
        produce_events(kafka_bootstrap, setup, stream)
        records = read_all(kafka_bootstrap, setup, expected_windows(setup, stream))
        metrics = worker.get("/metrics").decode()
        assert worker.proc is not None and worker.proc.poll() is None  # still running
    finally:
        worker.stop()
    # Good events: exactly the releases of a replay of the good events alone.
    expected = replay_events(setup.pipelines["service_usage"], good)
    assert canonical(records) == canonical(expected)
    # Every bad message is on the dead-letter topic, with its reason in a header.
    dls = asyncio.run(_dead_letters(kafka_bootstrap, setup.dead_letter_topic, len(bad)))
    reasons = sorted(h["anonstream.reason"].decode() for _, h in dls)
    assert reasons == sorted(reason for reason, _ in bad)
    # And counted by reason on the metrics endpoint.
    for reason in {r for r, _ in bad}:
        m = re.search(
            rf'anonstream_events_rejected_total{{pipeline="service_usage",'
            rf'reason="{reason}"}} (\S+)',
            metrics,
        )
        assert m is not None, reason
        assert float(m.group(1)) == sum(1 for r, _ in bad if r == reason)
