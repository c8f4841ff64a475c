"""The policy step: the privacy boundary between raw events and everything after them.

A decoded event goes in; out comes a `PolicyRecord` holding only the window time, a keyed
pseudonym of the privacy unit, a keyed hash of the event id, generalized dimension values
and clamped-later numeric measures. No raw value crosses this line: kept strings are
scrubbed, generalizers drop what identifies, and everything undeclared is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from anonstream.core.decode import Decoded, Rejection
from anonstream.core.generalize import UserAgentGeneralizer
from anonstream.core.generalizers import (  # re-exported: the kept-value rules' old home
    KEPT_INPUT_MAX,
    MAX_KEPT_LEN,
    NONE,
    TOO_LONG,
    allow_list,
    dimension_maker,
    scrub_kept,
)
from anonstream.core.keys import EventHasher, MasterSecret, Pseudonymizer
from anonstream.core.pipeline import FieldAction, Pipeline
from anonstream.core.records import STAR
from anonstream.core.unit import PrivacyUnit
from anonstream.core.windows import needs_earlier_key

__all__ = [
    "KEPT_INPUT_MAX", "MAX_KEPT_LEN", "NONE", "NO_PRIVACY_UNIT", "TOO_LONG", "Policy",
    "PolicyRecord", "allow_list", "scrub_kept",
]  # fmt: skip

NO_PRIVACY_UNIT = "no_privacy_unit"


class PolicyRecord(NamedTuple):
    ts_ms: int
    unit: int  # 64-bit keyed pseudonym of the privacy unit
    event_hash: int  # 64-bit keyed hash of event_id
    dims: tuple[str, ...]
    measures: tuple[float, ...]  # NaN where absent, clamped later
    # The unit's pseudonym under the key of the period before ts, for an event that falls
    # in a window starting there (hopping windows; see windows.needs_earlier_key).
    earlier_unit: int | None = None


def _dimension_fn(fa: FieldAction, ua: UserAgentGeneralizer) -> Callable[[object], str]:
    """A function from the raw field value to its released dimension value; a value that
    reads like the roll-up marker "*" is escaped so it can never pose as a roll-up."""
    fn = dimension_maker(fa).function(fa, ua)

    def dimension(v: object) -> str:
        out = fn(v)
        return "(*)" if out == STAR else out

    return dimension


class Policy:
    """Applies one pipeline's field actions to decoded events."""

    def __init__(self, pipeline: Pipeline, secret: MasterSecret) -> None:
        self.pipeline = pipeline
        self.pseudonyms = Pseudonymizer(secret, pipeline.name, pipeline.rotation_ms)
        self.event_hash = EventHasher(secret, pipeline.name)
        ua = UserAgentGeneralizer()
        self.unit = PrivacyUnit(pipeline.privacy_unit, self.pseudonyms)
        self._unit_fields = pipeline.privacy_unit
        self.dim_functions = tuple(
            (name, _dimension_fn(pipeline.fields[name], ua)) for name in pipeline.dimensions
        )
        self._dims = self.dim_functions
        self._measures = pipeline.measures

    def apply(self, d: Decoded) -> PolicyRecord | Rejection:
        ev = d.event
        ts = d.ts_ms
        unit = self.unit.of_event(ev, ts)
        if unit is None:
            return Rejection(NO_PRIVACY_UNIT, "/".join(self._unit_fields))
        earlier = None
        rotation = self.pseudonyms.rotation_ms
        if needs_earlier_key(self.pipeline.window, rotation, np.array([ts], dtype=np.int64))[0]:
            earlier = self.unit.of_event(ev, ts - rotation)
        dims = tuple(fn(ev.get(name)) for name, fn in self._dims)
        nan = float("nan")
        measures = tuple(float(v) if (v := ev.get(m)) is not None else nan for m in self._measures)
        return PolicyRecord(ts, unit, self.event_hash(ev["event_id"]), dims, measures, earlier)
