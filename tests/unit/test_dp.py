"""dp mode: OpenDP mechanisms, the loss they report, the period budget and the ledger.

The losses the plan (and so explain and the ledger) reports are checked against OpenDP
measurements built here independently from the contribution bounds; the released numbers
are checked to be integers; a neighbouring-input test estimates the empirical privacy loss
over many runs; the budget and the ledger are run until they refuse.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import opendp.prelude as dp
import orjson
import pytest

from anonstream.core import dp as D
from anonstream.core.budget import Charge, JsonlLedgerStore, Ledger, compose
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import PipelineError, load_pipeline, parse_pipeline
from anonstream.core.release import bound_cells_per_unit
from anonstream.core.step import Message, StepResult
from tests.unit.fields import web_test_fields

dp.enable_features("contrib")

DAY = 86_400_000
HOUR = 3_600_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY
SECRET = load_secret({"ANONSTREAM_SECRET": "x" * 32})
SCHEMA_V2 = json.loads(
    (Path(__file__).parents[2] / "streams/anonstream/schemas/release-v2.json").read_text()
)


def make_pipeline(
    *,
    k: int = 3,
    L: int = 2,
    M: int = 3,
    epsilon: float = 2.0,
    delta: float = 1e-6,
    budget: tuple[float, float] = (100.0, 1e-3),
    metrics: dict[str, Any] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    clamp: list[float] | None = None,
    name: str = "dptest",
    shared: str | None = None,
) -> Any:
    fields = web_test_fields()
    if clamp is not None:
        fields["duration_ms"] = {"measure": True, "clamp": clamp, "edges": [1000, 10000]}
    doc: dict[str, Any] = {
        "pipeline": name,
        "version": 1,
        "contract": "web_activity",
        "privacy_unit": ["visitor_id"],
        "fields": fields,
        "window": {"size": "1h", "allowed_lateness": "0s"},
        "dimensions": ["type", "url"],
        "metrics": metrics if metrics is not None else {},
        "contribution": {"max_events_per_unit_per_cell": L, "max_cells_per_unit_per_window": M},
        "k": k,
        "outputs": outputs
        or [{"name": "default", "privacy": "dp", "dp": {"epsilon": epsilon, "delta": delta}}],
        "dp_budget": {"epsilon": budget[0], "delta": budget[1]}
        | ({"name": shared} if shared else {}),
    }
    return parse_pipeline(doc, "test_dp")


def event(user: str, path: str, *, ts: int = T0 + 60_000, n: int = 0, **extra: Any) -> bytes:
    ev = {
        "event_id": f"{user}-{path}-{ts}-{n}",
        "ts": ts,
        "type": "page_view",
        "visitor_id": user,
        "url": "https://shop.example.com" + path,
        **extra,
    }
    return orjson.dumps(ev)


def crowd(n_users: int, path: str, *, ts: int = T0 + 60_000, prefix: str = "v") -> list[bytes]:
    return [event(f"{prefix}{i}", path, ts=ts, duration_ms=500 + i) for i in range(n_users)]


def run(engine: PipelineEngine, values: list[bytes]) -> StepResult:
    result = engine.process([Message(v, 0, i) for i, v in enumerate(values)])
    result.extend(engine.close_all())
    return result


def kinds(result: StepResult, kind: str) -> list[dict[str, Any]]:
    return [r for r in result.releases if r["kind"] == kind]


# -- losses: the plan against OpenDP measurements built here ------------------------------


@pytest.mark.parametrize(("L", "M", "eps"), [(1, 1, 1.0), (2, 3, 2.0), (10, 20, 0.5)])
def test_plan_loss_equals_opendp_maps_of_independent_measurements(
    L: int, M: int, eps: float
) -> None:
    p = make_pipeline(
        L=L, M=M, epsilon=eps, clamp=[0, 60000],
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"], "histograms": ["duration_ms"]},
    )  # fmt: skip
    plan = D.plan_output(p, p.outputs[0])
    assert [q.name for q in plan.quantities] == [
        "users", "events", "duration_ms_sum", "duration_ms_count", "duration_ms_histogram",
    ]  # fmt: skip
    ints = dp.vector_domain(dp.atom_domain(T=dp.i64))
    cells = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    sel = plan.get("users")
    assert sel.threshold is not None
    threshold = dp.m.make_laplace_threshold(
        cells, dp.l01inf_distance(dp.absolute_distance(T=dp.i64)), sel.scale, sel.threshold
    )
    losses = [threshold.map((M, M, 1))]
    for name, d_in in (
        ("events", L * M),
        ("duration_ms_sum", L * M * 60000),
        ("duration_ms_count", L * M),
        ("duration_ms_histogram", L * M),
    ):
        q = plan.get(name)
        lap = dp.m.make_laplace(ints, dp.l1_distance(T=dp.i64), q.scale)
        assert lap.map(d_in) == q.epsilon
        losses.append((lap.map(d_in), 0.0))
    assert (sel.epsilon, sel.delta) == threshold.map((M, M, 1))
    total = (math.fsum(e for e, _ in losses), math.fsum(d for _, d in losses))
    assert (plan.epsilon, plan.delta) == pytest.approx(total, rel=1e-12)
    # Within the declared budget of the output, and not far below it (the budget is used).
    assert plan.epsilon <= eps and plan.delta <= 1e-6
    assert plan.epsilon > 0.95 * eps


def test_compose_matches_opendp_composition() -> None:
    """Basic composition as the ledger does it equals OpenDP's make_composition."""
    cells = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))
    ms = [dp.m.make_laplace_threshold(cells, metric, s, t) for s, t in ((2.0, 30), (5.0, 90))]
    d_in = (3, 3, 1)
    composed = dp.c.make_composition(ms).map(d_in)
    assert compose([m.map(d_in) for m in ms]) == pytest.approx(composed, rel=1e-12)


def test_explain_reports_the_plan(tmp_path: Path) -> None:
    from anonstream.explain import explain_pipeline

    p = load_pipeline(Path(__file__).parents[2] / "pipelines/examples/web_activity_dp.yaml")
    plan = D.plan_output(p, p.outputs[0])
    text = explain_pipeline(p)
    assert f"epsilon {plan.epsilon:.4g}" in text
    assert "k-mode" not in text and "Warnings" not in text
    for q in plan.quantities:
        row = next(line for line in text.splitlines() if line.strip().startswith(q.name))
        assert f" {q.scale:.4g} " in row and f"+/-{q.error95:.4g}" in row
        assert f" {q.epsilon:.4g} " in row


