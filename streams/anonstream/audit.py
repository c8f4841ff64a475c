"""Independent audit of released records: re-checks a stream of releases from the outside.

The audit reads only what a partner receives (a JSONL file or an output topic) and checks it
against the output contract (schemas/release-v1.json, docs/output-contract.md). It does not
import the release code on purpose: a bug in the release rules must not be able to hide
itself by also being in the checker. What it can see:

- ``schema``: every record is valid output contract v1.
- ``k``: every aggregate has at least k distinct people (the record's k and ``--k``).
- ``identifier``: no email, IP, card, phone, long number or pseudonym-like token anywhere,
  also encoded or disguised (``audit_detect``: its own detector, not the scrubber's).
- ``duplicate``: one release_id never carries two different contents.
- ``differencing``: no two released numbers of one window whose difference describes fewer
  than k people (identical cells, cells of two outputs, a "*" cell that looks like a total).
- ``noise`` / ``sanity``: declared noise is coherent; exact counts are internally consistent.
- ``budget``: dp outputs (contract v2): no period spends more than its declared budget, the
  summaries' spending adds up, and no aggregate belongs to a window the budget refused.
- ``ledger``: with the privacy ledger given, dp windows against their charges
  (audit_ledger.py).

Findings never echo a suspected identifier: it is masked to its first two characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from anonstream.audit_detect import embedded_ipv4_reason, identifier_reasons
from anonstream.audit_ledger import LedgerCheck

__all__ = [
    "RULES",
    "SCHEMA_PATH",
    "AuditReport",
    "Finding",
    "audit_file",
    "audit_records",
    "audit_topic",
    "run_audit_cli",
]

SCHEMA_PATH = Path(__file__).parent / "schemas" / "release-v1.json"
# Records of dp outputs (schema_version 2); any other version is checked against v1.
SCHEMA_PATHS = {1: SCHEMA_PATH, 2: SCHEMA_PATH.with_name("release-v2.json")}
RULES = (
    "schema", "k", "identifier", "duplicate", "differencing", "noise", "sanity", "budget",
    "ledger",
)  # fmt: skip
STAR = "*"
IDLE_SECONDS = 2.0  # a topic with no new message for this long is read to its end
CLI_TOPIC_TIMEOUT = 60.0
RENDER_LIMIT = 100  # findings shown per rule by render(); to_json() has them all

Severity = Literal["error", "warning", "info"]
WindowKey = tuple[str, int, str, str, str]  # pipeline, pipeline_version, output, start, end

# Fields whose whole value is pinned by a strict pattern (hex id, RFC 3339 time): skipped
# when they match it, as the detector would misread the dates as phone numbers.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_PINNED_FIELDS = {
    "release_id": re.compile(r"[0-9a-f]{32}"),
    "window_start": _TIME_RE,
    "window_end": _TIME_RE,
}
_NUM = r"-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
# Band labels ("[1000,10000)", "(-inf,0)") hold configured edges, not data.
_BAND_RE = re.compile(rf"[\[(](?:-inf|{_NUM}),(?:inf|{_NUM})\)")
# Counters of a summary that may legitimately differ when a window is re-sent after a restart.
_OPERATIONAL = frozenset({"late_events", "rejected_events"})


@dataclass
class Finding:
    """One problem in one record; `line` is the 1-based line when read from a file."""

    release_id: str | None
    line: int | None
    rule: str
    message: str
    severity: Severity = "error"


@dataclass
class AuditReport:
    """Findings plus counts; `ok` means no finding of severity "error"."""

    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    aggregates: int = 0
    summaries: int = 0
    windows: int = 0
    duplicate_deliveries: int = 0
    source: str | None = None

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "aggregates": self.aggregates,
            "summaries": self.summaries,
            "windows": self.windows,
            "duplicate_deliveries": self.duplicate_deliveries,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def render(self) -> str:
        """Human-readable: counts, verdict, then the findings grouped by rule."""
        errors = len(self.failures)
        warnings = sum(f.severity == "warning" for f in self.findings)
        out = [
            f"anonstream audit: {self.source or '<records>'}",
            f"  {self.records} records: {self.aggregates} aggregates, {self.summaries} window "
            f"summaries, {self.windows} windows; {self.duplicate_deliveries} duplicate deliveries",
            ("OK" if self.ok else "FAIL") + f": {errors} errors, {warnings} warnings",
        ]
        by_rule: dict[str, list[Finding]] = defaultdict(list)
        for f in self.findings:
            by_rule[f.rule].append(f)
        for rule in sorted(by_rule, key=lambda r: RULES.index(r) if r in RULES else len(RULES)):
            found = by_rule[rule]
            n_err = sum(f.severity == "error" for f in found)
            out.append("")
            out.append(f"[{rule}] {n_err} errors, {len(found) - n_err} other")
            ordered = sorted(
                found, key=lambda f: (f.severity != "error", f.line is None, f.line or 0)
            )
            for f in ordered[:RENDER_LIMIT]:
                where = [f"line {f.line}"] if f.line is not None else []
                if f.release_id is not None:
                    where.append(f"release {f.release_id}")
                loc = ", ".join(where) or "stream"
                out.append(f"  {f.severity:<7} {loc}: {f.message}")
            if len(ordered) > RENDER_LIMIT:
                out.append(f"  ... {len(ordered) - RENDER_LIMIT} more (--json lists them all)")
        return "\n".join(out)


# ----------------------------------------------------------------------------- helpers


def _mask(s: str) -> str:
    return s[:2] + "…"


def _is_band(s: str) -> bool:
    return s == "NaN" or _BAND_RE.fullmatch(s) is not None


def _is_ip_prefix(s: str) -> bool:
    """A generalized network ("203.0.113.0/24"), not a single host, is a valid dimension."""
    if "/" not in s:
        return False
    try:
        net = ipaddress.ip_network(s, strict=True)
    except ValueError:
        return False
    return net.prefixlen < net.max_prefixlen


def _identifier_reasons(s: str, tokens: bool) -> list[str]:
    """What identifiers the audit's own detector (audit_detect, independent of the
    scrubber) sees in `s`, also encoded or disguised; empty when none. A generalized
    network is fine unless it carries more than a /24 of an IPv4 address (6to4...)."""
    if _is_band(s):
        return []
    if _is_ip_prefix(s):
        return embedded_ipv4_reason(s)
    return identifier_reasons(s, tokens=tokens)


def _safe(s: object) -> str:
    """Text of a value for a message: as is when harmless, masked when it looks like an id."""
    text = s if isinstance(s, str) else str(s)
    if len(text) > 80 or _identifier_reasons(text, tokens=True):
        return _mask(text)
    return text


def _fmt_dims(dims: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_safe(k)}={_safe(v)}" for k, v in dims.items()) + "}"


def _num(x: object) -> int | float | None:
    return x if isinstance(x, int | float) and not isinstance(x, bool) else None


def _ts(s: object) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _digest(rec: dict[str, Any]) -> bytes:
    try:
        raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: fall back to the stdlib encoder
        raw = json.dumps(rec, sort_keys=True, default=str).encode()
    return hashlib.blake2b(raw, digest_size=16).digest()


@cache
def _validator(version: int = 1) -> Draft202012Validator:
    """The contract schema of a version, loaded and compiled once per process."""
    schema = json.loads(SCHEMA_PATHS[version].read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _path(parts: Iterable[object]) -> str:
    return ".".join(_safe(p) for p in parts) or "(record)"


def _describe(err: ValidationError) -> str:
    """A schema error in words, naming schema facts but never the offending value."""
    where = _path(err.absolute_path)
    v, expected, inst = err.validator, err.validator_value, err.instance
    if "propertyNames" in err.absolute_schema_path:
        return f"{where}: key {_safe(inst)} does not match {expected}"
    if v == "required" and isinstance(inst, dict):
        missing = [p for p in expected if p not in inst]
        return f"{where}: missing {', '.join(missing)}"
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(err.schema.get("properties", {}))
        pats = [re.compile(p) for p in err.schema.get("patternProperties", {})]
        extra = [k for k in inst if k not in known and not any(p.search(k) for p in pats)]
        return f"{where}: unexpected field(s) {', '.join(_safe(k) for k in extra)}"
    if v in ("oneOf", "anyOf") and err.context:
        return _describe(best_match(err.context))
    if v == "type":
        return f"{where}: expected type {expected}"
    if v == "const":
        return f"{where}: expected {json.dumps(expected)}"
    if v == "enum":
        return f"{where}: expected one of {', '.join(json.dumps(e) for e in expected)}"
    if v == "pattern":
        return f"{where}: does not match {expected}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength"):
        return f"{where}: violates {v} {expected}"
    return f"{where}: fails {v}"


_KIND_BRANCH = {"aggregate": 0, "window_summary": 1}  # order of the schema's top-level oneOf


def _schema_errors(rec: dict[str, Any]) -> list[str]:
    """Errors of the branch the record's kind selects (the oneOf error alone says nothing)."""
    version = 2 if rec.get("schema_version") == 2 else 1
    errors = list(_validator(version).iter_errors(rec))
    if not errors:
        return []
    kind = rec.get("kind")
    if kind not in _KIND_BRANCH:
        return ['kind: expected "aggregate" or "window_summary"']
    out: list[str] = []
    for err in errors:
        if err.validator == "oneOf" and not err.absolute_path:
            branch = _KIND_BRANCH[kind]
            out.extend(
                _describe(c)
                for c in err.context or []
                if c.relative_schema_path and c.relative_schema_path[0] == branch
            )
        else:
            out.append(_describe(err))
    return out or [f"does not match output contract v{version}"]


