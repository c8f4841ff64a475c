"""The vocabulary of a pipeline file: field actions and noise mechanisms, as enums.

One name for each concept, matched in one place: the parser (pipeline.py) reads these,
the policy (policy.py) and `explain` dispatch on them. Both enums are `StrEnum`s: a
member is equal to, hashes like and formats as its YAML spelling, so messages, explain
output and comparisons with plain strings read exactly as the file does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from anonstream.core.contract import Sensitivity


class Action(StrEnum):
    """What a pipeline does with one field of its input contract."""

    DROP = "drop"
    KEEP = "keep"
    PSEUDONYMIZE = "pseudonymize"
    GENERALIZE = "generalize"
    MEASURE = "measure"
    DEDUPE = "dedupe"
    WINDOW = "window"


class Mechanism(StrEnum):
    """The noise added to k-mode releases (dp mode chooses its own, see core/dpspec.py)."""

    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


ACTIONS = tuple(a.value for a in Action)
# The actions whose result can be a released dimension value.
DIMENSION_ACTIONS = frozenset({Action.KEEP, Action.GENERALIZE})

# Which actions each sensitivity class allows: an identifier is never kept, a
# quasi-identifier only generalized, and only metadata is deduplicated or windowed on.
ALLOWED: dict[Sensitivity, frozenset[Action]] = {
    Sensitivity.META: frozenset({Action.DEDUPE, Action.WINDOW, Action.DROP}),
    Sensitivity.IDENTIFIER: frozenset({Action.DROP, Action.PSEUDONYMIZE}),
    Sensitivity.QUASI: frozenset({Action.DROP, Action.GENERALIZE}),
    Sensitivity.ACCOUNT: frozenset({Action.DROP, Action.KEEP, Action.PSEUDONYMIZE}),
    Sensitivity.SAFE: frozenset({Action.DROP, Action.KEEP, Action.GENERALIZE, Action.MEASURE}),
}

OTHER = "(other)"  # released value of a kept field outside its allow-list


@dataclass(frozen=True, slots=True)
class FieldAction:
    field: str
    action: Action
    generalizer: str | None = None  # a name registered in core/generalizers.py
    ipv4_bits: int = 24
    ipv6_bits: int = 48
    edges: tuple[float, ...] = ()
    clamp: tuple[float, float] | None = None
    # measure: one person's total in one cell's sum is clipped to [-bound, bound]
    max_sum_per_unit: float | None = None
    # keep: the values released as they are; any other becomes OTHER
    values: tuple[str, ...] | None = None
