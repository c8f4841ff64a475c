"""Shared pieces of the integration tests: isolated topics per test on the session broker,
replay of the same events for comparison, and identifier checks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from anonstream.broker.topics import create_topics
from anonstream.core.decode import parse_ts
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import Pipeline, load_pipeline
from anonstream.core.windows import window_starts
from anonstream.runtime.replay import replay
from anonstream.synthetic.produce import produce
from anonstream.testing import WorkerProcess, read_releases, summaries_complete

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-test-secret-0123456789abcdef"


@dataclass
class Setup:
    """Pipelines rewritten to topics of their own, so tests never see each other's data."""

    dir: Path
    pipelines: dict[str, Pipeline]
    suffix: str
    dead_letter_topic: str

    def source(self, name: str) -> str:
        return self.pipelines[name].source_topic

    @property
    def output_topics(self) -> list[str]:
        return [o.topic for p in self.pipelines.values() for o in p.outputs]


def isolated_pipelines(tmp: Path, bootstrap: str, partitions: int = 4) -> Setup:
    suffix = uuid.uuid4().hex[:8]
    d = tmp / "pipelines"
    d.mkdir()
    for src in sorted((ROOT / "pipelines").glob("*.yaml")):
        doc = yaml.safe_load(src.read_text())
        contract_topic = {"web_activity": "raw.web-activity", "service_usage": "raw.usage"}
        doc["source_topic"] = f"{contract_topic[doc['contract']]}.{suffix}"
        for o in doc.get("outputs") or [{"name": "default"}]:
            o["topic"] = f"anon.aggregates.{doc['pipeline']}.{o['name']}.{suffix}"
        doc.setdefault(
            "outputs",
            [{"name": "default", "topic": f"anon.aggregates.{doc['pipeline']}.default.{suffix}"}],
        )
        (d / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    pipes = {p.name: p for p in (load_pipeline(f) for f in sorted(d.glob("*.yaml")))}
    create_topics(bootstrap, {p.source_topic: partitions for p in pipes.values()})
    return Setup(d, pipes, suffix, f"anon.deadletter.{suffix}")


def start_worker(setup: Setup, bootstrap: str, tmp: Path, **kw: Any) -> WorkerProcess:
    env = {"ANONSTREAM_DEAD_LETTER_TOPIC": setup.dead_letter_topic, **kw.pop("extra_env", {})}
    if "instance_id" in kw:
        env["ANONSTREAM_INSTANCE_ID"] = kw.pop("instance_id")
    n = len(list(tmp.glob("worker-*.log")))
    w = WorkerProcess(
        bootstrap, pipelines_dir=setup.dir, secret=SECRET, group_id=f"it-{setup.suffix}",
        idle_close_seconds=kw.pop("idle_close_seconds", 3.0), extra_env=env,
        log_path=tmp / f"worker-{n}.log", **kw,
    )  # fmt: skip
    w.start()
    return w


def produce_events(bootstrap: str, setup: Setup, events: Iterable[tuple[str, Any]]) -> int:
    """(pipeline name, event dict or raw bytes) pairs to that pipeline's source topic."""
    routed = [(setup.source(name), ev) for name, ev in events]
    return asyncio.run(produce(bootstrap, routed))


def expected_windows(setup: Setup, events: Sequence[tuple[str, Any]]) -> dict[str, int]:
    starts: dict[str, set[int]] = {}
    for name, ev in events:
        if not isinstance(ev, dict):
            continue
        ts = parse_ts(ev.get("ts"))
        if ts is not None:
            starts.setdefault(name, set()).update(window_starts(setup.pipelines[name].window, ts))
    return {name: len(s) for name, s in starts.items()}


def read_all(bootstrap: str, setup: Setup, windows: dict[str, int], timeout: float = 90):  # type: ignore[no-untyped-def]
    return asyncio.run(
        read_releases(
            bootstrap, setup.output_topics, until=summaries_complete(windows), timeout=timeout
        )
    )


def replay_events(pipeline: Pipeline, payloads: Iterable[Any]) -> list[dict[str, Any]]:
    engine = PipelineEngine(pipeline, load_secret({"ANONSTREAM_SECRET": SECRET}))
    out: list[dict[str, Any]] = []
    lines = (p if isinstance(p, bytes) else orjson.dumps(p) for p in payloads)
    replay(engine, lines, out.append)
    return out


def canonical(
    records: Iterable[dict[str, Any]], *, kinds: tuple[str, ...] = ("aggregate",)
) -> list[bytes]:
    return sorted(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records if r["kind"] in kinds
    )


def diff_summary(got: Iterable[dict[str, Any]], expected: Iterable[dict[str, Any]]) -> str:
    """Which cells differ, by window and dims, with their event and user counts."""

    def index(records: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        return {
            (r["window_start"], tuple(sorted(r["dims"].items()))): (
                r["metrics"]["events"], r["metrics"]["users"],
            )
            for r in records
            if r["kind"] == "aggregate"
        }  # fmt: skip

    g, e = index(got), index(expected)
    lines = [
        f"{key}: got {g.get(key)} expected {e.get(key)}"
        for key in sorted(set(g) | set(e))
        if g.get(key) != e.get(key)
    ]
    late = [(r["window_start"], r["late_events"]) for r in got if r["kind"] == "window_summary"]
    return f"{len(lines)} cells differ (late per summary {late}):\n" + "\n".join(lines[:30])


def assert_equal_to_replay(
    setup: Setup,
    events: Sequence[tuple[str, Any]],
    records: Sequence[dict[str, Any]],
    kinds: tuple[str, ...] = ("aggregate", "window_summary"),
) -> None:
    """Exactly the releases replay gives for the events, and no release_id delivered with
    two different contents (a consumer keeps the first record per release_id)."""
    first: dict[str, bytes] = {}
    unique = []
    for r in records:
        body = orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
        seen = first.setdefault(r["release_id"], body)
        assert seen == body, f"release {r['release_id']} delivered with two contents"
        if seen is body:
            unique.append(r)
    records = unique
    for name, pipeline in setup.pipelines.items():
        expected = replay_events(pipeline, [ev for n, ev in events if n == name])
        got = [r for r in records if r["pipeline"] == name]
        assert canonical(got, kinds=kinds) == canonical(expected, kinds=kinds), (
            f"{name}: " + diff_summary(got, expected)
        )