def test_explain_and_validate_warn_about_useless_noise() -> None:
    from anonstream.explain import explain_pipeline
    from anonstream.explain_dp import warnings

    # The partner example of the issue, in dp mode: default bounds, epsilon 1 per window.
    p = make_pipeline(L=10, M=20, epsilon=1.0, budget=(2.0, 1e-3), k=10)
    warn = warnings(p)
    assert any(w.startswith("output default: events has a 95% error") for w in warn)
    assert any("pays for 2 of the 24 windows" in w for w in warn)
    assert "Warnings:" in explain_pipeline(p)
    # Tight bounds and a larger budget: no warning.
    assert warnings(make_pipeline(L=1, M=1, epsilon=4.0, k=20, budget=(96.0, 1e-3))) == []


# -- releases -----------------------------------------------------------------------------


def test_release_is_integers_with_mechanism_scale_and_error(tmp_path: Path) -> None:
    p = make_pipeline(
        k=3, epsilon=8.0, clamp=[0, 2000],
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"], "histograms": ["duration_ms"]},
    )  # fmt: skip
    engine = PipelineEngine(p, SECRET)
    result = run(engine, crowd(300, "/a") + crowd(300, "/b", prefix="w") + crowd(2, "/c"))
    aggs = kinds(result, "aggregate")
    assert {r["dims"]["url"] for r in aggs} == {"shop.example.com/a", "shop.example.com/b"}
    plan = D.plan_output(p, p.outputs[0])
    validator = jsonschema.Draft202012Validator(SCHEMA_V2)
    for r in result.releases:
        validator.validate(r)
        assert r["schema_version"] == 2
    for r in aggs:
        m = r["metrics"]
        assert type(m["events"]) is int and type(m["users"]) is int
        assert type(m["duration_ms_sum"]) is int
        assert all(type(v) is int for v in m["duration_ms_histogram"].values())
        assert list(m["duration_ms_histogram"]) == ["[-inf,1000)", "[1000,10000)", "[10000,inf)"]
        assert r["noise"]["mechanism"] == "discrete_laplace"
        assert r["noise"]["epsilon"] == plan.epsilon
        q = r["noise"]["quantities"]["events"]
        assert q["scale"] == plan.get("events").scale and q["error95"] > 0
        assert r["rollup_level"] == 0
        assert abs(m["users"] - 300) < 5 * plan.get("users").error95
    (summary,) = kinds(result, "window_summary")
    assert summary["cells_released"] == 2 and summary["cells_suppressed"] is None
    assert summary["late_events"] is None and summary["rejected_events"] is None
    assert summary["privacy"]["status"] == "released"
    assert summary["privacy"]["window_epsilon"] == plan.epsilon


def test_under_k_exact_people_never_released() -> None:
    """The pre-threshold: a cell of k - 1 people is never released, whatever the noise."""
    p = make_pipeline(k=5, epsilon=10.0, delta=1e-4)
    plan = D.plan_output(p, p.outputs[0])
    assert plan.min_cell_users > 5
    for _ in range(50):
        engine = PipelineEngine(p, SECRET)
        assert not kinds(run(engine, crowd(4, "/small")), "aggregate")


def _window_rows(p: Any, values: list[bytes]) -> tuple[Any, Any]:
    engine = PipelineEngine(p, SECRET)
    engine.process([Message(v, 0, i) for i, v in enumerate(values)])
    (state,) = engine.windows.values()
    rows, _ = bound_cells_per_unit(state.compact(), p.contribution.max_cells_per_unit_per_window)
    return state, rows


