"""Decode and validate raw messages against the input contract.

Errors are data: a bad message becomes a `Rejection` with a reason code and the offending
field name (never its value, which may be an identifier), so runtimes can count it and
route it to the dead-letter topic while the good events around it go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import repeat
from operator import getitem
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.cache import TIMESTAMP_PARTS, BoundedCache
from anonstream.core.contract import Contract, FieldSpec, FieldType

# Reason codes; stable, documented in docs/input-contract.md and used as metric labels.
NOT_JSON = "not_json"
NOT_UTF8 = "not_utf8"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
OVERSIZED = "oversized"
TOO_DEEP = "too_deep"
# Anything else that went wrong with one message: it is set aside, never retried in place.
INTERNAL_ERROR = "internal_error"
REASONS = (
    NOT_JSON,
    NOT_UTF8,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
    OVERSIZED,
    TOO_DEEP,
    INTERNAL_ERROR,
)

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 4
# The default of a pipeline's window.max_future_skew (see core/pipeline.py).
DEFAULT_MAX_FUTURE_MS = 2 * 60_000
# Event times, strings and integers alike, lie in [2000-01-01, 2100-01-01): before 2000
# is almost surely seconds or garbage, and inside the range every window bound (an event
# time give or take a window, at most a week) formats as a 4-digit-year RFC 3339 time.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    field: str | None = None

    def describe(self) -> str:
        return self.reason if self.field is None else f"{self.reason}:{self.field}"


@dataclass(frozen=True, slots=True)
class Decoded:
    event: dict[str, Any]
    ts_ms: int
    unknown_fields: int


def parse_ts(value: object) -> int | None:
    """RFC 3339 with an explicit offset, or integer epoch milliseconds, in
    [MIN_TS_MS, MAX_TS_MS); None if neither."""
    if type(value) is int:
        return value if MIN_TS_MS <= value < MAX_TS_MS else None
    if isinstance(value, str) and 20 <= len(value) <= 40:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            try:  # RFC 3339 allows lowercase t and z
                dt = datetime.fromisoformat(value.upper())
            except ValueError:
                return None
        offset = dt.utcoffset()
        if offset is None or value[10] not in "Tt ":
            return None
        # Naive arithmetic on timedeltas: converting "0001-01-01T00:00:00+01:00" to UTC
        # would overflow datetime. Exact: float seconds * 1000 can lose a ms.
        ms = (dt.replace(tzinfo=None) - _EPOCH - offset) // _ONE_MS
        return ms if MIN_TS_MS <= ms < MAX_TS_MS else None
    return None


# A plain date-time well inside the range, to read a rest (fraction and offset) against.
_MID = "2050-01-01T00:00:00"
_MID_MS = 2_524_608_000_000
_BAD = -(2**62)  # cached "not a plain head/rest": far outside any event time
_HEAD, _REST = slice(0, 19), slice(19, None)
# "YYYY-MM-DDTHH:MM:SS": the part of an RFC 3339 time whose meaning does not depend on
# what follows it, when it is plain ASCII digits with in-range fields.
_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def plain_heads_ms(heads: list[str]) -> npt.NDArray[np.int64]:
    """Epoch ms of each "YYYY-MM-DD[Tt ]HH:MM:SS" read as UTC, all at once; _BAD for any
    string of another shape, an impossible date or time or one out of range (the
    per-string parser's verdict: exactly what parse_ts(head + "Z") gives)."""
    n = len(heads)
    out = np.full(n, _BAD, dtype=np.int64)
    if not n:
        return out
    ok19 = np.fromiter(map(len, heads), dtype=np.int64, count=n) == 19
    blob = "".join(h if len(h) == 19 else "?" * 19 for h in heads).encode("utf-8")
    if len(blob) != 19 * n:  # non-ASCII somewhere: those go one by one
        ascii_ok = [h.isascii() for h in heads]
        ok19 &= np.array(ascii_ok, dtype=bool)
        blob = "".join(h if a and len(h) == 19 else "?" * 19
                       for h, a in zip(heads, ascii_ok, strict=True)).encode()  # fmt: skip
    a = np.frombuffer(blob, dtype=np.uint8).reshape(n, 19).astype(np.int64)
    d = a - 48
    digits = d[:, _DIGITS]
    ok = ok19 & ((digits >= 0) & (digits <= 9)).all(axis=1)
    ok &= (a[:, 4] == 45) & (a[:, 7] == 45) & (a[:, 13] == 58) & (a[:, 16] == 58)
    ok &= (a[:, 10] == 84) | (a[:, 10] == 116) | (a[:, 10] == 32)  # "T", "t", " "
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 5] * 10 + d[:, 6]
    day = d[:, 8] * 10 + d[:, 9]
    hour, minute, sec = d[:, 11] * 10 + d[:, 12], d[:, 14] * 10 + d[:, 15], d[:, 17] * 10 + d[:, 18]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= last_day)
    ok &= (hour < 24) & (minute < 60) & (sec < 60)
    # Days since 1970-01-01 of a proleptic Gregorian date (March-based year).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    ms = days * 86_400_000 + (hour * 3600 + minute * 60 + sec) * 1000
    ok &= (ms >= MIN_TS_MS) & (ms < MAX_TS_MS)
    out[ok] = ms[ok]
    return out


