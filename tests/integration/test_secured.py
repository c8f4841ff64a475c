"""A secured cluster, for real: SASL_SSL (SCRAM-SHA-512) and the standard authorizer.

A second broker, of this module only, requires TLS and SCRAM on its one client listener
and allows nothing without an ACL (the admin is the only super user). The worker runs with
exactly the ACLs `anonstream topics plan` prints, on topics `anonstream topics create`
made; a partner principal with the plan's reader ACLs reads the aggregates and is refused
the raw and dead-letter topics; a wrong password ends the worker at start, in one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from anonstream.broker.local import LocalKafka, run_sync
from anonstream.broker.secure import Scram, acreate_acls
from anonstream.core.pipeline import load_pipeline
from anonstream.synthetic import EventGenerator, Workload
from anonstream.testing import WorkerProcess, summaries_complete
from tests.integration.helpers import ROOT, SECRET, Setup, assert_equal_to_replay, expected_windows

pytestmark = pytest.mark.integration

USERS = {
    "admin": "admin-Secret-1",
    "worker": "worker-Secret-2",
    "partner": "partner-Secret-3",
    "dashboard": "dashboard-Secret-4",
}
BOUND_S = 90  # the worker's documented start-up bound (45 s by default) plus slack


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[str, Scram]]:
    security = Scram(dict(USERS))
    with LocalKafka(security=security, die_with_parent=True) as kafka:
        yield kafka.bootstrap_servers, security


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANONSTREAM_")}
    proc = subprocess.run(
        [sys.executable, "-m", "anonstream.cli", *args],
        env={**base, "COLUMNS": "400", "NO_COLOR": "1", **env},
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def pipelines_of_their_own(tmp: Path) -> Setup:
    """The shipped pipelines on topics of this test (names made here, never created)."""
    suffix = uuid.uuid4().hex[:8]
    d = tmp / "pipelines"
    d.mkdir()
    contract_topic = {"web_activity": "raw.web-activity", "service_usage": "raw.usage"}
    for src in sorted((ROOT / "pipelines").glob("*.yaml")):
        doc = yaml.safe_load(src.read_text())
        doc["source_topic"] = f"{contract_topic[doc['contract']]}.{suffix}"
        outputs = doc.get("outputs") or [{"name": "default"}]
        for o in outputs:
            o["topic"] = f"anon.aggregates.{doc['pipeline']}.{o['name']}.{suffix}"
        doc["outputs"] = outputs
        (d / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    pipes = {p.name: p for p in (load_pipeline(f) for f in sorted(d.glob("*.yaml")))}
    return Setup(d, pipes, suffix, f"anon.deadletter.{suffix}")


async def produce_as(
    bootstrap: str, options: dict[str, Any], records: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(t, v) for t, v in records])
    finally:
        await producer.stop()


async def read_as(
    bootstrap: str,
    options: dict[str, Any],
    topics: list[str],
    until: Any,
    timeout: float = 120,
) -> list[Any]:
    """Records of ``topics`` from the start (no group: assigned partitions, as a partner
    may read), until ``until(records)`` holds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", **options,
    )  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(t, 0) for t in topics]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(records)} records read from {topics}")
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


def refused(bootstrap: str, options: dict[str, Any], topic: str) -> bool:
    """Whether ``topic`` is closed to this principal: the broker says it may not even
    describe it (Read implies Describe in Kafka, so it may not read it either), and a
    consumer gets nothing from it."""

    async def attempt() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] != TopicAuthorizationFailedError.errno:
            return False
        try:
            got = await read_as(bootstrap, options, [topic], lambda r: bool(r), timeout=8)
        except TopicAuthorizationFailedError:
            return True
        except TimeoutError:
            return True  # nothing came
        return not got

    return run_sync(attempt)


