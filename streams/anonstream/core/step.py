"""What a stage takes and gives: raw messages or a fetched batch in; releases, dead letters,
accounting and (scale-out) partials records out. Shared by the engine, the stage contract
(core/stage.py) and the runtimes, and free of any Kafka client.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from anonstream.core.release import Accounting


@dataclass(frozen=True, slots=True)
class Message:
    """One raw message as a runtime hands it over."""

    value: bytes
    partition: Hashable = 0
    offset: int = -1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message. `value` is the raw payload: sensitive, for the dead-letter topic."""

    value: bytes
    reason: str
    field: str | None
    partition: Hashable
    offset: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A fetch's messages of one input topic, as columns: the raw values, each one's
    partition as an index into `part_of`, and offsets."""

    values: list[bytes]
    pidx: npt.NDArray[np.int64]
    part_of: list[Hashable]
    offs: npt.NDArray[np.int64]

    @classmethod
    def of(cls, messages: Sequence[Message]) -> Batch:
        part_ids: dict[Hashable, int] = {}
        pidx = np.fromiter(
            (part_ids.setdefault(m.partition, len(part_ids)) for m in messages),
            dtype=np.int64, count=len(messages),
        )  # fmt: skip
        offs = np.fromiter((m.offset for m in messages), dtype=np.int64, count=len(messages))
        return cls([m.value for m in messages], pidx, list(part_ids), offs)


@dataclass
class StepResult:
    releases: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accounting: list[tuple[int, str, Accounting]] = field(default_factory=list)
    # Scale-out: (topic, partition, key, value) records for the partials topic.
    forward: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)

    def extend(self, other: StepResult) -> None:
        self.releases.extend(other.releases)
        self.dead_letters.extend(other.dead_letters)
        self.accounting.extend(other.accounting)
        self.forward.extend(other.forward)
