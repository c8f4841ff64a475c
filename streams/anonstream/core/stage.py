"""The stage contract: what a runtime drives, one pipeline on one input topic.

A stage reads ONE input topic. The batch loop (runtime/batch.py) only moves batches
between Kafka and its stages: it hands each stage the columns of a fetch from its topic,
ticks it, asks what offset is safe to commit for a partition and the checkpoint to commit
with it (core/checkpoint.py), and on a restart or a rebalance gives the checkpoint back.
Three classes play the role: the single-worker `PipelineEngine` (raw topic in, releases
out) and, in scale-out mode, the `IngestStage` (raw topic in, partials out) and the
`ReleaseStage` (partials in, releases out) of runtime/scaleout.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

from anonstream.core.checkpoint import Checkpoint
from anonstream.core.pipeline import Pipeline
from anonstream.core.step import Batch, StepResult


class Stage(Protocol):
    """One pipeline's work on one input topic; see the module's docstring."""

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def input_topic(self) -> str: ...

    @property
    def late_events(self) -> int:
        """Events counted late so far (0 where lateness is decided downstream)."""
        ...

    def process_batch(self, batch: Batch) -> StepResult:
        """A fetch's messages of this topic."""
        ...

    def tick(self) -> StepResult:
        """Called about once a second: releases what time (idle input) has closed."""
        ...

    def close_all(self) -> StepResult:
        """End of input (a backfill reached the end offsets): release every open window."""
        ...

    def set_sources(self, sources: Sequence[Hashable]) -> None:
        """Every partition of the pipeline's raw topic, whoever owns it (a scale-out
        release stage waits for each; the other stages need not know)."""
        ...

    def assign(self, partitions: list[Hashable]) -> None:
        """Input partitions now read by this stage (after their checkpoints are restored)."""
        ...

    def forget(self, partition: Hashable) -> None:
        """An input partition moved to another worker."""
        ...

    def busy(self, partition: Hashable) -> None:
        """Unread data waits in `partition`: it is not idle, whatever the clock says."""
        ...

    def silent(self, partition: Hashable, since_ms: int, until_ms: int) -> None:
        """Kafka showed `partition` with nothing unread and nothing new over this span."""
        ...

    def safe_offset(self, partition: Hashable) -> int | None:
        """The offset to commit: a restart reading from it rebuilds all open state."""
        ...

    def checkpoint(self, partition: Hashable) -> Checkpoint | None:
        """What to commit with that offset (None: nothing to keep)."""
        ...

    def restore(self, partition: Hashable, checkpoint: Checkpoint) -> None:
        """A committed checkpoint, before the partition is assigned and re-read."""
        ...