def _walk_strings(obj: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every dict key and string value, with the path of keys leading to it."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            k = str(key)
            yield (*path, k), k
            pinned = _PINNED_FIELDS.get(k) if not path else None
            if pinned is not None and isinstance(value, str) and pinned.fullmatch(value):
                continue
            yield from _walk_strings(value, (*path, k))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk_strings(value, (*path, str(i)))


# ----------------------------------------------------------------------------- the audit


@dataclass(slots=True)
class _Cell:
    release_id: str
    line: int | None
    dims: dict[str, str]
    events: float
    users: float
    k: int
    noised: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else f"release {self.release_id}"


@dataclass(slots=True)
class _Summary:
    release_id: str
    line: int | None
    cells_released: int
    k: int
    privacy: dict[str, Any] | None = None  # dp outputs only


class _Auditor:
    """Checks records one by one, keeps the first record per release_id (as a consumer does)
    and runs the cross-record checks of each window at the end."""

    def __init__(
        self, k: int | None, assume_totals: bool, ledger: list[dict[str, Any]] | None = None,
        whole_topic: bool = False,
    ) -> None:  # fmt: skip
        self.ledger = LedgerCheck(ledger, whole_topic) if ledger is not None else None
        self.k = k
        self.assume_totals = assume_totals
        self.report = AuditReport()
        self.first: dict[str, tuple[bytes, int | None, bytes]] = {}
        self.cells: dict[WindowKey, list[_Cell]] = defaultdict(list)
        self.summaries: dict[WindowKey, list[_Summary]] = defaultdict(list)
        self.noise_decls: dict[WindowKey, dict[str, tuple[str, int | None]]] = defaultdict(dict)

    def find(
        self, rid: str | None, line: int | None, rule: str, msg: str, sev: Severity = "error"
    ) -> None:
        self.report.findings.append(Finding(rid, line, rule, msg, sev))

    # -- per record --------------------------------------------------------------------
    def add(self, rec: object, line: int | None = None) -> None:
        self.report.records += 1
        if not isinstance(rec, dict):
            self.find(None, line, "schema", f"not a JSON object but {type(rec).__name__}")
            return
        raw_rid = rec.get("release_id")
        rid = raw_rid if isinstance(raw_rid, str) else None
        shown = _safe(rid) if rid is not None else None
        digest = _digest(rec)
        core = _digest({k: v for k, v in rec.items() if k not in _OPERATIONAL})
        earlier = self.first.get(rid) if rid is not None else None
        if earlier is not None and earlier[0] == digest:
            self.report.duplicate_deliveries += 1
            return
        kind = rec.get("kind")
        if kind == "aggregate":
            self.report.aggregates += 1
        elif kind == "window_summary":
            self.report.summaries += 1
        schema_errors = _schema_errors(rec)
        for msg in schema_errors:
            self.find(shown, line, "schema", msg)
        self._identifiers(rec, shown, line)
        self._k_rule(rec, shown, line)
        if earlier is not None:
            at = f"line {earlier[1]}" if earlier[1] is not None else "an earlier record"
            if kind == "window_summary" and earlier[2] == core:
                self.find(
                    shown, line, "duplicate",
                    f"re-sent summary of {at} with other late/rejected counts (operational "
                    "counters, no privacy impact)",
                    "warning",
                )  # fmt: skip
                return
            self.find(
                shown, line, "duplicate",
                f"same release_id as {at} with different content: two values for one "
                "release; consumers keep the first and silently drop this one",
            )  # fmt: skip
            return
        if rid is not None:
            self.first[rid] = (digest, line, core)
        if schema_errors or rid is None:
            return  # the cross-record checks need well-formed fields
        if self.ledger is not None:
            self.ledger.add(rec)
        if kind == "aggregate":
            self._aggregate(rec, rid, line)
        else:
            self._summary(rec, rid, line)

    def _identifiers(self, rec: dict[str, Any], shown: str | None, line: int | None) -> None:
        for path, s in _walk_strings(rec, ()):
            reasons = _identifier_reasons(s, tokens=bool(path) and path[0] == "dims")
            if reasons:
                what = " and ".join(dict.fromkeys(reasons))
                self.find(shown, line, "identifier", f"{_path(path)}: {what} in {_mask(s)!r}")

    def _k_rule(self, rec: dict[str, Any], shown: str | None, line: int | None) -> None:
        """Tolerates malformed records: being off-contract must not hide a small cell."""
        rec_k = _num(rec.get("k"))
        if rec_k is None:
            return
        kind = rec.get("kind")
        if self.k is not None and rec_k < self.k:
            what = "window k" if kind == "window_summary" else "record k"
            self.find(shown, line, "k", f"{what} {rec_k} < required k {self.k}")
        metrics = rec.get("metrics")
        users = _num(metrics.get("users")) if isinstance(metrics, dict) else None
        threshold = max(rec_k, self.k or 0)
        if kind != "aggregate" or users is None or users >= threshold:
            return
        noise, dims = rec.get("noise"), rec.get("dims")
        if isinstance(noise, dict):
            self.find(
                shown, line, "k",
                f"noisy users {users} < k {threshold} ({_safe(noise.get('mechanism'))} noise, "
                f"epsilon {_safe(noise.get('epsilon'))}): the exact count may still be >= k",
                "warning",
            )  # fmt: skip
        else:
            cell = f" in {_fmt_dims(dims)}" if isinstance(dims, dict) else ""
            self.find(shown, line, "k", f"users {users} < k {threshold}{cell}")

    def _aggregate(self, rec: dict[str, Any], rid: str, line: int | None) -> None:
        metrics: dict[str, Any] = rec["metrics"]
        dims: dict[str, str] = rec["dims"]
        noise: dict[str, Any] | None = rec["noise"]
        events, users, rec_k = metrics["events"], metrics["users"], rec["k"]
        key: WindowKey = (
            rec["pipeline"], rec["pipeline_version"], rec["output"],
            rec["window_start"], rec["window_end"],
        )  # fmt: skip
        if noise is None:
            if events < users:
                self.find(rid, line, "sanity", f"events {events} < users {users} (exact counts)")
            for name, hist in metrics.items():
                if name.endswith("_histogram") and isinstance(hist, dict):
                    total = sum(hist.values())
                    if total > events:
                        self.find(
                            rid, line, "sanity",
                            f"{name} counts sum to {total} > events {events}",
                        )  # fmt: skip
        else:
            if noise["mechanism"] == "gaussian" and noise["delta"] <= 0:
                self.find(rid, line, "noise", "gaussian noise with delta 0 guarantees nothing")
            decl = json.dumps(noise, sort_keys=True)
            self.noise_decls[key].setdefault(decl, (rid, line))
        if noise is None:
            self.noise_decls[key].setdefault("null", (rid, line))
        values, level = list(dims.values()), rec["rollup_level"]
        fixed, rolled = values[: len(values) - level], values[len(values) - level :]
        if level > len(values) or STAR in fixed or any(v != STAR for v in rolled):
            self.find(
                rid, line, "sanity",
                f"rollup_level {rec['rollup_level']} but dims {_fmt_dims(dims)}: \"*\" must be "
                "exactly the trailing rollup_level dimensions",
            )  # fmt: skip
        self._window_order(rec, rid, line)
        self.cells[key].append(
            _Cell(rid, line, dims, events, users, rec_k, noise is not None, metrics)
        )

    def _summary(self, rec: dict[str, Any], rid: str, line: int | None) -> None:
        key: WindowKey = (
            rec["pipeline"], rec["pipeline_version"], rec["output"],
            rec["window_start"], rec["window_end"],
        )  # fmt: skip
        self._window_order(rec, rid, line)
        self.summaries[key].append(
            _Summary(rid, line, rec["cells_released"], rec["k"], rec.get("privacy"))
        )

    def _window_order(self, rec: dict[str, Any], rid: str, line: int | None) -> None:
        start, end = _ts(rec["window_start"]), _ts(rec["window_end"])
        if start is None or end is None or start >= end:
            self.find(rid, line, "sanity", "window_start is not a valid time before window_end")

    # -- per window --------------------------------------------------------------------
    def finish(self) -> AuditReport:
        keys = set(self.cells) | set(self.summaries)
        self.report.windows = len(keys)
        span: dict[tuple[str, int, str], tuple[str, str]] = {}
        for p, v, o, s, _e in keys:
            lo, hi = span.get((p, v, o), (s, s))
            span[(p, v, o)] = (min(lo, s), max(hi, s))
        for key in sorted(keys):
            first, last = span[key[:3]]
            cells = self.cells.get(key, [])
            self._summary_count(key, cells, key[3] == first, key[3] == last)
            self._same_dims(cells)
            self._star_parents(cells)
            if len(self.noise_decls.get(key, {})) > 1:
                rid, line = next(iter(self.noise_decls[key].values()))
                self.find(
                    rid, line, "noise",
                    f"{_window_name(key)}: cells of one output and window declare different "
                    "noise (or none): noise is set per output",
                    "warning",
                )  # fmt: skip
        self._budget()
        for l_rid, l_msg, l_sev in self.ledger.findings() if self.ledger is not None else []:
            self.find(l_rid, None, "ledger", l_msg, "error" if l_sev == "error" else "warning")
        by_window: dict[tuple[str, int, str, str], dict[str, list[_Cell]]] = defaultdict(dict)
        for (p, v, o, s, e), cells in self.cells.items():
            by_window[(p, v, s, e)][o] = cells
        for outputs in by_window.values():
            # The others are built from the primary output: the finest (every dimension
            # of the window), of those the one holding most events, then the smallest k (an
            # output with the same dimensions and a larger k holds part of them or coarser).
            dims_of = {o: set(cells[0].dims) for o, cells in outputs.items() if cells}
            every = set().union(*dims_of.values()) if dims_of else set()
            rank = {
                o: (-sum(c.events for c in outputs[o]), min(c.k for c in outputs[o]))
                for o, d in dims_of.items()
                if d == every
            }
            primary = {o for o, r in rank.items() if r == min(rank.values())}
            for (name_a, a), (name_b, b) in itertools.permutations(sorted(outputs.items()), 2):
                if name_a in primary:
                    self._cross_output(name_a, a, name_b, b)
        if self.report.duplicate_deliveries:
            self.find(
                None, None, "duplicate",
                f"{self.report.duplicate_deliveries} records delivered more than once with the "
                "same content (a consumer keeps the first per release_id)",
                "info",
            )  # fmt: skip
        return self.report

    def _budget(self) -> None:
        """dp outputs: per pipeline and privacy period, the windows' charges add up to no
        more than the budget every summary declares, and refused windows release nothing."""
        periods: dict[tuple[str, int], list[tuple[_Summary, dict[str, Any]]]] = defaultdict(list)
        for key, summaries in self.summaries.items():
            s = summaries[0]
            if s.privacy is None:
                continue
            # Per budget: pipelines sharing one spend it together (its name, else the pipeline).
            name = s.privacy.get("budget") or key[0]
            periods[(name, s.privacy["period_start_ms"])].append((s, s.privacy))
            if s.privacy["status"] != "released" and self.cells.get(key):
                self.find(
                    s.release_id, s.line, "budget",
                    f"{_window_name(key)}: aggregates released for a window whose budget "
                    "was refused",
                )  # fmt: skip
        for (pipeline, start), items in periods.items():
            s0, pv0 = items[0]
            budget = (pv0["period_epsilon_budget"], pv0["period_delta_budget"])
            eps = sum(pv["window_epsilon"] for _, pv in items)
            delta = sum(pv["window_delta"] for _, pv in items)
            declared = max(pv["period_epsilon_spent"] for _, pv in items)
            where = f"budget {_safe(pipeline)}, period starting {start} ms"
            tol = 1e-9 * max(1.0, budget[0])
            if eps > budget[0] + tol or delta > budget[1] * (1 + 1e-9):
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: windows charged epsilon {eps:.6g}, delta {delta:.3g}, over the "
                    f"budget epsilon {budget[0]:g}, delta {budget[1]:g}",
                )  # fmt: skip
            if eps > declared + tol:
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: windows charged epsilon {eps:.6g} but the summaries say "
                    f"{declared:.6g} was spent",
                )  # fmt: skip
            if any((pv["period_epsilon_budget"], pv["period_delta_budget"]) != budget
                   for _, pv in items):  # fmt: skip
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: summaries declare different budgets",
                    "warning",
                )  # fmt: skip

    def _summary_count(
        self, key: WindowKey, cells: list[_Cell], is_first: bool, is_last: bool
    ) -> None:
        summaries = self.summaries.get(key, [])
        name = _window_name(key)
        if not summaries:
            if cells and not is_last:
                c = cells[0]
                self.find(c.release_id, c.line, "sanity", f"{name}: no window_summary", "warning")
            return
        s = summaries[0]
        if len(summaries) > 1:
            self.find(
                s.release_id, s.line, "sanity",
                f"{name}: {len(summaries)} window summaries with different release_ids",
            )  # fmt: skip
        seen = len(cells)
        if seen > s.cells_released:
            self.find(
                s.release_id, s.line, "differencing",
                f"{name}: {seen} aggregates released but the summary says {s.cells_released}",
            )  # fmt: skip
        elif seen < s.cells_released:
            # The oldest window of a topic may have lost its first records to retention.
            self.find(
                s.release_id, s.line, "differencing",
                f"{name}: summary says {s.cells_released} aggregates but the stream holds "
                f"{seen}" + (" (the stream may begin inside this window)" if is_first else ""),
                "warning" if is_first else "error",
            )  # fmt: skip
        for c in cells:
            if c.k < s.k:
                self.find(
                    c.release_id, c.line, "sanity",
                    f"aggregate k {c.k} < k {s.k} of its window summary",
                )  # fmt: skip

    def _same_dims(self, cells: list[_Cell]) -> None:
        first: dict[frozenset[tuple[str, str]], _Cell] = {}
        for c in cells:
            key = frozenset(c.dims.items())
            if key in first:
                o = first[key]
                self.find(
                    c.release_id, c.line, "differencing",
                    f"same dims {_fmt_dims(c.dims)} as {o.where} in the same window and output: "
                    "two numbers for one group, their difference can single people out",
                )  # fmt: skip
            else:
                first[key] = c

    def _star_parents(self, cells: list[_Cell]) -> None:
        """A "*" cell P is a residual, disjoint from the cells under it. If it is as large as
        all of them together plus a rest under k, it looks like a total: P minus its children
        would describe fewer than k people."""
        indexes: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[tuple[str, ...], list[_Cell]]]
        indexes = {}
        for p in cells:
            if p.noised or STAR not in p.dims.values():
                continue
            names = tuple(p.dims)
            fixed = tuple(d for d in names if p.dims[d] != STAR)
            starred = [d for d in names if p.dims[d] == STAR]
            idx_key = (tuple(sorted(names)), fixed)
            if idx_key not in indexes:
                index: dict[tuple[str, ...], list[_Cell]] = defaultdict(list)
                for c in cells:
                    if set(c.dims) == set(names) and all(c.dims[d] != STAR for d in fixed):
                        index[tuple(c.dims[d] for d in fixed)].append(c)
                indexes[idx_key] = index
            under = [
                c
                for c in indexes[idx_key].get(tuple(p.dims[d] for d in fixed), [])
                if c is not p and any(c.dims[d] != STAR for d in starred)
            ]
            if not under or any(c.noised for c in under):
                continue
            k = max(p.k, self.k or 0)
            if self.assume_totals:
                children = _maximal(under, starred)
                sum_e = sum(c.events for c in children)
                sum_u = sum(c.users for c in children)
                leak = p.events > sum_e > 0 and 0 < p.events - sum_e < k and p.users > sum_u
            else:
                children = under
                sum_e = sum(c.events for c in children)
                leak = (
                    p.events >= sum_e
                    and p.users >= max(c.users for c in children)
                    and 0 < p.events - sum_e < k
                )
            if not leak:
                continue
            # The numbers alone cannot tell a total from a residual (real residuals trip the
            # default test now and then), so only a stream declared total-style fails on it.
            msg = (
                f'"*" cell {_fmt_dims(p.dims)} ({p.events} events, {p.users} users) exceeds '
                f"its {len(children)} released sub-cells together ({sum_e} events) by "
                f"{p.events - sum_e} events, under k {k}: "
            )
            if self.assume_totals:
                msg += "as a total, it minus its sub-cells describes fewer than k people"
            else:
                msg += "fine if it is a residual, a leak if it is a total of its sub-cells"
            sev: Severity = "error" if self.assume_totals else "warning"
            self.find(p.release_id, p.line, "differencing", msg, sev)

    def _cross_output(self, name_a: str, a: list[_Cell], name_b: str, b: list[_Cell]) -> None:
        """A is the primary output, B's dims a subset of A's: A's cells inside one B cell
        are disjoint parts of it, so any number of B minus the same number of those parts
        describes a group that A did not show. Every released quantity is checked: events,
        users (the parts' users minus B's is the overlap of the parts: 0 or at least k),
        sums (equal), means (withheld with any part's, and between the parts' means) and
        histograms (each band a union of bands of every part, with their total). Those are checked
        where A's cells make up the whole of B's cell (same events)."""
        if not a or not b:
            return
        dims_a, dims_b = set(a[0].dims), set(b[0].dims)
        if not dims_b <= dims_a:
            return
        on = tuple(sorted(dims_b))
        inside: dict[tuple[str, ...], list[_Cell]] = defaultdict(list)
        for c in a:
            if set(c.dims) == dims_a and all(c.dims[d] != STAR for d in on):
                inside[tuple(c.dims[d] for d in on)].append(c)
        for cell in b:
            if cell.noised or set(cell.dims) != dims_b or STAR in cell.dims.values():
                continue
            parts = inside.get(tuple(cell.dims[d] for d in on), [])
            if not parts or any(p.noised for p in parts):
                continue
            # What B minus A's parts leaves is shown by B: it must be a group B may show.
            k = max(cell.k, self.k or 0)
            lines = ", ".join(p.where for p in parts[:5]) + (", …" if len(parts) > 5 else "")
            what = (
                f"output {name_b} cell {_fmt_dims(cell.dims)} minus the {len(parts)} cells of "
                f"output {name_a} inside it ({lines})"
            )
            rest = cell.events - sum(p.events for p in parts)
            if 0 < rest < k:
                self.find(
                    cell.release_id, cell.line, "differencing",
                    f"{what} leaves {rest} events: fewer than k {k} people, revealed by "
                    "subtraction",
                )  # fmt: skip
            elif rest < 0:
                self.find(
                    cell.release_id, cell.line, "sanity",
                    f"the cells of output {name_a} inside output {name_b} cell "
                    f"{_fmt_dims(cell.dims)} hold {-rest} more events than it",
                    "warning",
                )  # fmt: skip
            if rest:
                continue
            overlap = sum(p.users for p in parts) - cell.users
            if 0 < overlap < k:
                self.find(
                    cell.release_id, cell.line, "differencing",
                    f"{what}: their users minus its users is {overlap}, the number of people "
                    f"in two of them: fewer than k {k}, revealed by subtraction",
                )  # fmt: skip
            for name, value in cell.metrics.items():
                self._derived(cell, parts, name, value, what)

    def _derived(
        self, cell: _Cell, parts: list[_Cell], name: str, value: object, what: str
    ) -> None:
        """One measure of a coarser cell against the same measure of its parts."""
        if value is None or not name.endswith(("_sum", "_mean", "_histogram")):
            return
        if any(p.k > cell.k for p in parts):
            return  # a part with a larger k may withhold or coarsen what the cell may show
        theirs = [p.metrics.get(name) for p in parts]
        if any(t is None for t in theirs):
            self.find(
                cell.release_id, cell.line, "differencing",
                f"{what}: {name} is withheld in a part but released here, so the difference "
                "is the withheld value",
            )  # fmt: skip
            return
        bad = ""
        if name.endswith("_sum") and isinstance(value, int | float):
            total = sum(float(t) for t in theirs if isinstance(t, int | float))
            if abs(float(value) - total) > 0.001 * (len(parts) + 1):
                bad = f"{name} {value} differs from the parts' total {round(total, 3)}"
        elif name.endswith("_mean") and isinstance(value, int | float):
            means = [float(t) for t in theirs if isinstance(t, int | float)]
            if means and not min(means) - 0.001 <= float(value) <= max(means) + 0.001:
                bad = f"{name} {value} is outside the parts' means"
        elif name.endswith("_histogram") and isinstance(value, dict):
            bad = _histogram_difference(name, value, [t for t in theirs if isinstance(t, dict)])
        if bad:
            self.find(
                cell.release_id, cell.line, "differencing",
                f"{what}: {bad}; the difference describes people the parts did not show",
            )  # fmt: skip


