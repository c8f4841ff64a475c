"""The audit's findings and report: what was found, the counts, and the two renderings (text
for a person, JSON with every finding)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RULES = (
    "schema", "k", "identifier", "duplicate", "differencing", "noise", "sanity", "budget",
    "ledger",
)  # fmt: skip
RENDER_LIMIT = 100  # findings shown per rule by render(); to_json() has them all

Severity = Literal["error", "warning", "info"]


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
