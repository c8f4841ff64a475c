"""The benchmark's JVM peer (load/jvm, Kafka Streams) on the real broker (issue 16).

The first test feeds it hand-made events and checks what it releases: k distinct people per
hourly cell (a person counts once whatever the spelling of their email), nothing below k,
bad input counted and dropped, no identifier in the output. The second runs it as the
``kstreams`` rows of ``anonstream bench`` next to anonstream on a small workload. No timing
is asserted. The peer is built with Maven on first use (then cached), so this is slow once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from anonstream.broker.topics import create_topics
from anonstream.synthetic.produce import produce
from anonstream_load.harness import BENCH_SECRET, KafkaProbe, json_line
from anonstream_load.kstreams import ensure_peer_jar, peer_command

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_764_460_800_000  # 2025-11-30T00:00:00Z, on an hour
K = 3
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def _event(n: int, ts: object, url: str, **who: str) -> bytes:
    ev = {
        "event_id": str(uuid.UUID(int=n)), "ts": ts, "type": "page_view", "url": url,
        "user_agent": CHROME, "ip": f"192.0.2.{n % 250 + 1}", "customer_id": f"cust-{n}",
        **who,
    }  # fmt: skip
    return orjson.dumps(ev)


def _workload() -> tuple[list[bytes], set[str]]:
    """Events and the identifiers that must never come out."""
    values: list[bytes] = []
    secrets: set[str] = set()
    n = 0

    def add(ts: object, url: str, **who: str) -> None:
        nonlocal n
        n += 1
        values.append(_event(n, ts, url, **who))
        secrets.update(who.values())
        secrets.add(f"cust-{n}")

    # Hour 0, /pricing: exactly K people, one of them under three spellings of one email
    # and with many events: K distinct people, released.
    for spelling in ("jane.doe@example.com", " Jane.Doe@Example.COM", "JANE.DOE@example.com "):
        for i in range(4):
            add(T0 + 60_000 * i, "https://www.example.com/pricing?x=1", user_email=spelling)
    add(T0 + 5_000, "https://www.example.com/pricing", visitor_id="v-0001aa")
    add("2025-11-30T00:10:00Z", "https://www.example.com/pricing", visitor_id="v-0002bb")
    # Hour 0, /docs: K - 1 people, each with many events: not released.
    for i in range(20):
        add(T0 + 1_000 * i, "https://www.example.com/docs", visitor_id=f"v-docs-{i % (K - 1)}")
    # Hour 1, a user page (an email in the path): K people, released under ":email".
    for i in range(K):
        add(
            "2025-11-30T02:30:00+01:00",  # 01:30Z
            f"https://www.example.com/users/person{i}@example.org/settings",
            visitor_id=f"v-users-{i}",
        )
    # Bad input: counted and dropped.
    values.append(b"{not json")
    values.append(orjson.dumps({"type": "page_view", "url": "https://www.example.com/"}))  # no ts
    values.append(orjson.dumps({"ts": T0, "type": "page_view", "url": "https://www.example.com/"}))
    values.append(b"[1, 2, 3]")
    return values, secrets


def test_the_peer_releases_k_distinct_people_per_cell(kafka_bootstrap: str) -> None:
    jar = ensure_peer_jar()
    tag = uuid.uuid4().hex[:8]
    topic, out = f"kstreams-peer-{tag}", f"kstreams-peer-{tag}.out"
    create_topics(kafka_bootstrap, {topic: 2, out: 1})
    values, secrets = _workload()
    asyncio.run(produce(kafka_bootstrap, ((topic, v) for v in values), total=len(values)))
    cmd = peer_command(
        jar, bootstrap=kafka_bootstrap, topic=topic, output=out, group=f"kstreams-peer-{tag}",
        events=len(values), partitions=2, threads=1, k=K, timeout_s=240,
    )  # fmt: skip
    proc = subprocess.run(
        cmd, env={**os.environ, "ANONSTREAM_SECRET": BENCH_SECRET}, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    report = json_line(proc.stdout)
    assert report is not None
    assert report["count"] == len(values)
    assert report["rejected"] == 4
    assert report["late"] == 0
    with KafkaProbe(kafka_bootstrap) as probe:
        raw = probe.read_all(out)
        probe.delete_topics([t for t in probe.topics() if tag in t])
    released = sorted(
        (r["window_start"], r["url"], r["user_agent"], r["people"]) for r in map(json.loads, raw)
    )
    chrome = "Chrome 131 / Windows"
    assert released == [
        ("2025-11-30T00:00:00Z", "www.example.com/pricing", chrome, K),
        ("2025-11-30T01:00:00Z", "www.example.com/users/:email/settings", chrome, K),
    ]
    assert report["released_cells"] == 2
    text = b"\n".join(raw).decode() + proc.stdout + proc.stderr
    for secret in secrets:  # neither in the output nor in the peer's own logs
        assert secret.strip().lower() not in text.lower(), "an identifier came out"
    assert "192.0.2." not in text and BENCH_SECRET not in text


def test_bench_kstreams_rows_next_to_anonstream(kafka_bootstrap: str, tmp_path: Path) -> None:
    events = 20_000
    proc = subprocess.run(
        [
            sys.executable, "-m", "anonstream_load.bench", "--bootstrap", kafka_bootstrap,
            "--events", str(events), "--users", "2000", "--partitions", "2",
            "--runs", "anonstream,kstreams", "--chart", str(tmp_path / "bench.png"),
            "--timeout", "300",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    names = ["anonstream", "kstreams"] + (["kstreams_all"] if (os.cpu_count() or 1) > 1 else [])
    assert list(summary["runs"]) == names
    for name in names:
        run = summary["runs"][name]
        assert run["ok"], (name, run["error"])
        assert run["count"] == events
        for figure in ("events_per_s", "seconds", "cpu_seconds", "peak_rss_mib"):
            assert run[figure] > 0, (name, figure)
    single, threads_all = summary["runs"]["kstreams"], summary["runs"].get("kstreams_all")
    assert single["threads"] == 1 and single["guarantee"] == "exactly_once_v2"
    if threads_all is not None:
        assert threads_all["threads"] == os.cpu_count()
        # The thread count changes nothing in what is released.
        assert threads_all["releases"] == single["releases"]
    assert summary["ratio_kafka_streams"] > 0 and summary["cpu_ratio_kafka_streams"] > 0
    # The same job on the same input: released cells of the same order of magnitude.
    mine = summary["runs"]["anonstream"]["releases"]["aggregate"]
    theirs = single["releases"]["aggregate"]
    assert mine > 0 and theirs > 0
    assert 0.1 <= theirs / mine <= 10, (mine, theirs)
    assert single["aggregates_vs_anonstream"] == round(theirs / mine, 3)