def _band_bounds(label: str) -> tuple[float, float] | None:
    m = re.fullmatch(r"\[([^,]+),([^)]+)\)", label)
    if m is None:
        return None
    try:
        return float(m.group(1)), float(m.group(2))
    except ValueError:
        return None


def _histogram_difference(name: str, hist: dict[str, Any], parts: list[dict[str, Any]]) -> str:
    """Why a histogram is not the total of its parts' histograms ('' if it is): each of
    its bands must be a union of whole bands of every part, with their total count."""
    part_bands = [
        [(bb, n) for lab, n in p.items() if (bb := _band_bounds(lab)) is not None] for p in parts
    ]
    for label, count in hist.items():
        bounds = _band_bounds(label)
        if bounds is None:
            return f"{name} band {label!r} is not a band"
        lo, hi = bounds
        total = 0.0
        for bands in part_bands:
            for (a, b), n in bands:
                if lo <= a and b <= hi:
                    total += n if isinstance(n, int | float) else 0
                elif a < hi and lo < b:  # overlaps the band without lying inside it
                    return f"{name} band {label} cuts a band [{a:g},{b:g}) of a part"
        if total != count:
            return f"{name} band {label} holds {count}, the parts' bands in it {total:g}"
    return ""


def _maximal(cells: list[_Cell], starred: list[str]) -> list[_Cell]:
    """The cells under a parent that no other cell under it contains (its direct children
    when cells are totals of the cells below them)."""
    present = {tuple(sorted(c.dims.items())) for c in cells}
    out = []
    for c in cells:
        fixed = [d for d in starred if c.dims[d] != STAR]
        contained = False
        for r in range(1, len(fixed)):
            for drop in itertools.combinations(fixed, r):
                general = {**c.dims, **dict.fromkeys(drop, STAR)}
                if tuple(sorted(general.items())) in present:
                    contained = True
                    break
            if contained:
                break
        if not contained:
            out.append(c)
    return out