def test_neighbouring_inputs_empirical_loss_within_epsilon() -> None:
    """With and without one person: for every outcome seen often enough, the log ratio of
    its frequencies stays within the window's epsilon up to sampling error.

    Many runs at once: one window holds many cells, each with its own people and each an
    independent draw of the same mechanisms (M = 1: a person is in one cell). In the
    neighbouring window every cell has one person more. A cell's outcome is absent, or its
    (users, events) in bins of 2.
    """
    p = make_pipeline(k=2, L=1, M=1, epsilon=1.0, delta=1e-4)
    out = p.outputs[0]
    plan = D.plan_output(p, out)
    n, cells = plan.min_cell_users, 4000  # at the threshold: released about half the time

    def outcomes(extra: bool) -> Counter[tuple[int, int] | None]:
        values = [event(f"c{c}-{u}", f"/x{c}") for c in range(cells) for u in range(n + int(extra))]
        state, rows = _window_rows(p, values)
        recs = D.release_dp(p, out, state, rows).records
        seen: Counter[tuple[int, int] | None] = Counter(
            (r["metrics"]["users"] // 2, r["metrics"]["events"] // 2) for r in recs
        )
        seen[None] = cells - len(recs)
        return seen

    a, b = outcomes(False), outcomes(True)
    assert 0.1 < a[None] / cells < 0.9  # the selection is really being exercised
    assert b[None] < a[None]  # and the extra person is visible to it
    worst = 0.0
    for o in set(a) | set(b):
        ca, cb = a[o], b[o]
        if min(ca, cb) < 100:
            continue
        slack = 3 * math.sqrt(1 / ca + 1 / cb)  # ~3 sigma of a log ratio of counts
        worst = max(worst, abs(math.log(ca / cb)) - slack)
    assert worst <= plan.epsilon


def test_released_numbers_are_in_the_mechanism_support() -> None:
    """Discrete Laplace: every noisy number is an integer, and over many draws the values
    cover a contiguous range (no floating-point gaps)."""
    q = D.plan_output(make_pipeline(epsilon=1.0), make_pipeline(epsilon=1.0).outputs[0])
    events = q.get("events")
    draws = D.laplace_vector(events.scale)([1000] * 20000)
    assert all(type(x) is int for x in draws)
    seen = set(draws)
    lo, hi = np.percentile(draws, [5, 95])
    assert set(range(int(lo), int(hi) + 1)) <= seen


# -- budget and ledger --------------------------------------------------------------------


def test_budget_exhaustion_stops_later_windows_of_the_period() -> None:
    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    engine = PipelineEngine(p, SECRET)
    statuses = []
    for h in range(6):
        res = run(engine, crowd(200, "/a", ts=T0 + h * HOUR + 60_000))
        (summary,) = kinds(res, "window_summary")
        statuses.append(summary["privacy"]["status"])
        if summary["privacy"]["status"] == "budget_exhausted":
            assert not kinds(res, "aggregate")
            assert summary["cells_released"] == 0
            assert summary["privacy"]["window_epsilon"] == 0.0
        assert summary["privacy"]["period_epsilon_spent"] <= 5.0
    assert statuses == ["released", "released"] + ["budget_exhausted"] * 4
    # The next period (next day, new pseudonyms) has a fresh budget.
    res = run(engine, crowd(200, "/a", ts=T0 + DAY + 60_000))
    (summary,) = kinds(res, "window_summary")
    assert summary["privacy"]["status"] == "released"


def test_ledger_survives_restart_and_refuses_rerelease(tmp_path: Path) -> None:
    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    path = tmp_path / "ledger.jsonl"
    engine = PipelineEngine(p, SECRET, ledger=Ledger(p, JsonlLedgerStore(path)))
    first = run(engine, crowd(200, "/a"))
    assert kinds(first, "aggregate")
    # A restart or backfill of the same window with one more person: nothing is published.
    again = PipelineEngine(p, SECRET, ledger=Ledger(p, JsonlLedgerStore(path)))
    res = run(again, [*crowd(200, "/a"), event("newcomer", "/a")])
    assert res.releases == []
    # The spending was not reset: one more window fits, the next does not.
    led = Ledger(p, JsonlLedgerStore(path))
    plan = D.plan_output(p, p.outputs[0])
    assert led.spent(led.period_of(T0)) == (plan.epsilon, plan.delta)
    engine = PipelineEngine(p, SECRET, ledger=led)
    s1 = kinds(run(engine, crowd(200, "/a", ts=T0 + HOUR + 1)), "window_summary")[0]
    s2 = kinds(run(engine, crowd(200, "/a", ts=T0 + 2 * HOUR + 1)), "window_summary")[0]
    assert (s1["privacy"]["status"], s2["privacy"]["status"]) == ("released", "budget_exhausted")


def test_operator_allowed_rerelease_is_published_and_charged(tmp_path: Path) -> None:
    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    path = tmp_path / "ledger.jsonl"
    run(PipelineEngine(p, SECRET, ledger=Ledger(p, JsonlLedgerStore(path))), crowd(200, "/a"))
    led = Ledger(p, JsonlLedgerStore(path), allow_rerelease=True)
    res = run(PipelineEngine(p, SECRET, ledger=led), [*crowd(200, "/a"), event("new", "/a")])
    assert kinds(res, "aggregate")
    charges = JsonlLedgerStore(path).load()
    assert [c.rerelease for c in charges] == [False, True]
    plan = D.plan_output(p, p.outputs[0])
    assert led.spent(led.period_of(T0))[0] == pytest.approx(2 * plan.epsilon)


def test_damaged_ledger_stops_rather_than_resets(tmp_path: Path) -> None:
    p = make_pipeline()
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"not": "a charge"}\n')
    with pytest.raises(ValueError, match="line 1"):
        Ledger(p, JsonlLedgerStore(path))


def test_ledger_is_per_pipeline(tmp_path: Path) -> None:
    p = make_pipeline(budget=(5.0, 1e-3))
    store = JsonlLedgerStore(tmp_path / "l.jsonl")
    store.append(Charge("other", "default", T0, T0 + HOUR, T0, 4.0, 0.0))
    store.append(Charge("other", "default", T0, T0 + HOUR, T0, 4.0, 0.0, budget="people"))
    assert Ledger(p, store).spent(T0) == (0.0, 0.0)
    # A charge written before budgets had names is the pipeline's own.
    store.append(Charge("dptest", "default", T0, T0 + HOUR, T0, 1.5, 0.0))
    assert Ledger(p, store).spent(T0) == (1.5, 0.0)
    # The pipeline now shares a budget: what it spent and released on its own still counts.
    shared = Ledger(make_pipeline(budget=(5.0, 1e-3), shared="people"), store)
    assert shared.spent(T0) == (5.5, 0.0)
    decision = shared.request("dptest", "default", T0, T0 + HOUR, (0.1, 0.0))
    assert decision.status == "already_released"


def _window(engines: dict[str, PipelineEngine], name: str, hour: int) -> str:
    res = run(engines[name], crowd(200, "/a", ts=T0 + hour * HOUR + 60_000))
    (summary,) = kinds(res, "window_summary")
    if summary["privacy"]["status"] != "released":
        assert not kinds(res, "aggregate")
    return f"{name}@{hour}:{summary['privacy']['status']}"


def test_pipelines_sharing_a_budget_exhaust_it_together(tmp_path: Path) -> None:
    """Two pipelines over the same people name one budget: it pays for two windows in all,
    not two each; a restart (new ledgers on the same store) continues the spending."""
    from anonstream.core.budget import ledgers

    ps = [make_pipeline(name=n, epsilon=2.0, budget=(5.0, 1e-3), shared="people")
          for n in ("web", "usage")]  # fmt: skip
    path = tmp_path / "ledger.jsonl"
    books = ledgers(ps, JsonlLedgerStore(path))
    assert books["web"] is books["usage"]
    engines = {p.name: PipelineEngine(p, SECRET, ledger=books[p.name]) for p in ps}
    seen = [_window(engines, "web", 0), _window(engines, "usage", 0)]
    assert seen == ["web@0:released", "usage@0:released"]
    # Restart: the two charges are read back; neither pipeline has anything left today.
    books = ledgers(ps, JsonlLedgerStore(path))
    engines = {p.name: PipelineEngine(p, SECRET, ledger=books[p.name]) for p in ps}
    assert [_window(engines, "usage", 1), _window(engines, "web", 1)] == [
        "usage@1:budget_exhausted", "web@1:budget_exhausted",
    ]  # fmt: skip
    charges = JsonlLedgerStore(path).load()
    assert {c.budget for c in charges} == {"people"} and len(charges) == 2
    assert books["web"].spent(T0)[0] <= 5.0
    # Unshared (each its own budget), the same windows release two each.
    own = [make_pipeline(name=n, epsilon=2.0, budget=(5.0, 1e-3)) for n in ("web", "usage")]
    books = ledgers(own, JsonlLedgerStore(tmp_path / "own.jsonl"))
    engines = {p.name: PipelineEngine(p, SECRET, ledger=books[p.name]) for p in own}
    statuses = [_window(engines, n, h).split(":")[1] for h in (0, 1) for n in ("web", "usage")]
    assert statuses == ["released"] * 4


