"""The audit's ledger rule: a dp stream against the privacy ledger that paid for it.

`anonstream audit --ledger FILE` (a JSONL dump, one charge per line, as `anonstream replay
--ledger` writes) or `--ledger-topic anon.ledger` (the worker's compacted topic)
adds the rule ``ledger`` to an audit of a dp output stream:

- every dp window the stream releases is charged in the ledger, at the loss its summary
  declares and in the period it names;
- its aggregates (one per release_id) hash to the digest the ledger recorded when it was
  charged: what was published is what was paid for;
- no window is charged twice with different content, unless the ledger marks the second
  charge as an operator-allowed re-release (then a warning: both are paid for);
- every window the ledger charged to an output the stream holds is in the stream: an error
  for a topic read from its beginning to its end (the worker writes a charge and its
  window's records in one transaction), except windows older than the topic's oldest
  (retention may have deleted them: a warning); only a warning for a file, which may hold
  part of the releases (one replay of several charged to one ledger file, a cut);
- per budget and period, the charges of the whole ledger (every pipeline that shares the
  budget, not only the audited stream) add up to no more than the budget the summaries
  declare.

Like the rest of the audit this reads only what is published (the output stream and the
ledger's records) and does not import the release code: the digest is recomputed here from
its definition in docs/output-contract.md (BLAKE2b-128 over the aggregates serialized with
sorted keys, one per line, lines sorted), so a bug in the release cannot hide in the check.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RULE = "ledger"
Window = tuple[str, str, int]  # pipeline, output, start ms
_CHARGE_KEYS = ("pipeline", "output", "start_ms", "end_ms", "period", "epsilon", "delta")


def content_digest(aggregates: Iterable[dict[str, Any]]) -> str:
    """The digest of a window's aggregates (see the module docstring)."""
    lines = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in aggregates)
    return hashlib.blake2b(b"\n".join(lines), digest_size=16).hexdigest()


def _ms(ts: object) -> int | None:
    if not isinstance(ts, str):
        return None
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _charge(raw: object, where: str) -> dict[str, Any]:
    """A charge whose every field has its type. A loss must be a finite number >= 0: a
    charge of epsilon -3 (and delta -δ) made a period charged twice add up to exactly its
    budget, and the audit said OK; NaN compared false with every bound. Errors name the
    field, never the value."""
    if not isinstance(raw, dict) or any(k not in raw for k in _CHARGE_KEYS):
        raise ValueError(f"{where}: not a ledger charge")
    for key in ("pipeline", "output"):
        if not isinstance(raw[key], str):
            raise ValueError(f"{where}: {key}: not a string")
    for key in ("start_ms", "end_ms", "period"):
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
            raise ValueError(f"{where}: {key}: not an integer time in ms")
    for key in ("epsilon", "delta"):
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}: {key}: a loss is a finite number >= 0")
    return raw


