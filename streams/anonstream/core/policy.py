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

from anonstream.core.cache import KEPT_VALUES, cached
from anonstream.core.decode import Decoded, Rejection
from anonstream.core.generalize import (
    UserAgentGeneralizer,
    band,
    ip_prefix,
    referrer_domain,
    url_template,
)
from anonstream.core.keys import EventHasher, MasterSecret, Pseudonymizer
from anonstream.core.pipeline import OTHER, FieldAction, Pipeline
from anonstream.core.records import STAR
from anonstream.core.scrub import scrub_identifiers
from anonstream.core.unit import PrivacyUnit
from anonstream.core.windows import needs_earlier_key

NONE = "(none)"  # dimension value of an absent optional field
NO_PRIVACY_UNIT = "no_privacy_unit"
MAX_KEPT_LEN = 80
KEPT_INPUT_MAX = 1024  # a longer kept/text value is released as TOO_LONG, unscanned
TOO_LONG = "(too long)"


class PolicyRecord(NamedTuple):
    ts_ms: int
    unit: int  # 64-bit keyed pseudonym of the privacy unit
    event_hash: int  # 64-bit keyed hash of event_id
    dims: tuple[str, ...]
    measures: tuple[float, ...]  # NaN where absent, clamped later
    # The unit's pseudonym under the key of the period before ts, for an event that falls
    # in a window starting there (hopping windows; see windows.needs_earlier_key).
    earlier_unit: int | None = None


def scrub_kept(value: str) -> str:
    """Scrub first, then cut: cutting first could split an email and keep its local part.
    Values over KEPT_INPUT_MAX are no event type or service name; they become TOO_LONG
    before any scan, which bounds the scrubber's (linear) cost per value."""
    if len(value) > KEPT_INPUT_MAX:
        return TOO_LONG
    return scrub_identifiers(value)[:MAX_KEPT_LEN]


_keep = scrub_kept


def _dimension_fn(fa: FieldAction, ua: UserAgentGeneralizer) -> Callable[[object], str]:
    """A function from the raw field value to its released dimension value; a value that
    reads like the roll-up marker "*" is escaped so it can never pose as a roll-up."""
    fn = _generalizer_fn(fa, ua)

    def dimension(v: object) -> str:
        out = fn(v)
        return "(*)" if out == STAR else out

    return dimension


def allow_list(values: tuple[str, ...]) -> Callable[[object], str]:
    """A kept field with an allow-list: its own value if listed, else OTHER (free text or
    a look-alike never becomes a dimension value)."""
    allowed = frozenset(values)
    return lambda v: (v if v in allowed else OTHER) if isinstance(v, str) else NONE


def _generalizer_fn(fa: FieldAction, ua: UserAgentGeneralizer) -> Callable[[object], str]:
    if fa.action == "keep" and fa.values is not None:
        return allow_list(fa.values)
    if fa.action == "keep":
        keep = cached(_keep, KEPT_VALUES)
        return lambda v: keep(v) if isinstance(v, str) else NONE
    g = fa.generalizer
    if g == "ip_prefix":
        v4, v6 = fa.ipv4_bits, fa.ipv6_bits

        def ip(v: object) -> str:
            if not isinstance(v, str):
                return NONE
            return ip_prefix(v, v4, v6) or "<invalid>"

        return ip
    if g == "user_agent":
        return lambda v: ua(v) if isinstance(v, str) else NONE
    if g == "url":
        return lambda v: url_template(v) if isinstance(v, str) and v else NONE
    if g == "referrer_domain":
        return lambda v: referrer_domain(v) if isinstance(v, str) and v else NONE
    if g == "band":
        edges = fa.edges
        return lambda v: band(float(v), edges) if isinstance(v, int | float) else NONE
    if g == "text":
        text = cached(_keep, KEPT_VALUES)
        return lambda v: text(v) if isinstance(v, str) else NONE
    raise ValueError(f"no dimension function for {fa}")  # pipeline validation prevents this


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