def test_shared_budget_declarations_must_agree(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anonstream.cli import app
    from anonstream.core.budget import check_shared_budgets, ledgers

    a = make_pipeline(name="web", budget=(5.0, 1e-3), shared="people")
    b = make_pipeline(name="usage", budget=(6.0, 1e-3), shared="people")
    with pytest.raises(ValueError, match="dp budget people: pipelines web and usage"):
        check_shared_budgets([a, b])
    with pytest.raises(ValueError, match="dp budget people"):
        ledgers([a, b], JsonlLedgerStore(tmp_path / "l.jsonl"))
    from anonstream.explain import explain_pipeline

    assert "shared budget 'people'" in explain_pipeline(a)
    assert "shared budget" not in explain_pipeline(make_pipeline(name="web"))
    # A budget shared with a pipeline's own budget by naming it: the same budget.
    check_shared_budgets([make_pipeline(name="web"), make_pipeline(name="x", shared="web")])
    # validate over a directory refuses the disagreement.
    src = (Path(__file__).parents[2] / "pipelines/examples/web_activity_dp.yaml").read_text()
    shared = src.replace("dp_budget: {epsilon: 3.0,", "dp_budget: {name: people, epsilon: 3.0,")
    assert shared != src
    (tmp_path / "a.yaml").write_text(shared)
    (tmp_path / "b.yaml").write_text(
        shared.replace("pipeline: web_activity_dp", "pipeline: other_dp").replace(
            "pseudonym_rotation: daily", "pseudonym_rotation: weekly"
        )
    )
    result = CliRunner().invoke(
        app, ["validate", "--pipelines-dir", str(tmp_path), "--no-check-secret"]
    )
    assert result.exit_code != 0
    assert "dp budget people" in " ".join(result.output.split())


@pytest.mark.parametrize("name", ["", "a b", "../x", 3, "-x"])
def test_bad_budget_names_fail_at_load(name: Any) -> None:
    with pytest.raises(PipelineError) as err:
        parse_pipeline(_doc_with_budget({"name": name}), "bad")
    assert err.value.path == "dp_budget.name"


def _doc_with_budget(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline": "dptest", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id"], "fields": web_test_fields(),
        "window": {"size": "1h"}, "dimensions": ["type", "url"],
        "outputs": [{"name": "default", "privacy": "dp", "dp": {"epsilon": 1, "delta": 1e-7}}],
        "dp_budget": {"epsilon": 10, "delta": 1e-5, **extra},
    }  # fmt: skip


# -- pipeline files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.pop("dp_budget"), "dp_budget"),
        (lambda d: d["outputs"][0].update(noise={"epsilon": 1.0}), "outputs[0].noise"),
        (lambda d: d["outputs"][0]["dp"].update(delta=0), "outputs[0].dp.delta"),
        (lambda d: d["outputs"][0].update(privacy="maybe"), "outputs[0].privacy"),
        (lambda d: d["outputs"][0]["dp"].update(mechanism="float"), "outputs[0].dp.mechanism"),
        (lambda d: d.update(dp_budget={"epsilon": 0.5, "delta": 1e-3}), "dp_budget"),
        (
            lambda d: d["fields"].update(duration_ms={"measure": True, "clamp": [0, 1.5]}),
            "fields.duration_ms.clamp",
        ),
        (
            lambda d: d["outputs"].append({"name": "partner", "dimensions": ["type"]}),
            "outputs[1].privacy",
        ),
    ],
)
def test_bad_dp_declarations_fail_at_load(change: Any, path: str) -> None:
    doc: dict[str, Any] = {
        "pipeline": "dptest", "version": 1, "contract": "web_activity",
        "privacy_unit": ["visitor_id"], "fields": web_test_fields(),
        "window": {"size": "1h"}, "dimensions": ["type", "url"],
        "metrics": {"sums": ["duration_ms"]},
        "outputs": [{"name": "default", "privacy": "dp", "dp": {"epsilon": 1, "delta": 1e-7}}],
        "dp_budget": {"epsilon": 10, "delta": 1e-5},
    }  # fmt: skip
    parse_pipeline(json.loads(json.dumps(doc)), "ok")
    change(doc)
    with pytest.raises(PipelineError) as err:
        parse_pipeline(doc, "bad")
    assert err.value.path == path


def test_k_mode_stays_the_default_and_unchanged() -> None:
    doc_k = parse_pipeline(
        {
            "pipeline": "konly", "version": 1, "contract": "web_activity",
            "privacy_unit": ["visitor_id"], "fields": web_test_fields(),
            "window": {"size": "1h"}, "dimensions": ["type"],
        },
        "k",
    )  # fmt: skip
    assert doc_k.outputs[0].privacy == "k" and doc_k.dp_budget is None
    res = run(PipelineEngine(doc_k, SECRET), crowd(20, "/a"))
    assert all(r["schema_version"] == 1 for r in res.releases)
    assert "privacy" not in kinds(res, "window_summary")[0]


