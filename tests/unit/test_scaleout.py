"""Scale-out stages without a broker: when a release stage may take a raw partition as idle."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.runtime.scaleout import IngestStage, ReleaseStage
from anonstream.synthetic import DEFAULT_START_MS, EventGenerator, Workload

ROOT = Path(__file__).resolve().parents[2]
SECRET = load_secret({"ANONSTREAM_SECRET": "x" * 32})
IDLE_MS = 2_000
NOW = DEFAULT_START_MS + 3_600_000  # an hour after the first synthetic event
SOURCES = [("raw", 0), ("raw", 1)]


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def stages(ingest_clock: Clock, release_clock: Clock) -> tuple[IngestStage, ReleaseStage]:
    pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
    ingest = IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=ingest_clock), "partials", 1)
    factory = partial(
        PipelineEngine, pipeline, SECRET, clock_ms=release_clock, idle_close_ms=IDLE_MS
    )
    release = ReleaseStage(factory, pipeline, "partials", 1)
    release.sources = list(SOURCES)
    release.assign([("partials", 0)])
    ingest.assign(list(SOURCES))
    return ingest, release


def ingest_both_sources(ingest: IngestStage, events: list[bytes]) -> list[bytes]:
    """Half the events from each raw partition; the partials messages ingest sends."""
    pidx = np.arange(len(events), dtype=np.int64) % 2
    offs = np.arange(len(events), dtype=np.int64)
    step = ingest.process_batch(events, pidx, list(SOURCES), offs)
    return [value for _, _, _, value in step.forward]


def release(stage: ReleaseStage, values: list[bytes], first_offset: int = 0) -> list[str]:
    pidx = np.zeros(len(values), dtype=np.int64)
    offs = np.arange(first_offset, first_offset + len(values), dtype=np.int64)
    step = stage.process_batch(values, pidx, [("partials", 0)], offs)
    step.extend(stage.tick())
    return [r["kind"] for r in step.releases]


def test_a_release_stage_behind_the_ingest_does_not_take_busy_sources_as_idle() -> None:
    """The owner reported data just now; we read the report 3 s later, past the idle close.
    The sources are busy, so the open window must stay open."""
    ingest_clock, release_clock = Clock(NOW), Clock(NOW)
    ingest, stage = stages(ingest_clock, release_clock)
    events = list(EventGenerator(Workload(users=50, seed=1)).encoded_web_events(200))
    values = ingest_both_sources(ingest, events)
    release_clock.ms += 3_000
    assert release(stage, values) == []
    assert stage.engines[("partials", 0)].open_windows == 1


def test_sources_whose_owner_reports_no_data_go_idle_and_the_window_is_released() -> None:
    ingest_clock, release_clock = Clock(NOW), Clock(NOW)
    ingest, stage = stages(ingest_clock, release_clock)
    events = list(EventGenerator(Workload(users=50, seed=1)).encoded_web_events(200))
    values = ingest_both_sources(ingest, events)
    assert release(stage, values) == []
    # Heartbeats of an owner without new data, read as they come: idle after the close.
    ingest_clock.ms += IDLE_MS + 500
    release_clock.ms += IDLE_MS + 500
    beats = [value for _, _, _, value in ingest.tick().forward]
    assert "window_summary" in release(stage, beats, first_offset=len(values))