def test_worker_runs_end_to_end_with_only_the_planned_acls(
    secured: tuple[str, Scram], tmp_path: Path
) -> None:
    bootstrap, security = secured
    setup = pipelines_of_their_own(tmp_path)
    group = f"sec-{setup.suffix}"
    env = {
        "ANONSTREAM_BOOTSTRAP_SERVERS": bootstrap, "ANONSTREAM_GROUP_ID": group,
        "ANONSTREAM_PIPELINES_DIR": str(setup.dir),
        "ANONSTREAM_DEAD_LETTER_TOPIC": setup.dead_letter_topic,
    }  # fmt: skip
    # 1. The plan, as printed; the admin grants exactly its ACLs and creates its topics.
    planned = cli(
        "topics", "plan", "--json", "--worker-principal", "User:worker",
        "--reader-principal", "User:partner", "--dashboard-principal", "User:dashboard",
        env=env,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    run_sync(lambda: acreate_acls(bootstrap, plan["acls"], security.client_options()))
    created = cli(
        "topics", "create", "--input-partitions", "2", env={**env, **security.client_env("admin")}
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.count("created") == len(plan["topics"]), created.stdout

    # 2. Raw events, and one that is not JSON (for the dead-letter topic).
    gen = EventGenerator(Workload(users=300, events_per_second_of_event_time=1.5, seed=5))
    name_of = {"raw.web-activity": "web_activity", "raw.usage": "service_usage"}
    events: list[tuple[str, Any]] = [(name_of[t], ev) for t, ev in gen.mixed(3000)]
    events.append(("web_activity", b"not json at all"))
    raw = [(setup.source(n), ev if isinstance(ev, bytes) else orjson.dumps(ev)) for n, ev in events]
    run_sync(lambda: produce_as(bootstrap, security.client_options(), raw))

    # 3. The worker, as itself, the password from a file.
    password_file = tmp_path / "worker-password"
    password_file.write_text(USERS["worker"] + "\n")
    worker_env = {
        **security.client_env("worker"),
        "ANONSTREAM_SASL_PASSWORD_FILE": str(password_file),
    }
    del worker_env["ANONSTREAM_SASL_PASSWORD"]
    worker = WorkerProcess(
        bootstrap, pipelines_dir=setup.dir, secret=SECRET, group_id=group,
        idle_close_seconds=3.0, log_path=tmp_path / "worker.log",
        extra_env={"ANONSTREAM_DEAD_LETTER_TOPIC": setup.dead_letter_topic, **worker_env},
    )  # fmt: skip
    try:
        worker.start(timeout=BOUND_S)
    except RuntimeError as exc:
        raise AssertionError((tmp_path / "worker.log").read_text()) from exc
    try:
        windows = expected_windows(setup, events)
        partner = security.client_options("partner")
        records = run_sync(
            lambda: read_as(
                bootstrap, partner, setup.output_topics,
                lambda rs: summaries_complete(windows)([orjson.loads(r.value) for r in rs]),
            )
        )  # fmt: skip
        releases = [orjson.loads(r.value) for r in records]
        # 4. What the partner may not read: raw events and rejects.
        assert refused(bootstrap, partner, setup.source("web_activity"))
        assert refused(bootstrap, partner, setup.dead_letter_topic)
        assert refused(
            bootstrap, security.client_options("dashboard"), setup.source("service_usage")
        )
        # ... though both hold data (the admin reads them), so the refusal is not vacuous.
        admin = security.client_options()
        dead = run_sync(
            lambda: read_as(bootstrap, admin, [setup.dead_letter_topic], lambda r: bool(r))
        )
        assert dead[0].value == b"not json at all"
    finally:
        code = worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log
    assert "Authorization" not in log and "not authorized" not in log, log
    assert USERS["worker"] not in log
    assert_equal_to_replay(setup, events, releases)


def test_wrong_password_fails_the_worker_at_start_in_one_line(
    secured: tuple[str, Scram], tmp_path: Path
) -> None:
    bootstrap, security = secured
    setup = pipelines_of_their_own(tmp_path)
    wrong = "not-the-Password-9"
    env = {
        **security.client_env("worker", wrong),
        "ANONSTREAM_BOOTSTRAP_SERVERS": bootstrap, "ANONSTREAM_PIPELINES_DIR": str(setup.dir),
        "ANONSTREAM_SECRET": SECRET, "ANONSTREAM_WEB_ENABLED": "false",
    }  # fmt: skip
    t0 = time.monotonic()
    done = cli("worker", env=env, timeout=BOUND_S)
    elapsed = time.monotonic() - t0
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "authentication failed for SASL user 'worker' (SCRAM-SHA-512)" in output, output
    assert wrong not in output and USERS["worker"] not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert elapsed < BOUND_S


def test_unauthorized_worker_is_told_which_acls_it_lacks(
    secured: tuple[str, Scram], tmp_path: Path
) -> None:
    """A principal with no ACL at all: its input topics are not describable. It exits 1 at
    once, naming them, instead of waiting for topics it will never see."""
    bootstrap, security = secured
    setup = pipelines_of_their_own(tmp_path)
    env = {
        **security.client_env("dashboard"),
        "ANONSTREAM_BOOTSTRAP_SERVERS": bootstrap, "ANONSTREAM_PIPELINES_DIR": str(setup.dir),
        "ANONSTREAM_SECRET": SECRET, "ANONSTREAM_WEB_ENABLED": "false",
    }  # fmt: skip
    done = cli("worker", env=env, timeout=BOUND_S)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "not authorized to describe input topics" in output, output
    assert setup.source("web_activity") in output and "User:dashboard" in output
