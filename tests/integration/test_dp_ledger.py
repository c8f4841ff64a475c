"""dp mode on the real broker: the budget's ledger is a topic written in the release
transaction, so a restarted worker continues the period's spending instead of resetting it.

A dp pipeline whose period budget pays for two hourly windows. The first run releases one
window; a second worker process-equivalent (a new loop, same group) then sees two more
windows of the same day: it releases the first and refuses the second. Without the ledger
topic it would start again at 0 and release both.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from anonstream.broker.topics import create_topics
from anonstream.core.budget import Charge
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.runtime.ledger import KafkaLedgerStore
from anonstream.settings import Settings
from anonstream.testing import read_releases
from tests.integration.helpers import SECRET

pytestmark = pytest.mark.integration

DAY, HOUR = 86_400_000, 3_600_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY


def _pipeline(
    tmp: Path, suffix: str, names: tuple[str, ...] = ("dpledger",), shared: str | None = None
) -> Path:
    d = tmp / "pipelines"
    d.mkdir()
    for name in names:
        doc = _doc(suffix, name)
        if shared is not None:
            doc["dp_budget"]["name"] = shared
        (d / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def _doc(suffix: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pipeline": name,
        "version": 1,
        "contract": "web_activity",
        "source_topic": f"raw.web-activity.{suffix}",
        "privacy_unit": ["visitor_id"],
        "fields": {
            "event_id": "dedupe", "ts": "window", "customer_id": "drop", "reseller_id": "drop",
            "type": "keep", "visitor_id": "pseudonymize", "user_email": "drop", "ip": "drop",
            "user_agent": "drop", "url": "drop", "referrer": "drop", "campaign_id": "drop",
            "duration_ms": "drop",
        },
        "window": {"size": "1h", "allowed_lateness": "0s"},
        "dimensions": ["type"],
        "contribution": {"max_events_per_unit_per_cell": 1, "max_cells_per_unit_per_window": 1},
        "k": 5,
        "outputs": [{
            "name": "default", "topic": f"anon.aggregates.{name}.{suffix}",
            "privacy": "dp", "dp": {"epsilon": 2.0, "delta": 1e-6},
        }],
        "dp_budget": {"epsilon": 5.0, "delta": 1e-4},
    }  # fmt: skip
    return doc


async def _produce(bootstrap: str, topic: str, hours: list[int], partitions: int = 1) -> None:
    """150 people an hour, spread over the topic's first `partitions` partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for h in hours:
            for u in range(150):
                ev = {
                    "event_id": f"e-{h}-{u}", "ts": T0 + h * HOUR + 60_000, "type": "page_view",
                    "visitor_id": f"visitor-{u}", "url": "https://www.example.com/",
                }  # fmt: skip
                await producer.send(topic, orjson.dumps(ev), partition=u % partitions)
        await producer.flush()
    finally:
        await producer.stop()


def _settings(bootstrap: str, suffix: str, pdir: Path, tag: str, **extra: Any) -> Settings:
    """A worker of the group `it-<tag>-<suffix>`, on the test's own ledger topic."""
    return Settings(
        bootstrap_servers=bootstrap, group_id=f"it-{tag}-{suffix}", pipelines_dir=pdir,
        dead_letter_topic=f"anon.deadletter.{suffix}", instance_id="slot-0", web_enabled=False,
        ledger_topic=f"anon.ledger.it-{suffix}", **extra,
    )  # fmt: skip


def _run_to_end(settings: Settings, pipelines_dir: Path) -> None:
    ps = [load_pipeline(f) for f in sorted(pipelines_dir.glob("*.yaml"))]
    from anonstream.runtime.run import ensure_output_topics

    loop = BatchLoop(
        settings, ps, load_secret({"ANONSTREAM_SECRET": SECRET}), Metrics(), stop_at_end=True,
        prepare=lambda: ensure_output_topics(settings, ps),
    )  # fmt: skip
    asyncio.run(asyncio.wait_for(loop.run(), timeout=120))


