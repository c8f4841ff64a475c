"""The audit's checks on one record as it is read: the contract, identifiers, k, a
release_id seen before, and the record's own sanity (counts, roll-up stars, window times);
well-formed records are kept for the window checks (window_rules)."""

from __future__ import annotations

import json
from typing import Any

from anonstream.audit.schema import contract_errors
from anonstream.audit.values import (
    STAR,
    WindowKey,
    as_number,
    content_digest,
    detect_identifiers,
    fmt_dims,
    key_path,
    mask,
    parse_time,
    safe,
    walk_strings,
)
from anonstream.audit.window_rules import Cell, Summary, WindowRules

# Counters of a summary that may legitimately differ when a window is re-sent after a restart.
OPERATIONAL = frozenset({"late_events", "rejected_events"})


class Auditor(WindowRules):
    """Checks records one by one, keeps the first record per release_id (as a consumer does)
    and runs the cross-record checks of each window at the end (`finish`)."""

    def __init__(
        self, k: int | None, assume_totals: bool, ledger: list[dict[str, Any]] | None = None,
        whole_topic: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(k, assume_totals, ledger, whole_topic)
        self.first: dict[str, tuple[bytes, int | None, bytes]] = {}

    def add(self, rec: object, line: int | None = None) -> None:
        self.report.records += 1
        if not isinstance(rec, dict):
            self.find(None, line, "schema", f"not a JSON object but {type(rec).__name__}")
            return
        raw_rid = rec.get("release_id")
        rid = raw_rid if isinstance(raw_rid, str) else None
        shown = safe(rid) if rid is not None else None
        digest = content_digest(rec)
        core = content_digest({k: v for k, v in rec.items() if k not in OPERATIONAL})
        earlier = self.first.get(rid) if rid is not None else None
        if earlier is not None and earlier[0] == digest:
            self.report.duplicate_deliveries += 1
            return
        kind = rec.get("kind")
        if kind == "aggregate":
            self.report.aggregates += 1
        elif kind == "window_summary":
            self.report.summaries += 1
        schema_errors = contract_errors(rec)
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
        for path, s in walk_strings(rec, ()):
            reasons = detect_identifiers(s, tokens=bool(path) and path[0] == "dims")
            if reasons:
                what = " and ".join(dict.fromkeys(reasons))
                self.find(shown, line, "identifier", f"{key_path(path)}: {what} in {mask(s)!r}")

    def _k_rule(self, rec: dict[str, Any], shown: str | None, line: int | None) -> None:
        """Tolerates malformed records: being off-contract must not hide a small cell."""
        rec_k = as_number(rec.get("k"))
        if rec_k is None:
            return
        kind = rec.get("kind")
        if self.k is not None and rec_k < self.k:
            what = "window k" if kind == "window_summary" else "record k"
            self.find(shown, line, "k", f"{what} {rec_k} < required k {self.k}")
        metrics = rec.get("metrics")
        users = as_number(metrics.get("users")) if isinstance(metrics, dict) else None
        threshold = max(rec_k, self.k or 0)
        if kind != "aggregate" or users is None or users >= threshold:
            return
        noise, dims = rec.get("noise"), rec.get("dims")
        if isinstance(noise, dict):
            self.find(
                shown, line, "k",
                f"noisy users {users} < k {threshold} ({safe(noise.get('mechanism'))} noise, "
                f"epsilon {safe(noise.get('epsilon'))}): the exact count may still be >= k",
                "warning",
            )  # fmt: skip
        else:
            cell = f" in {fmt_dims(dims)}" if isinstance(dims, dict) else ""
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
                f"rollup_level {rec['rollup_level']} but dims {fmt_dims(dims)}: \"*\" must be "
                "exactly the trailing rollup_level dimensions",
            )  # fmt: skip
        self._window_order(rec, rid, line)
        self.cells[key].append(
            Cell(rid, line, dims, events, users, rec_k, noise is not None, metrics)
        )

    def _summary(self, rec: dict[str, Any], rid: str, line: int | None) -> None:
        key: WindowKey = (
            rec["pipeline"], rec["pipeline_version"], rec["output"],
            rec["window_start"], rec["window_end"],
        )  # fmt: skip
        self._window_order(rec, rid, line)
        self.summaries[key].append(
            Summary(rid, line, rec["cells_released"], rec["k"], rec.get("privacy"))
        )

    def _window_order(self, rec: dict[str, Any], rid: str, line: int | None) -> None:
        start, end = parse_time(rec["window_start"]), parse_time(rec["window_end"])
        if start is None or end is None or start >= end:
            self.find(rid, line, "sanity", "window_start is not a valid time before window_end")
