"""The worker's Faust host starts no Kafka client of its own, and anonstream.faust wires an
agent on the raw topic and refuses what it cannot run (no broker needed: nothing here
starts)."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.faust import FaustPipeline, anonymize, checkpoint_topic
from anonstream.runtime.worker import Worker
from anonstream.settings import Settings
from anonstream_load.bench import DP_BUDGET, DP_OUTPUT
from anonstream_load.harness import write_pipeline

ROOT = Path(__file__).resolve().parents[2]
SECRET = {"ANONSTREAM_SECRET": "unit-test-secret-0123456789abcdef"}


def _pipeline(tmp: Path, dp: bool = False):  # type: ignore[no-untyped-def]
    path = write_pipeline(
        ROOT / "pipelines" / "web_activity.yaml", tmp, source_topic="raw.t",
        output_topic="anon.t", changes={"dp_budget": DP_BUDGET} if dp else None,
        output_changes=DP_OUTPUT if dp else None,
    )  # fmt: skip
    return load_pipeline(path)


def test_the_worker_host_starts_no_kafka_service(tmp_path: Path) -> None:
    worker = Worker(Settings(web_enabled=True), [_pipeline(tmp_path)], load_secret(SECRET))
    worker.deadlines.pause()  # its start-up clock would end this process: nothing starts
    services = [type(s).__name__ for s in worker.app.on_init_dependencies()]
    assert "Web" in services  # /metrics and /health stay
    for kafka in ("Consumer", "Producer", "LeaderAssignor", "Conductor", "ReplyConsumer"):
        assert not any(kafka in name for name in services), (kafka, services)


def test_anonymize_adds_an_agent_on_the_raw_topic(tmp_path: Path) -> None:
    app = faust.App("shop", broker="kafka://127.0.0.1:1", store="memory://")
    pipeline = _pipeline(tmp_path)
    agent = anonymize(app, pipeline, load_secret(SECRET), take=100)
    assert isinstance(agent, FaustPipeline)
    assert list(agent.agent.channel.topics) == ["raw.t"]
    assert agent.checkpoints.get_topic_name() == checkpoint_topic("shop", "web_activity")
    assert set(agent.outputs) == {o.name for o in pipeline.outputs}


def test_anonymize_refuses_dp_outputs(tmp_path: Path) -> None:
    app = faust.App("shop", broker="kafka://127.0.0.1:1", store="memory://")
    with pytest.raises(ValueError, match="dp outputs need the worker"):
        anonymize(app, _pipeline(tmp_path, dp=True), load_secret(SECRET))