def test_validate_prints_dp_warnings(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anonstream.cli import app

    src = Path(__file__).parents[2] / "pipelines/examples/web_activity_dp.yaml"
    text = src.read_text().replace(
        "max_cells_per_unit_per_window: 3", "max_cells_per_unit_per_window: 30"
    )
    (tmp_path / "noisy.yaml").write_text(text)
    result = CliRunner().invoke(
        app, ["validate", "--pipelines-dir", str(tmp_path), "--no-check-secret"]
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "warning web_activity_dp: output default: events has a 95% error" in out


def test_gaussian_warnings_suggest_bounds_by_its_l2_sensitivity() -> None:
    """The Gaussian's sensitivity grows with events x sqrt(cells), not events x cells: the
    suggested bound says so (the shipped example: 2 events x sqrt(3 cells) = 3.46)."""
    from anonstream.explain_dp import warnings

    src = Path(__file__).parents[2] / "pipelines/examples/web_activity_dp_gaussian.yaml"
    found = warnings(load_pipeline(src))
    assert found and all("events x sqrt(cells) per person <=" in w for w in found)
    assert all("(now 3.46)" in w for w in found)


# -- audit ----------------------------------------------------------------------------------


def test_audit_accepts_a_dp_stream_and_catches_overspending() -> None:
    from anonstream.audit import audit_records

    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    engine = PipelineEngine(p, SECRET)
    recs: list[dict[str, Any]] = []
    for h in range(3):
        recs += run(engine, crowd(200, "/a", ts=T0 + h * HOUR + 60_000)).releases
    report = audit_records(recs)
    assert report.ok, report.render()
    assert report.findings == []
    # Tampered: the third window claims to be released and paid, past the budget.
    forged = json.loads(json.dumps(recs))
    last = forged[-1]
    assert last["privacy"]["status"] == "budget_exhausted"
    last["privacy"].update(status="released", window_epsilon=2.0)
    report = audit_records(forged)
    assert any(f.rule == "budget" and "over the budget" in f.message for f in report.failures)
    # Tampered: aggregates in a refused window.
    forged = json.loads(json.dumps(recs))
    agg = json.loads(json.dumps(recs[0]))
    agg["window_start"], agg["window_end"] = forged[-1]["window_start"], forged[-1]["window_end"]
    agg["release_id"] = "f" * 32
    forged.insert(len(forged) - 1, agg)
    report = audit_records(forged)
    assert any(f.rule == "budget" and "refused" in f.message for f in report.failures)


def test_kafka_ledger_store_forgets_aborted_charges() -> None:
    """The worker's store: charges count once their transaction commits; an aborted
    transaction's charges never happened (the step is redone and charged again)."""
    from anonstream.runtime.ledger import KafkaLedgerStore

    store = KafkaLedgerStore("anon.ledger.test")
    c1 = Charge("p", "default", T0, T0 + HOUR, T0, 1.0, 1e-9)
    store.append(c1)
    ((key, value),) = store.drain()
    assert key == f"p/default/{T0}/0".encode() and Charge(**json.loads(value)) == c1
    assert store.load() == []  # sent, not yet committed
    store.abort()
    assert store.drain() == [] and store.load() == []
    store.append(c1)
    store.drain()
    store.committed()
    assert store.load() == [c1]
    again = Charge("p", "default", T0, T0 + HOUR, T0, 1.0, 1e-9, rerelease=True)
    store.append(again)
    ((key, _),) = store.drain()
    assert key == f"p/default/{T0}/1".encode()  # a re-release keeps its own compacted key


def test_kafka_ledger_keys_differ_per_writer() -> None:
    """Two workers charging one window (a backfill beside production) write two keys: with
    one key, compaction would keep one charge and the budget would count one release."""
    from anonstream.runtime.ledger import KafkaLedgerStore

    c1 = Charge("p", "default", T0, T0 + HOUR, T0, 1.0, 1e-9)
    keys = set()
    for writer in ("anonstream-prod-a", "anonstream-backfill-a"):
        store = KafkaLedgerStore("anon.ledger", writer=writer)
        store.append(c1)
        ((key, _),) = store.drain()
        keys.add(key)
    assert keys == {f"p/default/{T0}/anonstream-prod-a/0".encode(),
                    f"p/default/{T0}/anonstream-backfill-a/0".encode()}  # fmt: skip


def test_replay_with_a_ledger_file_does_not_release_a_window_twice(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anonstream.cli import app

    pipeline = Path(__file__).parents[2] / "pipelines/examples/web_activity_dp.yaml"
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(crowd(300, "/a")) + b"\n")
    ledger = tmp_path / "ledger.jsonl"
    env = {"ANONSTREAM_SECRET": "x" * 32}

    def replay(out: Path, *extra: str) -> list[dict[str, Any]]:
        args = ["replay", "-p", str(pipeline), "-i", str(events), "-o", str(out), *extra]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in out.read_text().splitlines()]

    first = replay(tmp_path / "1.jsonl", "--ledger", str(ledger))
    assert [r["kind"] for r in first] == ["aggregate", "window_summary"]
    assert replay(tmp_path / "2.jsonl", "--ledger", str(ledger)) == []
    # Allowed again, it would exceed this example's budget (one window per day): refused.
    third = replay(tmp_path / "3.jsonl", "--ledger", str(ledger), "--allow-rerelease")
    assert [r["privacy"]["status"] for r in third] == ["budget_exhausted"]
    assert len(JsonlLedgerStore(ledger).load()) == 1


def test_audit_reads_every_ledger_topic_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgraded worker's charges are on anon.ledger and, before the upgrade, on the
    per-group topic: `audit --ledger-topic` is repeatable and checks against all of them."""
    from typer.testing import CliRunner

    import anonstream.audit.ledger as audit_ledger
    from anonstream.cli import app

    pipeline = Path(__file__).parents[2] / "pipelines/examples/web_activity_dp.yaml"
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(crowd(300, "/a") + crowd(300, "/a", ts=T0 + DAY + 60)) + b"\n")
    ledger, releases = tmp_path / "ledger.jsonl", tmp_path / "releases.jsonl"
    env = {"ANONSTREAM_SECRET": "x" * 32}
    args = ["replay", "-p", str(pipeline), "-i", str(events), "-o", str(releases)]
    result = CliRunner().invoke(app, [*args, "--ledger", str(ledger)], env=env)
    assert result.exit_code == 0, result.output
    charges = audit_ledger.read_ledger_file(ledger)
    assert len(charges) == 2
    topics = {"anon.ledger.anonstream": charges[:1], "anon.ledger": charges[1:]}

    async def read_topic(bootstrap: str, topic: str, **_: Any) -> list[dict[str, Any]]:
        return topics[topic]

    monkeypatch.setattr(audit_ledger, "read_ledger_topic", read_topic)
    audit = ["audit", "-i", str(releases), "-b", "127.0.0.1:1"]
    both = ["--ledger-topic", "anon.ledger", "--ledger-topic", "anon.ledger.anonstream"]
    result = CliRunner().invoke(app, [*audit, *both], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*audit, "--ledger-topic", "anon.ledger"], env=env)
    assert result.exit_code == 1 and "not charged in the ledger" in result.output


# -- sensitivity: what one person can change, as an attacker would try ------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_paths = st.sampled_from(["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h"])
_types = st.sampled_from(["page_view", "click", "beacon"])
_durations = st.one_of(st.none(), st.integers(-(10**9), 10**9))
_event = st.tuples(_types, _paths, _durations, st.integers(0, HOUR - 1))


def _exact(p: Any, evs: list[tuple[str, str, str, int | None, int]]) -> dict[Any, dict[str, Any]]:
    values = []
    for i, (user, typ, path, dur, off) in enumerate(evs):
        ev: dict[str, Any] = {
            "event_id": f"id-{i}-{user}", "ts": T0 + off, "type": typ, "visitor_id": user,
            "url": "https://shop.example.com" + path,
        }  # fmt: skip
        if dur is not None:
            ev["duration_ms"] = dur
        values.append(orjson.dumps(ev))
    engine = PipelineEngine(p, SECRET)
    engine.process([Message(v, 0, i) for i, v in enumerate(values)])
    if not engine.windows:
        return {}  # every event rejected by the contract
    state, rows = _window_rows(p, values)
    ex = D.exact_cells(p, p.outputs[0], state, rows)
    out: dict[Any, dict[str, Any]] = {}
    for i, key in enumerate(ex.keys):
        out[key] = {"users": int(ex.users[i])}
        for name in ex.numbers:
            out[key][name] = ex.take(name, [i]).tolist()
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.lists(st.tuples(st.integers(0, 5), _event), min_size=1, max_size=40),
    extra=st.lists(_event, min_size=1, max_size=60),
    L=st.integers(1, 3),
    M=st.integers(1, 3),
    outdims=st.sampled_from([("type", "url"), ("type",), ("url",)]),
)
def test_one_person_changes_no_figure_by_more_than_its_sensitivity(
    base: list[Any], extra: list[Any], L: int, M: int, outdims: tuple[str, ...]
) -> None:
    """Adding one person with any events (many cells, many events, extreme values) moves
    the exact figures a window's dp release is computed from by at most the sensitivities
    the privacy maps are evaluated at."""
    p = make_pipeline(
        L=L, M=M, clamp=[0, 200],
        metrics={"sums": ["duration_ms"], "means": ["duration_ms"], "histograms": ["duration_ms"]},
        outputs=[{"name": "default", "dimensions": list(outdims), "privacy": "dp",
                  "dp": {"epsilon": 1.0, "delta": 1e-6}}],
    )  # fmt: skip
    before_evs = [(f"u{u}", *e) for u, e in base]
    after_evs = before_evs + [("attacker", *e) for e in extra]
    before, after = _exact(p, before_evs), _exact(p, after_evs)
    keys = set(before) | set(after)
    if not after:
        return
    zero = {
        name: [0] * len(v) if isinstance(v, list) else 0
        for name, v in next(iter(after.values())).items()
    }

    def diff(name: str) -> list[int]:
        return [
            abs(a - b)
            for key in keys
            for a, b in zip(
                np.atleast_1d(after.get(key, zero)[name]),
                np.atleast_1d(before.get(key, zero)[name]),
                strict=True,
            )
        ]

    users = diff("users")
    l0, l1, linf = D.sensitivity(p, p.outputs[0], "users")
    assert sum(1 for d in users if d) <= l0 and max(users) <= linf and sum(users) <= l1
    _, l2, _ = D.sensitivity(p, p.outputs[0], "users", "gaussian")
    assert math.sqrt(sum(d * d for d in users)) <= l2
    for name in ("events", "duration_ms_sum", "duration_ms_count", "duration_ms_histogram"):
        assert sum(diff(name)) <= D.sensitivity(p, p.outputs[0], name), name
        l2 = math.sqrt(sum(d * d for d in diff(name)))
        assert l2 <= D.sensitivity(p, p.outputs[0], name, "gaussian"), name


def test_worker_runs_dp_in_scale_out_but_refuses_a_budget_shared_by_pipelines() -> None:
    """In scale-out a period's windows meet in one partials partition of the pipeline's
    topic; a budget named by two pipelines spans two topics (two release stages at once):
    refused, naming the budget and its pipelines. A pipeline's own budget runs."""
    from anonstream.metrics import Metrics
    from anonstream.runtime.batch import BatchLoop
    from anonstream.settings import Settings

    settings = Settings(bootstrap_servers="127.0.0.1:1", scale_out=True, web_enabled=False)
    loop = BatchLoop(settings, [make_pipeline()], SECRET, Metrics())
    assert loop.ledger is not None and loop.ledger.topic == "anon.ledger"
    shared = [make_pipeline(name=n, shared="people") for n in ("web", "usage")]
    with pytest.raises(ValueError, match=r"single mode only \(people: usage, web\)"):
        BatchLoop(settings, shared, SECRET, Metrics())
    # Single mode: one worker spends the shared budget for both.
    BatchLoop(Settings(bootstrap_servers="127.0.0.1:1"), shared, SECRET, Metrics())


def test_the_worker_ledger_is_the_installation_s_and_reads_the_legacy_one() -> None:
    """One topic whatever the group (a backfill under a new group spends the same budget),
    plus the per-group topic of earlier versions, read only; the re-release switch reaches
    the ledger."""
    from anonstream.metrics import Metrics
    from anonstream.runtime.batch import BatchLoop
    from anonstream.settings import Settings

    for group in ("anonstream", "backfill-2026"):
        settings = Settings(bootstrap_servers="127.0.0.1:1", group_id=group)
        loop = BatchLoop(settings, [make_pipeline()], SECRET, Metrics())
        assert loop.ledger is not None
        assert (loop.ledger.topic, loop.ledger.legacy) == ("anon.ledger", f"anon.ledger.{group}")
        assert not loop._ledgers["dptest"].allow_rerelease
    settings = Settings(bootstrap_servers="127.0.0.1:1", allow_rerelease=True, ledger_topic="L")
    loop = BatchLoop(settings, [make_pipeline()], SECRET, Metrics())
    assert loop._ledgers["dptest"].allow_rerelease and loop.ledger is not None
    assert loop.ledger.topic == "L"


def test_an_allowed_rerelease_is_logged_without_data(caplog: pytest.LogCaptureFixture) -> None:
    p = make_pipeline(epsilon=2.0, budget=(5.0, 1e-3))
    led = Ledger(p, allow_rerelease=True)
    assert led.request("dptest", "default", T0, T0 + HOUR, (2.0, 1e-6)).status == "released"
    assert not caplog.records
    with caplog.at_level("WARNING", logger="anonstream.worker"):
        decision = led.request("dptest", "default", T0, T0 + HOUR, (2.0, 1e-6), "d" * 32)
    assert decision.status == "released"
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert rec.levelname == "WARNING" and "released again" in msg and f"{T0}" in msg
    assert "d" * 32 not in msg  # the content digest is not logged
    assert [c.rerelease for c in led.store.load()] == [False, True]


# -- discrete Gaussian (zCDP) ---------------------------------------------------------------

_ALL = {"sums": ["duration_ms"], "means": ["duration_ms"], "histograms": ["duration_ms"]}


def gaussian_pipeline(**kw: Any) -> Any:
    eps, delta = kw.pop("epsilon", 2.0), kw.pop("delta", 1e-6)
    dims = kw.pop("dims", None)
    out: dict[str, Any] = {
        "name": "default", "privacy": "dp",
        "dp": {"epsilon": eps, "delta": delta, "mechanism": "gaussian"},
    }  # fmt: skip
    if dims is not None:
        out["dimensions"] = dims
    return make_pipeline(outputs=[out], **kw)


@pytest.mark.parametrize(("L", "M", "eps"), [(1, 1, 1.0), (2, 3, 2.0)])
def test_gaussian_plan_loss_equals_opendp_maps_of_independent_measurements(
    L: int, M: int, eps: float
) -> None:
    p = gaussian_pipeline(L=L, M=M, epsilon=eps, clamp=[0, 60000], metrics=_ALL)
    plan = D.plan_output(p, p.outputs[0])
    assert plan.mechanism == "gaussian" and plan.rho is not None
    ints = dp.vector_domain(dp.atom_domain(T=dp.i64))
    cells = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    sel = plan.get("users")
    assert sel.threshold is not None
    # L2 sensitivities, from the bounds: M entries change by at most L (x60000 for sums).
    l2 = {
        "events": math.ceil(L * math.sqrt(M) - 1e-9),
        "duration_ms_sum": math.ceil(L * 60000 * math.sqrt(M) - 1e-9),
        "duration_ms_count": math.ceil(L * math.sqrt(M) - 1e-9),
        "duration_ms_histogram": math.ceil(L * math.sqrt(M) - 1e-9),
    }
    threshold = dp.m.make_gaussian_threshold(
        cells, dp.l02inf_distance(dp.absolute_distance(T=dp.i64)), sel.scale, sel.threshold
    )
    rho_sel, delta_sel = threshold.map((M, math.ceil(math.sqrt(M) - 1e-9), 1))
    assert (sel.rho, sel.delta) == (rho_sel, delta_sel)
    rhos = [rho_sel]
    for name, d_in in l2.items():
        q = plan.get(name)
        g = dp.m.make_gaussian(ints, dp.l2_distance(T=dp.i64), q.scale)
        assert g.output_measure == dp.zero_concentrated_divergence()
        assert g.map(d_in) == q.rho
        rhos.append(g.map(d_in))
    assert plan.rho == pytest.approx(math.fsum(rhos), rel=1e-12)
    assert plan.epsilon <= eps and plan.delta <= 1e-6 and plan.epsilon > 0.9 * eps
    # The window's (epsilon, delta) is OpenDP's conversion of that zCDP loss: compared here
    # with the conversion of a real composition of Gaussian measurements with the same rho.
    n = 4
    g = dp.m.make_gaussian(ints, dp.l2_distance(T=dp.i64), 1.0)
    scale = dp.binary_search_param(
        lambda s: dp.m.make_gaussian(ints, dp.l2_distance(T=dp.i64), s), d_in=1,
        d_out=plan.rho / n, bounds=(1e-6, 1e9),
    )  # fmt: skip
    g = dp.m.make_gaussian(ints, dp.l2_distance(T=dp.i64), scale)
    composed = dp.c.make_composition([g] * n)
    assert composed.map(1) == pytest.approx(n * g.map(1), rel=1e-12)  # rhos add up
    approx = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.c.make_approximate(composed)), 1e-6)
    assert D.zcdp_to_approx(n * g.map(1), 0.0, 1e-6) == pytest.approx(approx.map(1), rel=1e-9)


