"""dp outputs in scale-out on the real broker: two workers, one period's budget, spent
exactly once whoever releases the windows.

A dp pipeline whose daily budget pays for two hourly windows, run by two scale-out worker
processes. Hours 0-3 of one day: two windows are released, the next two are not
(`budget_exhausted`). Then the workers change: the one that released stops and a new one
joins (a rebalance), hour 4 comes; then the other first worker stops (the new one owns
everything), hour 5 comes. The new owners read the ledger before releasing anything: hours
4 and 5 are not released either, and the ledger holds exactly the two first charges, no
window twice.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from anonstream.broker.topics import create_topics
from anonstream.runtime.ledger import KafkaLedgerStore
from anonstream.testing import WorkerProcess, read_releases
from tests.integration.helpers import SECRET
from tests.integration.test_dp_ledger import HOUR, T0, _pipeline, _produce

pytestmark = pytest.mark.integration


def _released_here(w: WorkerProcess) -> bool:
    """Whether this worker's release stage published a window (its log says so)."""
    assert w.log_path is not None
    return "dpledger: released" in w.log_path.read_text(errors="replace")


def _summaries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (r for r in records if r["kind"] == "window_summary"), key=lambda r: r["window_start"]
    )


def test_two_scale_out_workers_spend_a_period_once_across_rebalances(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    pdir = _pipeline(tmp_path, suffix)
    source, out = f"raw.web-activity.{suffix}", f"anon.aggregates.dpledger.{suffix}"
    ledger = f"anon.ledger.it-{suffix}"
    create_topics(kafka_bootstrap, {source: 2})
    env = {
        "ANONSTREAM_SCALE_OUT": "true", "ANONSTREAM_PARTIALS_PARTITIONS": "4",
        "ANONSTREAM_LEDGER_TOPIC": ledger, "ANONSTREAM_STATIC_MEMBERSHIP": "false",
        "ANONSTREAM_DEAD_LETTER_TOPIC": f"anon.deadletter.{suffix}",
    }  # fmt: skip

    def worker(slot: str) -> WorkerProcess:
        return WorkerProcess(
            kafka_bootstrap, pipelines_dir=pdir, group_id=f"it-dpso-{suffix}",
            idle_close_seconds=3.0, secret=SECRET, log_path=tmp_path / f"{slot}.log",
            extra_env={**env, "ANONSTREAM_INSTANCE_ID": slot},
        )  # fmt: skip

    def wait_for(n: int) -> list[dict[str, Any]]:
        records = asyncio.run(read_releases(
            kafka_bootstrap, [out], until=lambda rs: len(_summaries(rs)) >= n, timeout=150
        ))  # fmt: skip
        assert len(_summaries(records)) >= n, [w.log_path for w in workers]
        return records

    a, b = worker("a"), worker("b")
    workers = [a, b]
    try:
        a.start()
        b.start()
        asyncio.run(_produce(kafka_bootstrap, source, [0, 1, 2, 3], partitions=2))
        records = wait_for(4)
        statuses = [r["privacy"]["status"] for r in _summaries(records)]
        assert statuses == ["released", "released", "budget_exhausted", "budget_exhausted"]

        # The worker that released stops: the other one, which may not have seen those
        # charges yet, and a new worker share the partitions (a rebalance).
        spender = next(w for w in (a, b) if _released_here(w))
        other = b if spender is a else a
        spender.stop()
        c = worker("c")
        workers.append(c)
        c.start()
        asyncio.run(_produce(kafka_bootstrap, source, [4], partitions=2))
        wait_for(5)
        other.stop()  # c owns every partition now
        asyncio.run(_produce(kafka_bootstrap, source, [5], partitions=2))
        records = wait_for(6)
        assert c.proc is not None and c.proc.poll() is None, "the last worker died"
    finally:
        for w in workers:
            w.stop()
    summaries = _summaries(records)
    starts = [r["window_start"] for r in summaries]
    assert len(starts) == len(set(starts)) == 6  # one summary per window
    assert [r["privacy"]["status"] for r in summaries] == (
        ["released"] * 2 + ["budget_exhausted"] * 4
    )
    assert all(r["privacy"]["period_epsilon_spent"] <= 5.0 for r in summaries)
    released = {r["window_start"] for r in summaries[:2]}
    assert {r["window_start"] for r in records if r["kind"] == "aggregate"} <= released
    store = KafkaLedgerStore(ledger)
    asyncio.run(store.read(kafka_bootstrap, {}))
    charges = store.load()
    assert sorted(c.start_ms for c in charges) == [T0, T0 + HOUR]  # no window charged twice
    assert not any(c.rerelease for c in charges)
