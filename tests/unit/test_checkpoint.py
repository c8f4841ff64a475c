"""Checkpoints in offset metadata: the round-trip, the format earlier workers wrote and
read, and what is not a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from anonstream.core.checkpoint import (
    Checkpoint,
    CheckpointError,
    decode_checkpoints,
    encode_checkpoints,
)
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.core.stage import Stage
from anonstream.core.step import Batch
from anonstream.core.windows import NEG_INF
from anonstream.runtime.scaleout import IngestStage, ReleaseStage

ROOT = Path(__file__).resolve().parents[2]
SECRET = load_secret({"ANONSTREAM_SECRET": "c" * 32})

# Offset metadata exactly as the worker before the Checkpoint dataclass wrote it
# (orjson.dumps({pipeline: engine.checkpoint(tp)}) with a dict per engine, {} for ingest).
OLD = (
    '{"web_activity":{"closed_until":1700000400000,"next":1234,"late":3,"rejected":2},'
    '"service_usage":{}}'
)


def test_round_trip() -> None:
    cps = {"a": Checkpoint(1_700_000_000_000, 17, 2, 5), "b": Checkpoint()}
    assert decode_checkpoints(encode_checkpoints(cps)) == cps


def test_reads_the_format_earlier_workers_wrote() -> None:
    got = decode_checkpoints(OLD)
    assert got == {"web_activity": Checkpoint(1_700_000_400_000, 1234, 3, 2)}  # {}: none


def test_writes_the_format_earlier_workers_read() -> None:
    """The earlier reader: `orjson.loads(meta).get(name)`, restored when truthy, each key
    read with `.get` and a default."""
    text = encode_checkpoints({"web_activity": Checkpoint(5, 6, 7, 8), "service_usage": None})
    doc = orjson.loads(text)
    assert doc == {
        "web_activity": {"closed_until": 5, "next": 6, "late": 7, "rejected": 8},
        "service_usage": {},
    }
    assert not doc["service_usage"]  # an ingest stage: the earlier reader restores nothing


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored() -> None:
    got = decode_checkpoints('{"p":{"next":4,"future_field":1}}')
    assert got == {"p": Checkpoint(closed_until=NEG_INF, next=4)}


@pytest.mark.parametrize("meta", [None, "", "not json", "[1,2]", "3"])
def test_metadata_that_is_no_checkpoint(meta: str | None) -> None:
    assert decode_checkpoints(meta) == {}


@pytest.mark.parametrize("meta", ['{"p":[1]}', '{"p":{"next":"x"}}', '{"p":{"late":null}}'])
def test_a_damaged_checkpoint_is_an_error_not_a_fresh_start(meta: str) -> None:
    with pytest.raises(CheckpointError):
        decode_checkpoints(meta)


def test_engine_checkpoint_survives_the_codec_and_restores() -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    engine = PipelineEngine(pipeline, SECRET)
    key = (pipeline.source_topic, 0)
    engine.assign([key])
    engine.process_batch(
        Batch([b"not json"], np.zeros(1, np.int64), [key], np.array([41], np.int64))
    )
    cp = engine.checkpoint(key)
    assert cp.next == 42 and cp.rejected == 1
    again = PipelineEngine(pipeline, SECRET)
    restored = decode_checkpoints(encode_checkpoints({pipeline.name: cp}))[pipeline.name]
    again.restore(key, restored)
    assert again.checkpoint(key) == Checkpoint(cp.closed_until, -1, 0, 1)
    assert again.replayed(key, 41) and not again.replayed(key, 42)


def test_every_stage_kind_is_a_stage() -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    stages: list[Stage] = [
        PipelineEngine(pipeline, SECRET),
        IngestStage(PipelineEngine(pipeline, SECRET), "partials", 2),
        ReleaseStage(lambda: PipelineEngine(pipeline, SECRET), pipeline, "partials", 2),
    ]
    assert [s.pipeline.name for s in stages] == [pipeline.name] * 3


def test_counts_made_elsewhere_go_to_the_partitions_checkpoint() -> None:
    """Scale-out's release stage counts rejections and late events its ingest found."""
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    engine = PipelineEngine(pipeline, SECRET)
    engine.count_rejected("p", 3)
    engine.count_late("p", 2)
    assert engine.checkpoint("p") == Checkpoint(engine.closed_until, -1, 2, 3)
    assert engine.late_events == 2
    assert engine.take_rejected() == 3 and engine.checkpoint("p").rejected == 0
