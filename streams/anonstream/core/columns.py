"""Column-wise decode, validation and policy for a whole batch: the hot path.

Per-event Python costs more than reading the event from Kafka, so a batch is handled one
field at a time: pull a field out of every event with C-level `map`, check its types as a
set, and generalize through dict caches (values repeat: user agents, pages, pseudonyms).
Anything unusual in an event (bad JSON, a wrong type, an unknown field, a missing unit)
sends that event alone down the per-event path of decode.py and policy.py, which is the
reference: both paths give the same result for every input (property-tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.core.contract import FieldType
from anonstream.core.decode import MIN_TS_MS, Decoder, parse_ts
from anonstream.core.policy import NONE, Policy, PolicyRecord

_NoneType = type(None)
_TYPES: dict[FieldType, type] = {
    FieldType.STRING: str,
    FieldType.INT: int,
    FieldType.OBJECT: dict,
}


def _ts_or_zero(value: object) -> int:
    if type(value) is int and value >= MIN_TS_MS:
        return value
    return parse_ts(value) or 0


@dataclass
class Columns:
    """Policy output of the good events of a batch, one array or list per column."""

    index: npt.NDArray[np.int64]  # position of each event in the batch
    ts: npt.NDArray[np.int64]
    unit: npt.NDArray[np.uint64]
    event: npt.NDArray[np.uint64]
    dims: list[tuple[str, ...]]
    measures: npt.NDArray[np.float64]
    unknown_fields: int = 0

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def from_records(
        index: list[int], records: list[PolicyRecord], n_measures: int, unknown: int = 0
    ) -> Columns:
        n = len(records)
        return Columns(
            np.array(index, dtype=np.int64),
            np.fromiter((r.ts_ms for r in records), dtype=np.int64, count=n),
            np.fromiter((r.unit for r in records), dtype=np.uint64, count=n),
            np.fromiter((r.event_hash for r in records), dtype=np.uint64, count=n),
            [r.dims for r in records],
            np.array([r.measures for r in records], dtype=np.float64).reshape(n, n_measures),
            unknown,
        )

    @staticmethod
    def concat(a: Columns, b: Columns) -> Columns:
        if not len(b):
            return a
        if not len(a):
            return b
        return Columns(
            np.concatenate([a.index, b.index]),
            np.concatenate([a.ts, b.ts]),
            np.concatenate([a.unit, b.unit]),
            np.concatenate([a.event, b.event]),
            a.dims + b.dims,
            np.concatenate([a.measures, b.measures]),
            a.unknown_fields + b.unknown_fields,
        )


class ColumnPolicy:
    """The fast path for one pipeline; shares its caches and keys with `policy`."""

    def __init__(self, decoder: Decoder, policy: Policy) -> None:
        self.decoder = decoder
        self.policy = policy
        contract = decoder.contract
        self._known = frozenset(contract.names)
        self._checks = []  # (name, allowed types, required, non-negative int, nested)
        for f in contract.fields:
            if f.type is FieldType.TIMESTAMP:
                continue
            allowed = frozenset({_TYPES[f.type], _NoneType})
            self._checks.append((f.name, allowed, f.required, f.type is FieldType.INT,
                                 bool(f.children)))  # fmt: skip
        self._nonneg = tuple(c[0] for c in self._checks if c[3])
        self._shape_ok: dict[tuple[tuple[str, ...], tuple[type, ...]], bool] = {}
        p = policy.pipeline
        self._unit_fields = p.privacy_unit
        self._dim_names = p.dimensions
        self._dim_fns = dict(policy.dim_functions)
        self._dim_cache: dict[str, dict[Any, str]] = {n: {None: NONE} for n in p.dimensions}
        self._measures = p.measures
        self._unit_cache: dict[tuple[int, str], dict[str, int]] = {}

    def run(self, values: list[bytes]) -> tuple[Columns, list[int]]:
        """Columns of the events that pass every check, and the indices of the others
        (which the caller sends down the per-event path)."""
        n = len(values)
        empty = Columns.from_records([], [], len(self._measures))
        if not n:
            return empty, []
        flagged: set[int] = set()
        if max(map(len, values)) > self.decoder.max_bytes:
            flagged.update(i for i, v in enumerate(values) if len(v) > self.decoder.max_bytes)
        objs: list[Any]
        try:
            objs = list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            objs = []
            for i, v in enumerate(values):
                try:
                    objs.append(orjson.loads(v))
                except orjson.JSONDecodeError:
                    objs.append(None)
                    flagged.add(i)
        if set(map(type, objs)) != {dict}:
            flagged.update(i for i, o in enumerate(objs) if type(o) is not dict)
        if flagged:
            keep = [i for i in range(n) if i not in flagged]
            objs = [objs[i] for i in keep]
        else:
            keep = list(range(n))
        if not objs:
            return empty, sorted(flagged)
        bad = self._check(objs)
        if bad:
            flagged.update(keep[j] for j in bad)
            good = [j for j in range(len(objs)) if j not in bad]
            objs = [objs[j] for j in good]
            keep = [keep[j] for j in good]
        cols, bad2 = self._policy(objs)
        if bad2:
            flagged.update(keep[j] for j in bad2)
            good_list = [j for j in range(len(objs)) if j not in bad2]
            sel = np.array(good_list, dtype=np.int64)
            keep = [keep[j] for j in good_list]
            cols = Columns(
                np.empty(0, dtype=np.int64), cols.ts[sel], cols.unit[sel], cols.event[sel],
                [cols.dims[j] for j in good_list], cols.measures[sel],
            )  # fmt: skip
        cols.index = np.array(keep, dtype=np.int64)
        return cols, sorted(flagged)

    def _check(self, objs: list[dict[str, Any]]) -> set[int]:
        """Positions of events that need the per-event path for a precise verdict.

        Events of one producer share a shape (which fields, of which types), so the verdict
        is cached per shape: one tuple of keys and one of value types per event instead of
        a pass per field. Only the sign of integers needs the values themselves.
        """
        keys = list(map(tuple, objs))
        types = [tuple(map(type, vs)) for vs in map(dict.values, objs)]
        verdicts = self._shape_ok
        ok = list(map(verdicts.get, zip(keys, types, strict=True)))
        bad: set[int] = set()
        if None in ok:
            for j, v in enumerate(ok):
                if v is None:
                    shape = (keys[j], types[j])
                    if len(verdicts) > 10_000:
                        verdicts.clear()
                    v = verdicts[shape] = self._shape_verdict(*shape)
                    ok[j] = v
        if False in ok:
            bad.update(j for j, v in enumerate(ok) if not v)
        for name in self._nonneg:
            col = list(map(dict.get, objs, repeat(name)))
            ints = [v for v in col if type(v) is int]
            if ints and min(ints) < 0:
                bad.update(j for j, v in enumerate(col) if type(v) is int and v < 0)
        return bad

    def _shape_verdict(self, keys: tuple[str, ...], types: tuple[type, ...]) -> bool:
        present = dict(zip(keys, types, strict=True))
        for name, allowed, required, _nonneg, nested in self._checks:
            t = present.get(name, _NoneType)
            if t not in allowed or (required and t is _NoneType):
                return False
            if nested and t is not _NoneType:
                return False  # nested objects are rare: checked per event
        ts = present.get("ts", _NoneType)
        return set(keys) <= self._known and ts in (int, str)

    def _cache_for(self, period: int, name: str) -> dict[str, int]:
        cache = self._unit_cache.get((period, name))
        if cache is None:
            if len(self._unit_cache) > 16:  # only a few periods are ever in flight
                self._unit_cache.clear()
            cache = self._unit_cache[(period, name)] = {}
        return cache

    def _pseudonym(self, name: str, raw: str, ts_ms: int) -> int | None:
        pseudonyms = self.policy.pseudonyms
        cache = self._cache_for(ts_ms // pseudonyms.rotation_ms, name)
        u = cache.get(raw)
        if u is None:
            if raw.isspace():
                return None  # blank is absent: the next unit field decides
            # One person, one pseudonym: emails are case-insensitive in practice.
            norm = raw.strip().lower() if name.endswith("email") else raw
            u = pseudonyms.pseudonym(name, norm, ts_ms)
            if len(cache) > 500_000:
                cache.clear()
            cache[raw] = u
        return u

    def _policy(self, objs: list[dict[str, Any]]) -> tuple[Columns, set[int]]:
        n = len(objs)
        bad: set[int] = set()
        # Event time: ints are epoch ms, strings RFC 3339; the rest is the slow path's job.
        ts_col = list(map(dict.get, objs, repeat("ts")))
        if set(map(type, ts_col)) == {int}:
            ts = np.array(ts_col, dtype=np.int64)
            early = ts < MIN_TS_MS
            if early.any():
                bad.update(np.flatnonzero(early).tolist())
        else:
            ts_list = list(map(_ts_or_zero, ts_col))
            ts = np.array(ts_list, dtype=np.int64)
            bad.update(np.flatnonzero(ts == 0).tolist())
        future = ts > self.decoder.now_ms() + self.decoder.max_future_ms
        if future.any():
            bad.update(np.flatnonzero(future).tolist())
        # Privacy unit: the first non-empty field, keyed pseudonym through a per-period
        # cache; a batch within one key period (the usual case) needs no per-event period.
        rotation = self.policy.pseudonyms.rotation_ms
        periods = ts // rotation
        one_period = len(bad) == 0 and int(periods.min()) == int(periods.max())
        unit_list: list[int | None] = [None] * n
        for i, name in enumerate(self._unit_fields):
            col: list[Any] = list(map(dict.get, objs, repeat(name)))
            if one_period:
                # Absent or blank values are never cached, so a miss is None either way.
                cache = self._cache_for(int(periods[0]), name)
                got: list[int | None] = list(map(cache.get, col))
            else:
                got = [None] * n
            if i == 0:
                unit_list = got
            else:
                unit_list = [g if u is None else u for u, g in zip(unit_list, got, strict=True)]
            if None in unit_list:
                for j in [j for j, (u, v) in enumerate(zip(unit_list, col, strict=True))
                          if u is None and v]:  # fmt: skip
                    unit_list[j] = self._pseudonym(name, col[j], int(ts[j]))
        missing = [j for j, u in enumerate(unit_list) if u is None]
        if missing:
            bad.update(missing)
            for j in missing:
                unit_list[j] = 0
        # Dimensions: dict-cached generalizers.
        dim_cols = []
        for name in self._dim_names:
            col = list(map(dict.get, objs, repeat(name)))
            dcache = self._dim_cache[name]
            out: list[str | None] = list(map(dcache.get, col))
            if None in out:
                fn = self._dim_fns[name]
                if len(dcache) > 200_000:
                    dcache.clear()
                    dcache[None] = NONE
                for j, v in enumerate(out):
                    if v is None:
                        out[j] = dcache[col[j]] = fn(col[j])
            dim_cols.append(out)
        dims: list[tuple[str, ...]] = list(zip(*dim_cols, strict=True)) if dim_cols else [()] * n
        # Measures: NaN where absent.
        nan = float("nan")
        m = np.empty((n, len(self._measures)), dtype=np.float64)
        for k, name in enumerate(self._measures):
            col = list(map(dict.get, objs, repeat(name)))
            m[:, k] = [nan if v is None else v for v in col]
        hasher = self.policy.event_hash
        ids: list[str] = list(map(dict.__getitem__, objs, repeat("event_id")))
        events = np.fromiter(map(hasher, ids), dtype=np.uint64, count=n)
        cols = Columns(
            np.empty(0, dtype=np.int64), ts, np.array(unit_list, dtype=np.uint64), events,
            dims, m,
        )  # fmt: skip
        return cols, bad
