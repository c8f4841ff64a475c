"""The privacy unit: which person an event belongs to, as a keyed pseudonym.

The one place that decides it, for both paths (policy.py per event, columns.py per batch):

- the unit fields are tried in the pipeline's order and the first present one wins;
- a value is present if it is a string with a non-blank character: absent, null, empty
  and whitespace-only values are no person (the next field decides, or the event has no
  unit and is rejected);
- an email (a unit field whose name ends in "email") is stripped and lower-cased first:
  emails are case-insensitive in practice, one person, one pseudonym. Nothing else is
  normalized: other disguises of an email (zero-width characters, accents, percent
  escapes) are other strings and so other units;
- the pseudonym is the keyed hash of the normalized value under the key of the event's
  period (core/keys.py), cached here, once, by raw value per (period, field).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import compress, repeat
from operator import and_, is_
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from anonstream.core.cache import PSEUDONYMS_PER_PERIOD, UNIT_PERIODS, BoundedCache
from anonstream.core.keys import Pseudonymizer


def is_email_field(name: str) -> bool:
    return name.endswith("email")


def present(value: object) -> TypeGuard[str]:
    """A value that names a person: a string with a non-blank character."""
    return isinstance(value, str) and bool(value) and not value.isspace()


def normalize(name: str, value: str) -> str:
    """The value that is pseudonymized for a present `value` of unit field `name`."""
    return value.strip().lower() if is_email_field(name) else value


def describe_unit(fields: tuple[str, ...]) -> str:
    """The rule above in a sentence, for `anonstream explain`."""
    return f"first present of {', '.join(fields)}, pseudonymized"


class PrivacyUnit:
    """The privacy-unit choice of one pipeline, with its one pseudonym cache."""

    def __init__(self, fields: tuple[str, ...], pseudonyms: Pseudonymizer) -> None:
        self.fields = fields
        self.pseudonyms = pseudonyms
        self.rotation_ms = pseudonyms.rotation_ms
        # (period, field) -> raw value -> pseudonym; blank values never enter.
        self._caches: BoundedCache[tuple[int, str], BoundedCache[str, int]] = BoundedCache(
            UNIT_PERIODS
        )

    def cache(self, period: int, name: str) -> BoundedCache[str, int]:
        cache = self._caches.get((period, name))
        if cache is None:
            cache = self._caches.put((period, name), BoundedCache(PSEUDONYMS_PER_PERIOD))
        return cache

    def _fill(self, name: str, raws: set[Any], period: int) -> None:
        """Pseudonyms of the distinct `raws` into the cache (room already made); values
        that are not present are left out, so a look-up of them stays None."""
        keep = [r for r in raws if present(r)]
        norm = [normalize(name, r) for r in keep]
        units = self.pseudonyms.many(name, norm, period)
        self.cache(period, name).update(zip(keep, units, strict=True))

    def pseudonym(self, name: str, raw: object, ts_ms: int) -> int | None:
        """The pseudonym of one raw value of unit field `name`; None if not present."""
        if not present(raw):
            return None
        period = ts_ms // self.rotation_ms
        cache = self.cache(period, name)
        u = cache.get(raw)
        if u is None:
            cache.make_room()
            self._fill(name, {raw}, period)
            u = cache[raw]
        return u

    # -- per event ---------------------------------------------------------------------
    def of_event(self, ev: Mapping[str, Any], ts_ms: int) -> int | None:
        """The unit of one decoded event: its first present unit field's pseudonym under
        the key of the period of `ts_ms`; None if no unit field is present."""
        for name in self.fields:
            v = ev.get(name)
            if present(v):
                return self.pseudonym(name, v, ts_ms)
        return None

    # -- batched -----------------------------------------------------------------------
    def of_columns(
        self,
        column: Callable[[str], list[Any]],
        ts: npt.NDArray[np.int64],
        one_period: bool = True,
    ) -> list[int | None]:
        """`of_event` for a batch: `column(name)` gives the raw values of a unit field for
        every event (asked only while some event has no unit yet), `ts` their times. A
        batch within one key period (the usual case) is looked up column-wise in C, only
        the distinct misses are hashed; `one_period=False` forces the per-event look-up."""
        n = len(ts)
        if not n:
            return []
        periods = ts // self.rotation_ms
        one_period = one_period and int(periods.min()) == int(periods.max())
        unit_list: list[int | None] = [None] * n
        for i, name in enumerate(self.fields):
            col = column(name)
            if one_period:
                got = self._one_period(name, col, int(periods[0]), None if i == 0 else unit_list)
            else:
                got = [None] * n
                for j in range(n) if i == 0 else [j for j in range(n) if unit_list[j] is None]:
                    got[j] = self.pseudonym(name, col[j], int(ts[j]))
            if i == 0:
                unit_list = got
            else:
                unit_list = [g if u is None else u for u, g in zip(unit_list, got, strict=True)]
            if None not in unit_list:
                break
        return unit_list

    def _one_period(
        self, name: str, col: list[Any], period: int, decided: list[int | None] | None
    ) -> list[int | None]:
        cache = self.cache(period, name)
        # Room for every value before the look-ups: the second pass must find every miss.
        cache.make_room(len(col))
        got: list[int | None] = list(map(cache.get, col))
        if None in got:
            # Distinct values not cached and not already decided by an earlier unit field,
            # picked out in C; values that are not present stay None.
            need: Iterator[bool] = map(is_, got, repeat(None))
            if decided is not None:
                need = map(and_, need, map(is_, decided, repeat(None)))
            todo = set(compress(col, need))
            todo.discard(None)
            todo.discard("")
            if todo:
                self._fill(name, todo, period)
                got = list(map(cache.get, col))
        return got
