"""Output contract, version 1: the records a partner or dashboard receives.

Every record has a deterministic `release_id` (pipeline, version, output, window, dims),
so a consumer can deduplicate re-sent releases after a worker restart, and an auditor can
tell two versions of one release apart. See docs/output-contract.md and
streams/anonstream/schemas/release-v1.json.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

SCHEMA_VERSION = 1
DP_SCHEMA_VERSION = 2  # records of dp outputs: schemas/release-v2.json
STAR = "*"  # dimension rolled up: "every value not released on its own at this level"


@lru_cache(maxsize=256)  # a window's bounds, once per window rather than per record
def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_id(
    kind: str, pipeline: str, version: int, output: str, start_ms: int, end_ms: int,
    dims: dict[str, str] | None = None,
) -> str:  # fmt: skip
    key = orjson.dumps(
        [kind, pipeline, version, output, start_ms, end_ms, sorted((dims or {}).items())]
    )
    return hashlib.sha256(key).hexdigest()[:32]


def _head(
    kind: str, pipeline: str, version: int, output: str, start_ms: int, end_ms: int
) -> dict[str, Any]:
    """The fields every record starts with, in the contract's order."""
    return {
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "pipeline": pipeline,
        "pipeline_version": version,
        "output": output,
        "window_start": rfc3339(start_ms),
        "window_end": rfc3339(end_ms),
    }


def aggregate_record(
    *, pipeline: str, version: int, output: str, start_ms: int, end_ms: int,
    dims: dict[str, str], metrics: dict[str, Any], k: int, level: int,
    noise: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        **_head("aggregate", pipeline, version, output, start_ms, end_ms),
        "dims": dims,
        "metrics": metrics,
        "k": k,
        "rollup_level": level,
        "noise": noise,
        "release_id": release_id("aggregate", pipeline, version, output, start_ms, end_ms, dims),
    }


def summary_record(
    *, pipeline: str, version: int, output: str, start_ms: int, end_ms: int,
    cells_released: int, cells_rolled_up: int, cells_suppressed: int,
    late_events: int, rejected_events: int, k: int, privacy: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    rec = {
        **_head("window_summary", pipeline, version, output, start_ms, end_ms),
        "cells_released": cells_released,
        "cells_rolled_up": cells_rolled_up,
        "cells_suppressed": cells_suppressed,
        "late_events": late_events,
        "rejected_events": rejected_events,
        "k": k,
        "release_id": release_id("window_summary", pipeline, version, output, start_ms, end_ms),
    }
    if privacy is not None:
        # dp mode (contract v2): exact counts of suppressed cells and of late or rejected
        # events are not differentially private, so they are not released.
        rec.update(
            schema_version=DP_SCHEMA_VERSION, cells_suppressed=None, late_events=None,
            rejected_events=None, privacy=privacy,
        )  # fmt: skip
    return rec
