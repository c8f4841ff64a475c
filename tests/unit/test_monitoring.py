"""The monitoring that ships (docker/monitoring/): alert rules checked and unit-tested with
promtool, dashboard queries that parse, and metric names that agree everywhere.

promtool comes from Debian's prometheus package; `make test` and `make test-unit` put it in
.venv/bin (the Makefile's $(PROMTOOL) target). Without it these tests fail: they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import load_pipeline
from anonstream.metrics import Metrics
from tests.monitoring import (
    ALERTS,
    DASHBOARD,
    MONITORING,
    ROOT,
    alert_expressions,
    dashboard,
    dashboard_expressions,
    metrics_table,
    names_in_docs,
    problems,
)

ALERT_TESTS = MONITORING / "alerts.test.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
SECRET = MasterSecret(b"monitoring-unit-test-secret-0123456789", "test")


def promtool() -> str:
    """The promtool of .venv/bin (where the Makefile puts it), else the one on PATH."""
    beside = Path(sys.executable).parent / "promtool"
    found = str(beside) if beside.exists() else shutil.which("promtool")
    assert found, (
        "promtool not found: run `make .venv/bin/promtool` (or `make test`), which takes it "
        "from Debian's prometheus package"
    )
    return found


def run_promtool(*args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def scrape_of_engines() -> str:
    """/metrics of a worker's collector (metrics.py) over the shipped pipelines' engines,
    with a batch timed, a producer restart and a lag reading, so that the histogram and the
    lag have samples too. Families without samples are still declared (# TYPE)."""
    metrics = Metrics()
    engines = {}
    for f in sorted((ROOT / "pipelines").glob("*.yaml")):
        p = load_pipeline(f)
        engines[p.name] = PipelineEngine(p, SECRET)
    metrics.bind_engines(engines)
    for name in engines:
        with metrics.batch_timer(name):
            pass
    metrics.producer_restarts.inc()
    metrics.lag = {("raw.web-activity", 0): 12}
    return metrics.render().decode()


# ----------------------------------------------------------------------------- alert rules


def test_promtool_checks_the_alert_rules() -> None:
    out = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_expressions())} rules found" in out


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    run_promtool("test", "rules", str(ALERT_TESTS))


def test_every_alert_has_a_test_where_it_fires() -> None:
    doc = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    alerts = set(alert_expressions())
    assert alerts == fired, f"alerts never shown firing: {sorted(alerts - fired)}"
    assert quiet, "no test shows an alert staying quiet"


def test_the_promtool_tests_would_catch_a_broken_rule(tmp_path: Path) -> None:
    """Attack the tests: a rule with its threshold raised tenfold must fail them."""
    text = ALERTS.read_text(encoding="utf-8").replace("> 0.01", "> 0.1")
    (tmp_path / "alerts.yml").write_text(text, encoding="utf-8")
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    proc = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "alerts.test.yml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "AnonstreamRejectsRising" in proc.stdout + proc.stderr


def test_promtool_checks_the_prometheus_configuration() -> None:
    out = run_promtool("check", "config", str(PROMETHEUS))
    assert "SUCCESS: 1 rule files found" in out


def test_the_scrape_job_is_the_one_the_rules_name_and_finds_the_pods() -> None:
    """The job name in prometheus.yml is the one the alert rules select; its SRV name is
    the workers' headless Service and port; its relabelling makes the pod name (the
    worker's instance id) the instance label."""
    (job,) = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))["scrape_configs"]
    jobs = set(re.findall(r'job="([^"]+)"', " ".join(alert_expressions().values())))
    assert jobs == {job["job_name"]}
    k8s = ROOT / "docker" / "kubernetes"
    service = yaml.safe_load((k8s / "service.yaml").read_text(encoding="utf-8"))
    sts = yaml.safe_load((k8s / "statefulset.yaml").read_text(encoding="utf-8"))
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    (srv,) = job["dns_sd_configs"][0]["names"]
    port, proto, svc, namespace, *_ = srv.split(".")
    assert (port, proto) == (f"_{service['spec']['ports'][0]['name']}", "_tcp")
    assert svc == service["metadata"]["name"]
    target = f"{sts['metadata']['name']}-0.{svc}.{namespace}.svc.cluster.local."
    (rule,) = [r for r in job["relabel_configs"] if r.get("target_label") == "instance"]
    assert rule["source_labels"] == ["__meta_dns_srv_record_target"]
    m = re.fullmatch(rule["regex"], target)  # Prometheus anchors its regexes
    assert m is not None and m.group(1) == f"{sts['metadata']['name']}-0"


def test_alerts_carry_severity_summary_and_description() -> None:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("source", [ALERTS, DASHBOARD], ids=lambda p: p.name)
def test_doc_links_in_the_monitoring_files_exist(source: Path) -> None:
    links = re.findall(r"docs/([a-z-]+\.md)(?:#([a-z0-9-]+))?", source.read_text("utf-8"))
    assert links
    for doc, anchor in links:
        target = ROOT / "docs" / doc
        assert target.exists(), doc
        if anchor:
            assert anchor in _anchors(target.read_text("utf-8")), f"{doc}#{anchor}"


# ------------------------------------------------------------------------------- dashboard


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, given as a recording rule."""
    exprs = dashboard_expressions()
    assert len(exprs) >= 12
    records = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs.values())]
    rules = {"groups": [{"name": "dashboard", "rules": records}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    run_promtool("check", "rules", str(path))


def test_dashboard_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_every_documented_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used = " ".join([*dashboard_expressions().values(), *alert_expressions().values()])
    for name, kind in metrics_table().items():
        assert (name + "_bucket" if kind == "histogram" else name) in used, name


# --------------------------------------------------------------------------- metric names


def test_docs_rules_and_dashboard_name_exactly_the_exposed_metrics() -> None:
    assert problems(scrape_of_engines()) == []


def test_the_name_check_finds_a_missing_and_an_undocumented_metric() -> None:
    """Attack the check: a family gone from /metrics, and one the docs do not know."""
    text = scrape_of_engines()
    gone = "\n".join(line for line in text.splitlines() if "anonstream_state_bytes" not in line)
    found = problems(gone + "\n")
    assert any("anonstream_state_bytes is in the metrics table but not exposed" in p for p in found)
    assert any("panel" in p or "dashboard" in p for p in found if "state_bytes" in p)
    extra = text + "# HELP anonstream_surprise Not documented\n# TYPE anonstream_surprise gauge\n"
    extra += "anonstream_surprise 1.0\n"
    assert problems(extra) == [
        "anonstream_surprise is exposed but not in the metrics table of docs/operations.md"
    ]


def test_issue_17_names_are_fixed() -> None:
    """The alert advice named a metric that never existed; the restarts counter was not in
    the table."""
    everywhere = set().union(*names_in_docs().values())
    assert "anonstream_watermark_seconds" not in everywhere
    assert "anonstream_producer_restarts_total" in metrics_table()