def test_gaussian_release_is_integers_in_the_v2_contract() -> None:
    p = gaussian_pipeline(k=3, epsilon=8.0, clamp=[0, 2000], metrics=_ALL)
    res = run(PipelineEngine(p, SECRET), crowd(300, "/a") + crowd(2, "/c"))
    aggs = kinds(res, "aggregate")
    assert [r["dims"]["url"] for r in aggs] == ["shop.example.com/a"]
    validator = jsonschema.Draft202012Validator(SCHEMA_V2)
    plan = D.plan_output(p, p.outputs[0])
    for r in res.releases:
        validator.validate(r)
    m = aggs[0]["metrics"]
    assert all(type(m[k]) is int for k in ("users", "events", "duration_ms_sum"))
    assert aggs[0]["noise"]["mechanism"] == "discrete_gaussian"
    assert aggs[0]["noise"]["rho"] == plan.rho and aggs[0]["noise"]["epsilon"] == plan.epsilon
    assert abs(m["users"] - 300) < 5 * plan.get("users").error95
    (summary,) = kinds(res, "window_summary")
    assert summary["privacy"]["window_epsilon"] == plan.epsilon


def test_gaussian_noise_is_in_the_integer_support() -> None:
    """Discrete Gaussian: integers only, and a contiguous range (no floating-point gaps)."""
    p = gaussian_pipeline(epsilon=1.0)
    events = D.plan_output(p, p.outputs[0]).get("events")
    draws = D.gaussian_vector(events.scale)([1000] * 20000)
    assert all(type(x) is int for x in draws)
    lo, hi = np.percentile(draws, [5, 95])
    assert set(range(int(lo), int(hi) + 1)) <= set(draws)