def read_ledger_file(path: Path | str) -> list[dict[str, Any]]:
    """Charges of a JSONL ledger dump; a damaged line is an error, not a skipped charge."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    out.append(_charge(json.loads(line), f"{path}: line {n}"))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n}: not JSON") from exc
    return out


async def read_ledger_topic(
    bootstrap: str, topic: str, **client_options: Any
) -> list[dict[str, Any]]:
    """Committed charges of a ledger topic, from its beginning to its current end."""
    from aiokafka import AIOKafkaConsumer

    from anonstream.runtime.topic_end import partitions_of, read_to_end

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", **client_options,
    )  # fmt: skip
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise LookupError(f"topic {topic!r} does not exist")
        out = []
        async for tp, msgs in read_to_end(consumer, await partitions_of(consumer, topic)):
            for m in msgs:
                try:
                    raw = json.loads(m.value) if m.value is not None else None
                except ValueError:
                    raw = None
                out.append(_charge(raw, f"{topic}: partition {tp.partition} offset {m.offset}"))
        return out
    finally:
        await consumer.stop()


@dataclass
class LedgerCheck:
    """Collects the dp records of a stream (`add`), then compares them with the ledger."""

    charges: list[dict[str, Any]]
    # The stream is the whole output topic, read to its end (audit_topic): a charged window
    # missing from it was not published. False for a file or a topic read cut short.
    complete: bool = False
    aggregates: dict[Window, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    summaries: dict[Window, dict[str, Any]] = field(default_factory=dict)

    def add(self, rec: dict[str, Any]) -> None:
        """A record of the stream, first delivery per release_id (as the audit keeps)."""
        if rec.get("schema_version") != 2:
            return  # k-mode records: not charged to any budget
        start = _ms(rec.get("window_start"))
        key = (str(rec.get("pipeline")), str(rec.get("output")), start if start is not None else -1)
        if rec.get("kind") == "aggregate":
            self.aggregates[key].setdefault(str(rec.get("release_id")), rec)
        elif rec.get("kind") == "window_summary" and isinstance(rec.get("privacy"), dict):
            self.summaries.setdefault(key, rec)

    def findings(self) -> list[tuple[str | None, str, str]]:
        """(release_id, message, severity) of each problem found."""
        out: list[tuple[str | None, str, str]] = []
        by_window: dict[Window, list[dict[str, Any]]] = defaultdict(list)
        for c in self.charges:
            by_window[(c["pipeline"], c["output"], c["start_ms"])].append(c)
        for key, s in sorted(self.summaries.items()):
            out += self._window(key, s, by_window.get(key, []))
        for key in sorted(set(self.aggregates) - set(self.summaries)):
            out += self._unsummarized(key, by_window.get(key, []))
        out += self._not_in_stream(by_window)
        out += self._budgets()
        return out

    def _not_in_stream(
        self, by_window: dict[Window, list[dict[str, Any]]]
    ) -> list[tuple[str | None, str, str]]:
        """Windows charged to the stream's outputs that the stream does not hold, one
        finding per output and kind (charges of other outputs, e.g. of pipelines sharing a
        budget, are for their own topics)."""
        held = set(self.summaries) | set(self.aggregates)
        oldest: dict[tuple[str, str], int] = {}
        for p, o, start in held:
            if start >= 0:  # -1: a record without a readable window_start
                oldest[(p, o)] = min(start, oldest.get((p, o), start))
        missing: dict[tuple[str, str, bool], list[int]] = defaultdict(list)
        for p, o, start in sorted(set(by_window) - held):
            if (p, o) in oldest:
                missing[(p, o, self.complete and start >= oldest[(p, o)])].append(start)
        out: list[tuple[str | None, str, str]] = []
        for (p, o, error), starts in sorted(missing.items()):
            span = _iso(starts[0]) + (f" to {_iso(starts[-1])}" if len(starts) > 1 else "")
            what = (
                f"pipeline {p} output {o}: {len(starts)} window(s) charged in the ledger are "
                f"not in the stream ({span})"
            )
            if error:
                why = "the topic was read from its beginning: paid for but not published"
            elif self.complete:
                why = f"older than the topic's oldest window ({_iso(oldest[(p, o)])}): "
                why += "retention may have deleted them"
            else:
                why = "the stream is a file or a partial read, which may hold part of the releases"
            out.append((None, f"{what}; {why}", "error" if error else "warning"))
        return out

    def _window(
        self, key: Window, s: dict[str, Any], charges: list[dict[str, Any]]
    ) -> list[tuple[str | None, str, str]]:
        pv, rid = s["privacy"], s.get("release_id")
        where = f"pipeline {key[0]} output {key[1]} window {s.get('window_start')}"
        aggs = self.aggregates.get(key, {})
        if pv.get("status") != "released":
            return []  # refused: nothing published, nothing to pay
        if not charges:
            return [(rid, f"{where}: released but not charged in the ledger", "error")]
        out: list[tuple[str | None, str, str]] = []
        digests = {c.get("digest", "") for c in charges}
        if len(charges) > 1 and len(digests) > 1:
            allowed = all(c.get("rerelease") for c in charges[1:])
            msg = f"{where}: charged {len(charges)} times with different content"
            if allowed:
                out.append((rid, msg + " (operator-allowed re-release, each charged)", "warning"))
            else:
                out.append((rid, msg, "error"))
            return out  # the stream mixes both releases: no one digest to compare
        (digest,) = digests
        if not digest:
            out.append((rid, f"{where}: the ledger charge has no content digest", "warning"))
        elif content_digest(aggs.values()) != digest:
            out.append((rid, f"{where}: published aggregates differ from what the ledger "
                        "charged (content digest)", "error"))  # fmt: skip
        c = charges[-1]
        if not math.isclose(c["epsilon"], pv.get("window_epsilon", -1.0), rel_tol=1e-9):
            out.append((rid, f"{where}: summary says epsilon {pv.get('window_epsilon')}, the "
                        f"ledger charged {c['epsilon']}", "error"))  # fmt: skip
        if c["period"] != pv.get("period_start_ms"):
            out.append((rid, f"{where}: summary and ledger name different periods", "error"))
        return out

    def _unsummarized(
        self, key: Window, charges: list[dict[str, Any]]
    ) -> list[tuple[str | None, str, str]]:
        """dp aggregates of a window whose summary the stream does not hold (dropped, or
        cut off): they are checked against the ledger all the same, or a window released
        without a charge would pass once its summary is removed."""
        aggs = self.aggregates[key]
        rid = next(iter(aggs))
        where = f"pipeline {key[0]} output {key[1]} window {_iso(key[2]) if key[2] >= 0 else '?'}"
        if not charges:
            return [(rid, f"{where}: dp aggregates released but not charged in the ledger "
                     "(and no window summary)", "error")]  # fmt: skip
        digests = {c.get("digest", "") for c in charges}
        if len(digests) > 1 or "" in digests:
            return []  # as for a summarized window: several releases, or no digest to compare
        if content_digest(aggs.values()) != digests.pop():
            return [(rid, f"{where}: published aggregates differ from what the ledger "
                     "charged (content digest; no window summary)", "error")]  # fmt: skip
        return []

    def _budgets(self) -> list[tuple[str | None, str, str]]:
        declared: dict[str, tuple[float, float]] = {}
        for key, s in self.summaries.items():
            pv = s["privacy"]
            name = pv.get("budget") or key[0]
            declared.setdefault(name, (pv["period_epsilon_budget"], pv["period_delta_budget"]))
        spent: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for c in self.charges:
            total = spent[(c.get("budget") or c["pipeline"], c["period"])]
            total[0] += c["epsilon"]
            total[1] += c["delta"]
        out: list[tuple[str | None, str, str]] = []
        for (name, period), (eps, delta) in sorted(spent.items()):
            if name not in declared:
                continue  # a budget of pipelines this stream does not hold
            b_eps, b_delta = declared[name]
            if eps > b_eps * (1 + 1e-9) or delta > b_delta * (1 + 1e-9):
                out.append((None, f"budget {name}, period starting {period} ms: the ledger "
                            f"charged epsilon {eps:.6g}, delta {delta:.3g}, over the budget "
                            f"epsilon {b_eps:g}, delta {b_delta:g}", "error"))  # fmt: skip
        return out