def _window_name(key: WindowKey) -> str:
    p, v, o, s, e = key
    return f"{p} v{v} output {o} window {s}..{e}"


# ----------------------------------------------------------------------------- entry points


def audit_records(
    records: Iterable[Any], *, k: int | None = None, assume_totals: bool = False,
    ledger: list[dict[str, Any]] | None = None,
) -> AuditReport:  # fmt: skip
    """Audit release records (dicts) in stream order; `k` is the minimum k to demand;
    `ledger`: the privacy ledger's charges, to check dp windows against (rule ledger)."""
    auditor = _Auditor(k, assume_totals, ledger)
    for rec in records:
        auditor.add(rec)
    return auditor.finish()


def audit_file(
    path: Path | str, *, k: int | None = None, assume_totals: bool = False,
    ledger: list[dict[str, Any]] | None = None,
) -> AuditReport:  # fmt: skip
    """Audit a JSONL file of releases; findings carry 1-based line numbers."""
    auditor = _Auditor(k, assume_totals, ledger)
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

    auditor = _Auditor(k, assume_totals, ledger, whole_topic=True)
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
    ledger_topic: str | None = None,
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
    path: Path | None, topic: str | None, bootstrap: str | None
) -> list[dict[str, Any]] | None:
    """The privacy ledger of `--ledger FILE` or `--ledger-topic T`, if one is given."""
    from anonstream.audit_ledger import read_ledger_file, read_ledger_topic

    if path is not None:
        return read_ledger_file(path)
    if topic is None:
        return None
    from anonstream.settings import Settings

    settings = Settings()
    return asyncio.run(read_ledger_topic(
        bootstrap or settings.bootstrap_servers, topic, **settings.kafka_client_options()
    ))  # fmt: skip