def test_gaussian_neighbouring_inputs_empirical_loss_within_epsilon() -> None:
    """As the Laplace test: with and without one person in each of many cells."""
    p = gaussian_pipeline(k=2, L=1, M=1, epsilon=1.0, delta=1e-4)
    out = p.outputs[0]
    plan = D.plan_output(p, out)
    n, cells = plan.min_cell_users, 4000

    def outcomes(extra: bool) -> Counter[tuple[int, int] | None]:
        values = [event(f"c{c}-{u}", f"/x{c}") for c in range(cells) for u in range(n + int(extra))]
        state, rows = _window_rows(p, values)
        recs = D.release_dp(p, out, state, rows).records
        seen: Counter[tuple[int, int] | None] = Counter(
            (r["metrics"]["users"] // 2, r["metrics"]["events"] // 2) for r in recs
        )
        seen[None] = cells - len(recs)
        return seen

    a, b = outcomes(False), outcomes(True)
    assert 0.1 < a[None] / cells < 0.9 and b[None] < a[None]
    worst = 0.0
    for o in set(a) | set(b):
        ca, cb = a[o], b[o]
        if min(ca, cb) < 100:
            continue
        worst = max(worst, abs(math.log(ca / cb)) - 3 * math.sqrt(1 / ca + 1 / cb))
    assert worst <= plan.epsilon


# -- the plan's faster searches find what OpenDP's own searches over the whole range find --


def _full_search_plan(p: Any) -> list[tuple[float, int | None]]:
    """(scale, threshold) per quantity by OpenDP's binary searches over the whole ranges
    the plan used before it searched near a guess first (core/dp.py `_boundary`)."""
    out = p.outputs[0]
    gauss = out.dp.mechanism == "gaussian"
    ints = dp.vector_domain(dp.atom_domain(T=dp.i64))
    cells = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    names = D.quantity_names(p)
    never = 2**30
    if gauss:
        delta = out.dp.delta
        rho = dp.binary_search(
            lambda r: D.zcdp_to_approx(r, delta / 2, delta)[0] <= out.dp.epsilon,
            bounds=(1e-9, 1e3), T=float,
        )  # fmt: skip
        share, sel_delta = rho / len(names), delta / 2
        metric = dp.l02inf_distance(dp.absolute_distance(T=dp.i64))

        def thr(s: float, t: int) -> Any:
            return dp.m.make_gaussian_threshold(cells, metric, s, t)

        def vec(s: float) -> Any:
            return dp.m.make_gaussian(ints, dp.l2_distance(T=dp.i64), s)
    else:
        share, sel_delta = out.dp.epsilon / len(names), out.dp.delta
        metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))

        def thr(s: float, t: int) -> Any:
            return dp.m.make_laplace_threshold(cells, metric, s, t)

        def vec(s: float) -> Any:
            return dp.m.make_laplace(ints, dp.l1_distance(T=dp.i64), s)

    d_sel = D.sensitivity(p, out, "users", out.dp.mechanism)
    scale = dp.binary_search(
        lambda s: thr(s, never).map(d_sel)[0] <= share, bounds=(1e-6, 1e9), T=float
    )
    t = dp.binary_search(
        lambda t: thr(scale, int(t)).map(d_sel)[1] <= sel_delta, bounds=(1, never), T=int
    )
    found: list[tuple[float, int | None]] = [(scale, int(t))]
    for name in names[1:]:
        d_in = D.sensitivity(p, out, name, out.dp.mechanism)
        s = dp.binary_search_param(vec, d_in=d_in, d_out=share, bounds=(1e-6, 1e15))
        found.append((s, None))
    return found


