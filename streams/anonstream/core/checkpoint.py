"""Checkpoints: what a restart needs of one partition besides its committed offset.

The checkpoint travels in the metadata of a committed offset, as JSON: one object per
partition, keyed by pipeline name, each `{"closed_until", "next", "late", "rejected"}`.
The format is today's (and that of every earlier release): a worker of this version
restores what an older one committed and the other way round. Missing keys take their
defaults, unknown keys are ignored, and metadata that is not such JSON is no checkpoint
(the partition restarts from its committed offset with nothing to skip), as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from anonstream.core.windows import NEG_INF


class CheckpointError(ValueError):
    """Offset metadata that holds a checkpoint of the wrong shape (not written by us)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a restart needs of one partition besides its committed offset.

    `closed_until`: every window ending at or before it is released (replayed events of
    those windows are neither released again nor aggregated); `next`: the first offset not
    processed yet (messages before it are re-read to rebuild open windows, but counted and
    dead-lettered once only); `late`, `rejected`: this partition's share of the counters
    pending for the next window summary."""

    closed_until: int = NEG_INF
    next: int = -1
    late: int = 0
    rejected: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "closed_until": self.closed_until,
            "next": self.next,
            "late": self.late,
            "rejected": self.rejected,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Checkpoint:
        return cls(
            closed_until=_field(doc, "closed_until", NEG_INF),
            next=_field(doc, "next", -1),
            late=_field(doc, "late", 0),
            rejected=_field(doc, "rejected", 0),
        )


_INT64 = 2**63


def _field(doc: Mapping[str, Any], name: str, default: int) -> int:
    """One integer field; the error names the field, never its value (which, in metadata
    not written by us, could be anything)."""
    try:
        value = int(doc.get(name, default))
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"the checkpoint field {name!r} is not an integer") from None
    if not -_INT64 <= value < _INT64:
        raise CheckpointError(f"the checkpoint field {name!r} is out of range")
    return value


def encode_checkpoints(checkpoints: Mapping[str, Checkpoint | None]) -> str:
    """One partition's offset metadata: each stage's checkpoint under its pipeline's name
    (a stage with nothing to keep writes `{}`, which readers take as no checkpoint)."""
    return orjson.dumps(
        {name: ({} if c is None else c.to_json()) for name, c in checkpoints.items()}
    ).decode()


def decode_checkpoints(metadata: str | bytes | None) -> dict[str, Checkpoint]:
    """The checkpoints in one partition's offset metadata, by pipeline name. Metadata that
    is empty or not a JSON object holds none (a partition committed by another tool);
    an entry of the wrong shape is an error, never silently a fresh start."""
    if not metadata:
        return {}
    try:
        doc = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out = {}
    for name, entry in doc.items():
        if not entry:
            continue  # `{}`: a stateless stage
        if not isinstance(entry, dict):
            raise CheckpointError(f"the checkpoint of pipeline {name!r} is not an object")
        out[name] = Checkpoint.from_json(entry)
    return out
