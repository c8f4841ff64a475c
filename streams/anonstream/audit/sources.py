"""Where the audit reads releases from: records in memory, a JSONL file, an output topic
(read to its end), and the `anonstream audit` command over the last two."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from anonstream.audit.record_rules import Auditor
from anonstream.audit.report import AuditReport

IDLE_SECONDS = 2.0  # a topic with no new message for this long is read to its end
CLI_TOPIC_TIMEOUT = 60.0


def audit_records(
    records: Iterable[Any], *, k: int | None = None, assume_totals: bool = False,
    ledger: list[dict[str, Any]] | None = None,
) -> AuditReport:  # fmt: skip
    """Audit release records (dicts) in stream order; `k` is the minimum k to demand;
    `ledger`: the privacy ledger's charges, to check dp windows against (rule ledger)."""
    auditor = Auditor(k, assume_totals, ledger)
    for rec in records:
        auditor.add(rec)
    return auditor.finish()


def audit_file(
    path: Path | str, *, k: int | None = None, assume_totals: bool = False,
    ledger: list[dict[str, Any]] | None = None,
) -> AuditReport:  # fmt: skip
    """Audit a JSONL file of releases; findings carry 1-based line numbers."""
    auditor = Auditor(k, assume_totals, ledger)
    auditor.report.source = str(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                auditor.report.records += 1
                auditor.find(None, n, "schema", "line is not valid JSON")
                continue
            auditor.add(rec, n)
    return auditor.finish()


async def audit_topic(
    bootstrap: str,
    topic: str,
    timeout: float = 10.0,
    *,
    k: int | None = None,
    assume_totals: bool = False,
    ledger: list[dict[str, Any]] | None = None,
    **client_options: Any,
) -> AuditReport:
    """Audit an output topic from its beginning: read until every partition reaches the end
    offset seen at the start, or no message came for ~2 s, or `timeout` seconds passed."""
    from aiokafka import AIOKafkaConsumer

    from anonstream.runtime.topic_end import EndNotReached, partitions_of, read_to_end

    auditor = Auditor(k, assume_totals, ledger, whole_topic=True)
    auditor.report.source = f"kafka topic {topic} at {bootstrap}"
    opts: dict[str, Any] = {"isolation_level": "read_committed", **client_options}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", **opts,
    )  # fmt: skip
    await consumer.start()
    try:
        # Checked before assigning: a subscription to a missing topic may auto-create it.
        if topic not in await consumer.topics():
            raise LookupError(f"topic {topic!r} does not exist")
        tps = await partitions_of(consumer, topic)
        try:
            async for tp, msgs in read_to_end(
                consumer, tps, timeout=timeout, idle_seconds=IDLE_SECONDS, poll_ms=250
            ):
                for m in msgs:
                    try:
                        rec = orjson.loads(m.value) if m.value is not None else None
                    except orjson.JSONDecodeError:
                        rec = None
                    if rec is None:
                        auditor.report.records += 1
                        auditor.find(
                            None, None, "schema",
                            f"partition {tp.partition} offset {m.offset}: not a JSON record",
                        )  # fmt: skip
                        continue
                    auditor.add(rec)
        except EndNotReached:
            if auditor.ledger is not None:
                auditor.ledger.complete = False  # charged windows may lie past what was read
            auditor.find(
                None, None, "sanity",
                f"stopped at the {timeout:g} s timeout before the end of the topic: the "
                "audit covers only the records read",
            )  # fmt: skip
    finally:
        await consumer.stop()
    return auditor.finish()


def run_audit_cli(
    input: Path | None,
    topic: str | None,
    bootstrap: str | None,
    k: int | None,
    assume_totals: bool,
    as_json: bool,
    ledger: Path | None = None,
    ledger_topic: str | Sequence[str] | None = None,
) -> int:
    """`anonstream audit`: prints the report; exit 0 if clean, 1 on findings, 2 on usage
    errors or when the input cannot be read."""
    if (input is None) == (topic is None):
        print("anonstream audit: give exactly one of --input FILE or --topic T", file=sys.stderr)
        return 2
    if k is not None and k < 1:
        print("anonstream audit: --k must be a positive integer", file=sys.stderr)
        return 2
    try:
        charges = _ledger_charges(ledger, ledger_topic, bootstrap)
        if input is not None:
            report = audit_file(input, k=k, assume_totals=assume_totals, ledger=charges)
        else:
            assert topic is not None
            from anonstream.settings import Settings

            settings = Settings()
            reading = audit_topic(
                bootstrap or settings.bootstrap_servers, topic, CLI_TOPIC_TIMEOUT,
                k=k, assume_totals=assume_totals, ledger=charges,
                **settings.kafka_client_options(),
            )  # fmt: skip
            report = asyncio.run(reading)
    except Exception as exc:  # a missing file, topic or broker: report it, no traceback
        print(f"anonstream audit: cannot read the input: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    print(report.to_json() if as_json else report.render())
    return 0 if report.ok else 1


def _ledger_charges(
    path: Path | None, topic: str | Sequence[str] | None, bootstrap: str | None
) -> list[dict[str, Any]] | None:
    """The privacy ledger of `--ledger FILE` or `--ledger-topic T` (repeatable: the charges
    of every topic given, e.g. the installation's and an earlier version's per-group one)."""
    from anonstream.audit.ledger import read_ledger_file, read_ledger_topic

    if path is not None:
        return read_ledger_file(path)
    topics = [topic] if isinstance(topic, str) else list(topic or [])
    if not topics:
        return None
    from anonstream.settings import Settings

    settings = Settings()
    charges: list[dict[str, Any]] = []
    for t in topics:
        charges += asyncio.run(read_ledger_topic(
            bootstrap or settings.bootstrap_servers, t, **settings.kafka_client_options()
        ))  # fmt: skip
    return charges
