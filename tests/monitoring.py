"""Metric names as the docs, the alert rules and the dashboard name them, checked against a
worker's /metrics text. Used by tests/unit/test_monitoring.py (a collector over engines) and
tests/integration/test_monitoring_scrape.py (a real worker's scrape)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METRICS_TABLE_DOC = ROOT / "docs" / "operations.md"
MONITORING = ROOT / "docker" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# A metric name: anonstream_ then lower-case words; anonstream_load is the load package.
NAME = re.compile(r"\banonstream_(?!load\b)[a-z0-9_]*[a-z0-9]")
TABLE_ROW = re.compile(r"^\| `(anonstream_[a-z0-9_]+)` \| (counter|gauge|histogram) \|")
# prometheus_client adds a `_created` timestamp to its own counters and histograms.
AUX_SUFFIXES = ("_created",)


@dataclass(frozen=True)
class Exposed:
    """What a /metrics text exposes: family name -> type, and every sample name."""

    families: dict[str, str]
    samples: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Exposed:
        families: dict[str, str] = {}
        samples: set[str] = set()
        for fam in text_string_to_metric_families(text):
            if not fam.name.startswith("anonstream_"):
                continue
            families[fam.name] = fam.type
            samples.update(s.name for s in fam.samples)
        return cls(families, frozenset(samples))

    def documented_name(self, family: str) -> str:
        """How the docs name a family: counters by their sample name, with `_total`."""
        return f"{family}_total" if self.families[family] == "counter" else family

    def usable_names(self) -> set[str]:
        """Names a query or a doc may use: every sample, and the family of a histogram."""
        return set(self.samples) | {self.documented_name(f) for f in self.families}


def metrics_table() -> dict[str, str]:
    """The metrics table of docs/operations.md: name -> type."""
    rows = {}
    for line in METRICS_TABLE_DOC.read_text(encoding="utf-8").splitlines():
        m = TABLE_ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert rows, "no metrics table in docs/operations.md"
    return rows


def names_in_docs() -> dict[str, set[str]]:
    """Every metric name written in README.md and docs/*.md, by file."""
    return {
        str(p.relative_to(ROOT)): set(NAME.findall(p.read_text(encoding="utf-8"))) for p in DOCS
    }


def alert_expressions() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def dashboard_expressions() -> dict[str, str]:
    """Panel title (and target ref) -> PromQL, with Grafana's variables given values so
    that promtool can parse them."""
    out = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m")
            expr = re.sub(r"\$\{?(pipeline|instance)\}?", ".*", expr)
            out[f"{panel['title']} ({target['refId']})"] = expr
    return out


def dashboard_variable_queries() -> dict[str, str]:
    """Template variable -> its Grafana query (label_values(...), not PromQL)."""
    return {
        f"variable {v['name']}": v["definition"]
        for v in dashboard()["templating"]["list"]
        if v.get("type") == "query"
    }


def problems(text: str) -> list[str]:
    """Each disagreement between a /metrics text and what the docs, rules and dashboard
    say; empty when they agree."""
    exposed = Exposed.parse(text)
    usable = exposed.usable_names()
    table = metrics_table()
    out = []
    for family, kind in sorted(exposed.families.items()):
        if family.endswith(AUX_SUFFIXES) and family[: family.rindex("_")] in exposed.families:
            continue
        name = exposed.documented_name(family)
        if name not in table:
            out.append(f"{name} is exposed but not in the metrics table of docs/operations.md")
        elif table[name] != kind:
            out.append(f"{name} is a {kind}, the metrics table says {table[name]}")
    for name in sorted(set(table) - usable):
        out.append(f"{name} is in the metrics table but not exposed")
    for where, names in sorted(names_in_docs().items()):
        for name in sorted(names - usable):
            out.append(f"{where} names {name}, which is not exposed")
    queries = (
        ("alert", alert_expressions()),
        ("dashboard", {**dashboard_expressions(), **dashboard_variable_queries()}),
    )
    for source, exprs in queries:
        for title, expr in sorted(exprs.items()):
            for name in sorted(set(NAME.findall(expr)) - usable):
                out.append(f"{source} {title} queries {name}, which is not exposed")
    return out