def _summaries(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted(
        (r["window_start"], r["privacy"]["status"])
        for r in records
        if r["kind"] == "window_summary"
    )


def test_restart_does_not_reset_the_period_budget(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    create_topics(kafka_bootstrap, {source: 1})
    settings = _settings(kafka_bootstrap, suffix, pdir, "dp")

    # First run: hour 0 (and hour 1 opened, so that hour 0 closes by the watermark).
    asyncio.run(_produce(kafka_bootstrap, source, [0]))
    _run_to_end(settings, pdir)
    first = asyncio.run(read_releases(
        kafka_bootstrap, [out], until=lambda rs: len(_summaries(rs)) >= 1, timeout=60
    ))  # fmt: skip
    assert [s for _, s in _summaries(first)] == ["released"]

    # Restart with two more windows of the same day: only one still fits the budget.
    asyncio.run(_produce(kafka_bootstrap, source, [1, 2]))
    _run_to_end(settings, pdir)
    records = asyncio.run(read_releases(
        kafka_bootstrap, [out], until=lambda rs: len(_summaries(rs)) >= 3, timeout=60
    ))  # fmt: skip
    assert [s for _, s in _summaries(records)] == ["released", "released", "budget_exhausted"]
    spent = [r["privacy"]["period_epsilon_spent"] for r in records if r["kind"] == "window_summary"]
    assert max(spent) <= 5.0

    # The ledger topic holds exactly the two charges, committed with the releases.
    store = KafkaLedgerStore(settings.ledger_topic)
    asyncio.run(store.read(kafka_bootstrap, {}))
    charges = store.load()
    assert sorted(c.start_ms for c in charges) == [T0, T0 + HOUR]
    assert all(c.period == T0 and not c.rerelease for c in charges)
    assert json.dumps([c.pipeline for c in charges]) == '["dpledger", "dpledger"]'


def test_pipelines_sharing_a_budget_spend_it_together_across_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two pipelines over the same people name one budget that pays for two windows in
    all: the first run releases hour 0 of each (the budget is then spent); after a restart
    neither releases another window of the day. Each on its own budget would release two.
    The audit of both output topics against the ledger topic finds nothing."""
    from anonstream.audit import audit_records
    from anonstream.audit.ledger import read_ledger_topic

    suffix = uuid.uuid4().hex[:8]
    names = ("dpweb", "dpusage")
    pdir = _pipeline(tmp_path, suffix, names, shared="people")
    source = f"raw.web-activity.{suffix}"
    outs = [f"anon.aggregates.{n}.{suffix}" for n in names]
    create_topics(kafka_bootstrap, {source: 1})
    settings = _settings(kafka_bootstrap, suffix, pdir, "dps")

    def statuses(records: list[dict[str, Any]], name: str) -> list[str]:
        return [s for _, s in _summaries([r for r in records if r["pipeline"] == name])]

    asyncio.run(_produce(kafka_bootstrap, source, [0]))
    _run_to_end(settings, pdir)
    asyncio.run(_produce(kafka_bootstrap, source, [1, 2]))
    _run_to_end(settings, pdir)
    records = asyncio.run(read_releases(
        kafka_bootstrap, outs, until=lambda rs: len(_summaries(rs)) >= 6, timeout=60
    ))  # fmt: skip
    for name in names:
        assert statuses(records, name) == ["released", "budget_exhausted", "budget_exhausted"]
    assert {r["privacy"]["budget"] for r in records if r["kind"] == "window_summary"} == {"people"}
    charges = asyncio.run(read_ledger_topic(kafka_bootstrap, settings.ledger_topic))
    assert sorted((c["pipeline"], c["start_ms"]) for c in charges) == [
        ("dpusage", T0), ("dpweb", T0),
    ]  # fmt: skip
    assert all(c["budget"] == "people" and c["digest"] for c in charges)
    report = audit_records(records, ledger=charges)
    assert report.ok, report.render()
    assert not [f for f in report.findings if f.rule == "ledger"]


async def _rewind(bootstrap: str, group: str, topic: str) -> None:
    """A backfill: the group's committed offset on `topic` back to 0, with no checkpoint,
    so the next worker of the group reads the whole topic again from an empty state."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: 0})
    finally:
        await consumer.stop()


async def _all_records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every committed record of `topic`, to its end offsets."""
    from anonstream.runtime.topic_end import partitions_of, read_to_end

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        return [
            json.loads(m.value)
            async for _, msgs in read_to_end(consumer, tps, timeout=60)
            for m in msgs
        ]
    finally:
        await consumer.stop()


def test_backfill_with_one_more_person_does_not_release_the_window_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Issue 14's re-release case on the real broker: after hour 0 is released, a backfill
    (the group rewound to offset 0, no checkpoint) reads hour 0 again with one person more.
    The worker finds the window in the ledger topic and publishes nothing for it: no second,
    different release, no second charge; the new hour 1 is released and charged as usual.
    (Releasing it again needs the operator's switch: the next test.)"""
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    create_topics(kafka_bootstrap, {source: 1})
    settings = _settings(kafka_bootstrap, suffix, pdir, "dpb")
    asyncio.run(_produce(kafka_bootstrap, source, [0]))
    _run_to_end(settings, pdir)
    first = asyncio.run(_all_records(kafka_bootstrap, out))
    assert [s for _, s in _summaries(first)] == ["released"]
    first_aggs = sorted(json.dumps(r, sort_keys=True) for r in first if r["kind"] == "aggregate")
    assert first_aggs

    async def one_more_person_and_hour_1() -> None:
        await _newcomer_in_hour_0(kafka_bootstrap, source)
        await _produce(kafka_bootstrap, source, [1])

    asyncio.run(one_more_person_and_hour_1())
    asyncio.run(_rewind(kafka_bootstrap, settings.group_id, source))
    _run_to_end(settings, pdir)
    records = asyncio.run(_all_records(kafka_bootstrap, out))
    # Hour 0: still the one summary and the first run's aggregates, nothing else.
    assert [s for _, s in _summaries(records)] == ["released", "released"]
    hour0 = [r for r in records if r["window_start"] == first[0]["window_start"]]
    assert sorted(json.dumps(r, sort_keys=True) for r in hour0 if r["kind"] == "aggregate") == (
        first_aggs
    )
    store = KafkaLedgerStore(settings.ledger_topic)
    asyncio.run(store.read(kafka_bootstrap, {}))
    assert sorted((c.start_ms, c.rerelease) for c in store.load()) == [
        (T0, False), (T0 + HOUR, False),
    ]  # fmt: skip


async def _newcomer_in_hour_0(bootstrap: str, source: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        ev = {
            "event_id": "e-0-newcomer", "ts": T0 + 120_000, "type": "page_view",
            "visitor_id": "newcomer", "url": "https://www.example.com/",
        }  # fmt: skip
        await producer.send(source, orjson.dumps(ev), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def test_the_operator_switch_releases_a_window_again_and_charges_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The same backfill as above (hour 0 again, one person more) with the worker's
    re-release switch (ANONSTREAM_ALLOW_RERELEASE): hour 0 is published a second time, and
    the ledger holds a second charge of it, marked as a re-release; the period's spending
    grows by the window's loss."""
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    create_topics(kafka_bootstrap, {source: 1})
    settings = _settings(kafka_bootstrap, suffix, pdir, "dpr")
    asyncio.run(_produce(kafka_bootstrap, source, [0]))
    _run_to_end(settings, pdir)
    asyncio.run(_newcomer_in_hour_0(kafka_bootstrap, source))
    asyncio.run(_rewind(kafka_bootstrap, settings.group_id, source))
    _run_to_end(settings.model_copy(update={"allow_rerelease": True}), pdir)
    records = asyncio.run(_all_records(kafka_bootstrap, out))
    summaries = [r for r in records if r["kind"] == "window_summary"]
    assert [(r["window_start"], r["privacy"]["status"]) for r in summaries] == [
        (summaries[0]["window_start"], "released"), (summaries[0]["window_start"], "released"),
    ]  # fmt: skip
    first, second = (r["privacy"] for r in summaries)
    assert second["period_epsilon_spent"] == pytest.approx(
        first["period_epsilon_spent"] + second["window_epsilon"]
    )
    store = KafkaLedgerStore(settings.ledger_topic)
    asyncio.run(store.read(kafka_bootstrap, {}))
    charges = store.load()
    assert [(c.start_ms, c.rerelease) for c in charges] == [(T0, False), (T0, True)]
    # Both releases carry a digest; they may be equal: fresh noise on 150 or 151 people
    # can round to the same released numbers (it did, about one run in five).
    assert charges[0].digest and charges[1].digest
    assert len([r for r in records if r["kind"] == "aggregate"]) >= 2  # both published


def test_a_backfill_under_a_new_group_continues_the_spending(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The ledger belongs to the installation, not to the consumer group: a backfill under
    a new group.id (its own offsets, from the beginning) finds hour 0 charged by the first
    group and does not release it again; it releases hour 1, and hour 2 no longer fits the
    period's budget. An earlier version's per-group topic (anon.ledger.<group>) is read too,
    never written: a charge there counts, for the group's windows and the others'."""
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    create_topics(kafka_bootstrap, {source: 1})
    first = _settings(kafka_bootstrap, suffix, pdir, "dpg1")
    asyncio.run(_produce(kafka_bootstrap, source, [0]))
    _run_to_end(first, pdir)
    asyncio.run(_produce(kafka_bootstrap, source, [1, 2]))
    backfill = first.model_copy(update={"group_id": f"it-dpg2-{suffix}"})
    _run_to_end(backfill, pdir)
    records = asyncio.run(_all_records(kafka_bootstrap, out))
    # One summary per window: hour 0 is not released a second time.
    assert [s for _, s in _summaries(records)] == ["released", "released", "budget_exhausted"]
    store = KafkaLedgerStore(first.ledger_topic)
    asyncio.run(store.read(kafka_bootstrap, {}))
    assert sorted(c.start_ms for c in store.load()) == [T0, T0 + HOUR]

    # An upgraded deployment: what an earlier version charged on anon.ledger.<group> counts.
    legacy_group = f"it-dpg3-{suffix}"
    legacy = f"anon.ledger.{legacy_group}"
    create_topics(kafka_bootstrap, {legacy: 1})
    old = Charge("dpledger", "default", T0 + DAY, T0 + DAY + HOUR, T0 + DAY, 4.0, 1e-6)

    async def write_legacy() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            key = f"dpledger/default/{T0 + DAY}/0".encode()
            await producer.send_and_wait(legacy, json.dumps(asdict(old)).encode(), key=key)
        finally:
            await producer.stop()

    asyncio.run(write_legacy())
    asyncio.run(_produce(kafka_bootstrap, source, [24, 25]))
    upgraded = first.model_copy(update={"group_id": legacy_group})
    _run_to_end(upgraded, pdir)
    records = asyncio.run(_all_records(kafka_bootstrap, out))
    next_day = sorted(
        (r["window_start"], r["privacy"]["status"])
        for r in records
        if r["kind"] == "window_summary" and r["privacy"]["period_start_ms"] == T0 + DAY
    )
    # Hour 24 was charged by the earlier version: not released again (no summary); hour 25
    # costs 2 more than the 4 already spent, over the budget of 5.
    assert [s for _, s in next_day] == ["budget_exhausted"]
    legacy_store = KafkaLedgerStore(legacy)
    asyncio.run(legacy_store.read(kafka_bootstrap, {}))
    assert legacy_store.load() == [old]  # never written


def test_the_ledger_read_waits_for_a_transaction_open_when_it_began(
    kafka_bootstrap: str,
) -> None:
    """A worker that has just lost its partitions may have committed a charge whose commit
    marker is not written yet, or still have it open: a read_committed end would stop
    before it. The ledger read goes to the end a read_uncommitted reader sees, so it waits
    until the transaction ends: a commit is seen, and past the timeout it stops the
    worker (LedgerNotRead) rather than release with the spending unknown."""
    from anonstream.runtime.ledger import LedgerNotRead

    topic = f"anon.ledger.it-open-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    charge = Charge("p", "default", T0, T0 + HOUR, T0, 2.0, 1e-6)

    async def scenario() -> list[Charge]:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"{topic}-txn"
        )
        await producer.start()
        try:
            await producer.begin_transaction()
            await producer.send_and_wait(topic, json.dumps(asdict(charge)).encode(), key=b"k")
            store = KafkaLedgerStore(topic)
            with pytest.raises(LedgerNotRead):
                await store.read(kafka_bootstrap, {}, timeout=2.0)
            reading = asyncio.ensure_future(store.read(kafka_bootstrap, {}, timeout=60.0))
            await asyncio.sleep(1.0)
            assert not reading.done()  # waiting at the open transaction
            await producer.commit_transaction()
            await reading
            return store.load()
        finally:
            await producer.stop()

    assert asyncio.run(scenario()) == [charge]


async def _until(cond: Any, timeout: float, what: str) -> None:
    """Wait for `cond()` (a deadline for a hung test, not a speed limit)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.1)


def test_a_running_worker_learns_the_charges_of_a_backfill_beside_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Production (one group) holds hour 0 open; a backfill of the same pipeline under
    another group releases and charges hour 0 meanwhile. Production reads the ledger
    topic's news each second, so when its watermark passes hour 0 it refuses the window
    (already_released) instead of publishing a second, different release of it and
    charging the budget again. It read the ledger only at its start before."""
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    create_topics(kafka_bootstrap, {source: 1})
    prod_settings = _settings(kafka_bootstrap, suffix, pdir, "dpprod", idle_close_seconds=3600)
    backfill_settings = prod_settings.model_copy(update={"group_id": f"it-dpback-{suffix}"})
    ps = [load_pipeline(f) for f in sorted(pdir.glob("*.yaml"))]
    secret = load_secret({"ANONSTREAM_SECRET": SECRET})
    from anonstream.runtime.run import ensure_output_topics

    def loop_of(settings: Settings, stop_at_end: bool) -> BatchLoop:
        return BatchLoop(
            settings, ps, secret, Metrics(), stop_at_end=stop_at_end,
            prepare=lambda: ensure_output_topics(settings, ps),
        )  # fmt: skip

    def events_read(loop: BatchLoop) -> int:
        stage = loop.stages.get("dpledger")
        return int(getattr(stage, "counters", {}).get("events_in", 0))

    async def scenario() -> list[dict[str, Any]]:
        await _produce(kafka_bootstrap, source, [0])
        prod = loop_of(prod_settings, stop_at_end=False)
        running = asyncio.ensure_future(prod.run())
        try:
            await _until(lambda: events_read(prod) >= 150, 90, "production read hour 0")
            await asyncio.wait_for(loop_of(backfill_settings, stop_at_end=True).run(), 120)
            book = prod._ledgers["dpledger"]
            await _until(
                lambda: ("dpledger", "default", T0) in book._released, 30,
                "production learned the backfill's charge",
            )  # fmt: skip
            await _produce(kafka_bootstrap, source, [1, 2])  # hour 0 closes, hour 1 too
            return await read_releases(
                kafka_bootstrap, [out], until=lambda rs: len(_summaries(rs)) >= 2, timeout=90
            )
        finally:
            await prod.stop()
            await asyncio.wait_for(running, 60)

    records = asyncio.run(scenario())
    # Production says nothing of hour 0 (a window already released is not sent again);
    # without the news it published hour 0 a second time before hour 1.
    h0, h1 = sorted({r["window_start"] for r in records if r["kind"] == "window_summary"})
    assert _summaries(records) == [(h0, "released"), (h1, "released")]
    (last,) = [
        r["privacy"] for r in records if r["kind"] == "window_summary" and r["window_start"] == h1
    ]
    assert last["period_epsilon_spent"] == pytest.approx(2 * last["window_epsilon"])
    store = KafkaLedgerStore(prod_settings.ledger_topic)
    asyncio.run(store.read(kafka_bootstrap, {}))
    assert sorted(c.start_ms for c in store.load()) == [T0, T0 + HOUR]  # hour 0 charged once
