"""Scale-out's end of input (--stop-at-end): the end marks in the partials format."""

from __future__ import annotations

import struct
from functools import partial

import numpy as np
import orjson
import pytest

from anonstream.core.engine import PipelineEngine
from anonstream.core.pipeline import load_pipeline
from anonstream.core.step import Batch
from anonstream.runtime.scaleout import (
    IngestStage,
    Partial,
    PartialsRecordError,
    Progress,
    ReleaseStage,
    decode_partial,
    encode_partial,
)
from anonstream.synthetic import EventGenerator, Workload

_HEAD = struct.Struct("<4sHI")


def _header(raw: bytes) -> dict[str, object]:
    _, _, n = _HEAD.unpack_from(raw)
    head = orjson.loads(raw[_HEAD.size : _HEAD.size + n])
    assert isinstance(head, dict)
    return head


def test_an_end_mark_round_trips_and_a_record_without_one_has_none() -> None:
    marked = Partial([Progress("raw", 0, 5, 1, 2, end=True), Progress("raw", 1, 7, 1, 2)])
    back = decode_partial(encode_partial(marked))
    assert [x.end for x in back.progress] == [True, False]
    assert back.progress == marked.progress
    plain = encode_partial(Partial([Progress("raw", 0, 5, 1, 2)]))
    assert "ended" not in _header(plain)  # what a worker without end marks wrote
    assert not decode_partial(plain).progress[0].end


def test_an_end_mark_leaves_the_progress_entries_as_an_older_reader_checks_them() -> None:
    """The mark is a header key of its own: an older version 2 reader (which reads the
    keys it knows) finds progress entries of five fields, as before, and ignores it."""
    head = _header(encode_partial(Partial([Progress("raw", 3, 5, 1, 2, end=True)])))
    assert head["progress"] == [["raw", 3, 5, 1, 2]]
    assert head["ended"] == [0]


@pytest.mark.parametrize("ended", [[1], [-1], ["0"], 0])
def test_an_end_mark_for_progress_the_record_does_not_have_is_refused(ended: object) -> None:
    raw = encode_partial(Partial([Progress("raw", 0, 5, 1, 2, end=True)]))
    head = _header(raw)
    head["ended"] = ended
    body = orjson.dumps(head)
    forged = _HEAD.pack(b"ASPT", 2, len(body)) + body
    with pytest.raises(PartialsRecordError):
        decode_partial(forged)


def test_a_release_stage_ends_at_the_last_raw_partitions_mark_and_only_then() -> None:
    """Without an idle close, windows of a quiet input stay open until every raw partition
    has said its end; at the last mark they are released as single mode's end releases
    them (the same records as `close_all`), once; the stages are then done."""
    from tests.unit.test_scaleout import NOW, ROOT, SECRET, SOURCES, Clock, release

    def fresh() -> tuple[IngestStage, ReleaseStage, list[bytes]]:
        pipeline = load_pipeline(ROOT / "pipelines" / "web_activity.yaml")
        clock = Clock(NOW)
        ingest = IngestStage(PipelineEngine(pipeline, SECRET, clock_ms=clock), "partials", 1)
        rel = ReleaseStage(
            partial(PipelineEngine, pipeline, SECRET, clock_ms=clock), pipeline, "partials", 1
        )  # no idle close, as with --stop-at-end
        rel.sources = list(SOURCES)
        rel.assign([("partials", 0)])
        ingest.assign(list(SOURCES))
        gen = EventGenerator(Workload(users=30, seed=3))
        events = [orjson.dumps(ev) for ev in gen.web_events(300)]
        pidx = np.arange(len(events), dtype=np.int64) % 2
        step = ingest.process_batch(
            Batch(events, pidx, list(SOURCES), np.arange(len(events), dtype=np.int64))
        )
        return ingest, rel, [v for _, _, _, v in step.forward]

    ingest, rel, values = fresh()
    assert release(rel, values) == []  # nothing ends a window yet
    assert not ingest.done and not rel.done
    first = [v for _, _, _, v in ingest.end_of_input([SOURCES[0]]).forward]
    assert ingest.end_of_input([SOURCES[0]]).forward == []  # said once (ticks repeat it)
    assert release(rel, first, len(values)) == []
    assert not ingest.done and not rel.done
    last = [v for _, _, _, v in ingest.end_of_input([SOURCES[1]]).forward]
    kinds = release(rel, last, len(values) + 1)
    assert "aggregate" in kinds and "window_summary" in kinds
    assert ingest.done and rel.done
    beat = [v for _, _, _, v in ingest.tick().forward]
    assert all(x.end for v in beat for x in decode_partial(v).progress)
    assert release(rel, beat, len(values) + 2) == []  # released once

    # The same input closed by single mode's end: the same records.
    _, rel2, values2 = fresh()
    release(rel2, values2)
    expected = [r for e in rel2.engines.values() for r in e.close_all().releases]
    assert [r["kind"] for r in expected] == kinds