class TimestampCache:
    """`parse_ts` for batches of strings, through two small caches.

    Event times of one stream share their first 19 characters (date and time to the
    second) with many neighbours and their rest (fraction and offset) with many others.
    When the head is a plain date-time, the value is exactly head + rest: the head parsed
    with "Z", plus the rest's offset from 2050-01-01T00:00:00. Anything else, any value
    this would call 0 and any value out of [MIN_TS_MS, MAX_TS_MS) is left to `parse_ts`
    by the caller (which rejects the last).
    """

    def __init__(self, limit: int = TIMESTAMP_PARTS) -> None:
        self._heads: BoundedCache[str, int] = BoundedCache(limit)  # _BAD: not a plain date-time
        self._tails: BoundedCache[str, int] = BoundedCache(limit)  # _BAD: no fraction and offset

    def __call__(self, value: str) -> int:
        """Epoch ms of an RFC 3339 string, or 0 when the caller must ask `parse_ts`."""
        return int(self.many([value])[0])

    def many(self, values: list[str]) -> npt.NDArray[np.int64]:
        """Epoch ms of each string, 0 where `parse_ts` must decide: cache look-ups over
        the batch, and one numpy pass for the heads not seen before."""
        n = len(values)
        heads: list[str] = list(map(getitem, values, repeat(_HEAD)))
        rests: list[str] = list(map(getitem, values, repeat(_REST)))
        h: list[int | None] = list(map(self._heads.get, heads))
        t: list[int | None] = list(map(self._tails.get, rests))
        if None in h:
            missed = [j for j in range(n) if h[j] is None]
            for j, ms in zip(missed, self._new_heads([heads[j] for j in missed]), strict=True):
                h[j] = ms
        if None in t:
            for j in [j for j in range(n) if t[j] is None]:
                t[j] = self._tail(rests[j])
        ha, ta = np.array(h, dtype=np.int64), np.array(t, dtype=np.int64)
        lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
        out = ha + ta
        out[(ha == _BAD) | (ta == _BAD) | (lens < 20) | (lens > 40)] = 0
        out[(out < MIN_TS_MS) | (out >= MAX_TS_MS)] = 0
        return out

    def _new_heads(self, heads: list[str]) -> list[int]:
        ms = plain_heads_ms(heads).tolist()
        self._heads.make_room(len(heads))
        self._heads.update(zip(heads, ms, strict=True))
        return ms

    def _tail(self, tail: str) -> int:
        ms = parse_ts(_MID + tail)
        return self._tails.put(tail, _BAD if ms is None else ms - _MID_MS)


def _depth(value: object, limit: int) -> int:
    """Nesting depth, stopping early once past `limit` (junk can be very deep)."""
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return 0
    if limit <= 0:
        return 1
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _type_ok(spec: FieldSpec, value: object) -> bool:
    t = spec.type
    if t is FieldType.STRING:
        return isinstance(value, str)
    if t is FieldType.INT:
        return type(value) is int and value >= 0
    if t is FieldType.OBJECT:
        return isinstance(value, dict)
    if t is FieldType.TIMESTAMP:
        return type(value) is int or isinstance(value, str)  # the value is checked by parse_ts
    return True


class Decoder:
    """Bytes to a validated event dict of one contract."""

    def __init__(
        self,
        contract: Contract,
        *,
        clock_ms: Callable[[], int],
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    ) -> None:
        self.contract = contract
        self._clock_ms = clock_ms
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_future_ms = max_future_ms
        self._specs = {f.name: f for f in contract.fields}
        self._required = tuple(f.name for f in contract.fields if f.required)
        self._objects = {
            f.name: {c.name: c for c in f.children} for f in contract.fields if f.children
        }

    def now_ms(self) -> int:
        return self._clock_ms()

    def decode(self, raw: bytes) -> Decoded | Rejection:
        if len(raw) > self.max_bytes:
            return Rejection(OVERSIZED)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return Rejection(NOT_UTF8)
            # orjson refuses very deep documents with a recursion error of its own.
            if raw.count(b"[") + raw.count(b"{") > 4 * self.max_depth + 64:
                return Rejection(TOO_DEEP)
            return Rejection(NOT_JSON)
        if not isinstance(obj, dict):
            return Rejection(NOT_OBJECT)
        return self.validate(obj)

    def validate(self, obj: dict[str, Any]) -> Decoded | Rejection:
        for name in self._required:
            if obj.get(name) is None:
                return Rejection(MISSING_FIELD, name)
        specs = self._specs
        unknown = 0
        for name, value in obj.items():
            spec = specs.get(name)
            if spec is None:
                unknown += 1
                if (
                    isinstance(value, dict | list)
                    and _depth(value, self.max_depth) >= self.max_depth
                ):
                    return Rejection(TOO_DEEP, None)
                continue
            if value is None:
                continue
            if not _type_ok(spec, value):
                return Rejection(WRONG_TYPE, name)
            if spec.children:
                sub = self._objects[name]
                for cname, cval in value.items():
                    cspec = sub.get(cname)
                    if cspec is None:
                        unknown += 1
                        if isinstance(cval, dict | list):
                            return Rejection(TOO_DEEP, name)
                    elif cval is not None and not _type_ok(cspec, cval):
                        return Rejection(WRONG_TYPE, f"{name}.{cname}")
        ts_ms = parse_ts(obj["ts"])
        if ts_ms is None:
            return Rejection(BAD_TIMESTAMP, "ts")
        if ts_ms > self._clock_ms() + self.max_future_ms:
            return Rejection(FUTURE_TIMESTAMP, "ts")
        return Decoded(obj, ts_ms, unknown)
