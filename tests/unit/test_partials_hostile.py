"""Hostile or corrupt scale-out partials records: a clear, content-free error from the
decoder, and a release stage that skips and counts such a record instead of failing on it
restart after restart (which would stop every release of its partition)."""

from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import MasterSecret
from anonstream.core.pipeline import load_pipeline
from anonstream.core.step import Batch
from anonstream.runtime.scaleout import (
    _HEAD,
    _MAGIC,
    Partial,
    PartialsRecordError,
    PartialsVersionError,
    Progress,
    ReleaseStage,
    WindowPartial,
    decode_partial,
    encode_partial,
)

IDENT = "jane.doe@example.com"
START = 1_700_006_400_000


def _record(head: dict | bytes, payload: bytes = b"", version: int = 2) -> bytes:
    h = head if isinstance(head, bytes) else orjson.dumps(head)
    return _HEAD.pack(_MAGIC, version, len(h)) + h + payload


def _window(**over: object) -> dict:
    w = {"start": START, "cells": 0, "rows": 0, "m": 0, "named": [], "names": []}
    return {**w, **over}


def _good(m: int = 1) -> bytes:
    wp = WindowPartial(
        START, np.array([5], np.uint64), {5: ("a",)}, np.array([1], np.int64),
        np.array([7], np.uint64), np.array([9], np.uint64), np.zeros((1, m)), 1, 1, 0, 0,
    )  # fmt: skip
    return encode_partial(Partial([Progress("raw", 0, START, 1, 2)], 0, [wp]))


HOSTILE = {
    "truncated": _good()[:-3],
    "short": _good()[:12],
    "no magic": b"XXXX" + _good()[4:],
    "header not an object": _record([1, 2]),
    "header not JSON": _HEAD.pack(_MAGIC, 2, 3) + b"{x}",
    "header length past the end": _HEAD.pack(_MAGIC, 2, 10**6) + b"{}",
    "huge cell count": _record({"windows": [_window(cells=10**12)]}),
    "cell count past 64 bits": _record(b'{"windows":[{"start":0,"cells":1' + b"0" * 30 + b"}]}"),
    "negative cell count": _record({"windows": [_window(cells=-1)]}, b"\0" * 16),
    "negative measures": _record({"windows": [_window(m=-3)]}),
    "missing count": _record({"windows": [{"start": START}]}),
    "name index past the cells": _record({"windows": [_window(named=[3], names=[["x"]])]}),
    "a name that is a string": _record(
        {"windows": [_window(cells=1, named=[0], names=[IDENT])]},
        np.array([5], "<u8").tobytes() + np.array([0], "<i8").tobytes(),
    ),
    "rows per cell not adding up": _record(
        {"windows": [_window(cells=1, rows=1, named=[0], names=[[IDENT]])]},
        np.array([5], "<u8").tobytes() + np.array([99], "<i8").tobytes() + b"\0" * 16,
    ),
    "huge rejected count": _record(b'{"rejected": 100000000000000000000}'),
    "window start out of range": _record({"windows": [_window(start=2**63 - 1)]}),
    "progress of the wrong shape": _record({"progress": [["t"]]}),
    "progress partition not a number": _record({"progress": [["t", IDENT, 1, 2, 3]]}),
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_record_is_a_clear_error_without_its_content(raw: bytes) -> None:
    with pytest.raises(PartialsRecordError) as err:
        decode_partial(raw)
    assert IDENT not in str(err.value) and "jane" not in str(err.value)


def test_a_newer_version_is_still_a_version_error() -> None:
    with pytest.raises(PartialsVersionError, match="version 3"):
        decode_partial(_record({}, version=3))


def _stage() -> tuple[ReleaseStage, object]:
    pipeline = load_pipeline("pipelines/web_activity.yaml")
    secret = MasterSecret(b"k" * 32, "test")
    stage = ReleaseStage(
        lambda: PipelineEngine(pipeline, secret, clock_ms=lambda: START), pipeline, "p", 1
    )
    part = ("p", 0)
    stage.set_sources([("raw", 0)])
    stage.assign([part])
    return stage, part


def test_the_release_stage_skips_and_counts_malformed_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage, part = _stage()
    pipeline = stage.pipeline
    bad = [*HOSTILE.values(), _good(m=len(pipeline.measures) + 1), b'{"v": 1, "rows": 3}']
    off_grid = orjson.loads(orjson.dumps(_window()))
    off_grid["start"] = START + 1
    bad.append(_record({"windows": [off_grid]}))
    offs = np.arange(len(bad), dtype=np.int64)
    with caplog.at_level(logging.WARNING):
        stage.process_batch(Batch(bad, np.zeros(len(bad), np.int64), [part], offs))
    engine = stage.engines[part]
    assert engine.counters["partials_rejected"] == len(bad)
    assert engine.windows == {}
    assert IDENT not in caplog.text and "skipped a partials record" in caplog.text
    # The partition goes on: a good record after them is read.
    good = _good(m=len(pipeline.measures))
    stage.process_batch(
        Batch([good], np.zeros(1, np.int64), [part], np.array([len(bad)], np.int64))
    )
    assert START in engine.windows
    assert engine.safe_offset(part) is not None