@pytest.mark.parametrize(
    ("L", "M", "eps", "delta", "mechanism"),
    [
        (1, 1, 1.0, 1e-6, "laplace"),
        (2, 3, 2.0, 1e-6, "laplace"),
        (10, 20, 10.0, 1e-4, "laplace"),
        (10, 20, 0.1, 1e-9, "laplace"),
        (3, 7, 1 / 3, 1e-7, "laplace"),
        (1, 1, 1.0, 1e-6, "gaussian"),
        (2, 3, 0.5, 1e-8, "gaussian"),
    ],
)
def test_plan_searches_find_what_whole_range_searches_find(
    L: int, M: int, eps: float, delta: float, mechanism: str
) -> None:
    """The plan searches near a guess first (start-up cost); the guess is only a hint, so
    the scales and thresholds are those OpenDP's searches over the whole range give."""
    out = {"name": "default", "privacy": "dp",
           "dp": {"epsilon": eps, "delta": delta, "mechanism": mechanism}}  # fmt: skip
    metrics = {"sums": ["duration_ms"], "means": ["duration_ms"]}
    p = make_pipeline(L=L, M=M, clamp=[0, 900], metrics=metrics, outputs=[out])
    plan = D.plan_output(p, p.outputs[0])
    assert [(q.scale, q.threshold) for q in plan.quantities] == _full_search_plan(p)


@pytest.mark.parametrize("example", ["web_activity_dp", "web_activity_dp_gaussian"])
def test_the_explain_report_in_the_docs_is_what_explain_prints(example: str) -> None:
    """docs/privacy-model.md shows each shipped dp example's `explain` report: it must be
    what `explain` prints today (the docs wrap its long lines), not a stale copy."""
    import re

    from anonstream.explain import explain_pipeline

    root = Path(__file__).parents[2]
    docs = (root / "docs/privacy-model.md").read_text()
    command = f"anonstream explain -p pipelines/examples/{example}.yaml"
    flat_docs = " ".join(docs.split())
    at = flat_docs.index(command)  # the report is the text block right after the command
    block = flat_docs[at:].split("```text", 1)[1].split("```", 1)[0]
    printed = explain_pipeline(load_pipeline(root / f"pipelines/examples/{example}.yaml"))
    flat = re.sub(r"\s+", " ", printed)
    # A repeated warning may be cut short as "... (the same)": each piece around it counts.
    for piece in block.split("... (the same)"):
        assert re.sub(r"\s+", " ", piece).strip() in flat


@pytest.mark.parametrize("scale", [1e5 * (1 + 1e-9), 3.3e5, 1e6])
def test_gaussian_error_bound_above_the_exact_range_is_not_below_the_discrete_one(
    scale: float,
) -> None:
    """Large discrete Gaussian scales (sums) take the continuous bound with a margin, as
    OpenDP's discrete bound takes seconds there; it must not promise a smaller error."""
    from opendp.accuracy import discrete_gaussian_scale_to_accuracy

    exact = discrete_gaussian_scale_to_accuracy(scale, D.ALPHA)
    assert exact <= D.gaussian_error95(scale) <= exact * (1 + 2e-6) + 3
