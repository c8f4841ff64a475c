"""Column-wise decode, validation and policy for a whole batch: the hot path.

Per-event Python costs more than reading the event from Kafka, so a batch is handled one
field at a time, in chunks that stay in the CPU cache. msgspec decodes each message
straight into a typed struct built from the contract, checking types, required fields and
unknown fields in C; then each field is pulled out of every event with C-level `map` and
generalized through dict caches (values repeat: user agents, pages, pseudonyms).
Anything unusual in an event (bad JSON, a wrong type, an unknown field, a nested object, a
missing unit) sends that event alone down the per-event path of decode.py and policy.py,
which is the reference: both paths give the same result for every input (property-tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from anonstream.core.cache import DIMENSION_VALUES, BoundedCache
from anonstream.core.contract import Contract, FieldType
from anonstream.core.decode import MAX_TS_MS, MIN_TS_MS, Decoder, TimestampCache, parse_ts
from anonstream.core.policy import NONE, Policy, PolicyRecord
from anonstream.core.windows import needs_earlier_key

# The bounds make msgspec refuse what orjson (the reference decoder) would not read as
# these ints (past 64 bits it makes floats, which the reference rejects); the rare ints
# between 2**63 and 2**64 are left to the per-event path.
_U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_TS_INT = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, lt=MAX_TS_MS)]  # parse_ts's range
_STRUCT_TYPES: dict[FieldType, Any] = {
    FieldType.STRING: str,
    FieldType.INT: _U63,
    FieldType.TIMESTAMP: _TS_INT | str,
    FieldType.OBJECT: dict[str, Any],
}


# Events per pass of the fast path: about 1 MB of decoded structs, the size of a core's L2.
CHUNK = 1024

# Bad JSON or a wrong shape; very deep nesting in an object field overflows the stack.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def event_struct(contract: Contract) -> type[msgspec.Struct]:
    """A struct type accepting exactly the well-formed events of `contract` that the fast
    path handles; anything else fails to decode and takes the per-event path."""
    fields: list[tuple[Any, ...]] = []
    for f in contract.fields:
        t = _STRUCT_TYPES[f.type]
        # Required fields may not be null either: the reference calls that missing.
        fields.append((f.name, t) if f.required else (f.name, t | None, None))
    return msgspec.defstruct(
        f"{contract.name}_event", fields, kw_only=True, forbid_unknown_fields=True, gc=False
    )


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
    # Pseudonyms under the previous key period, where a window starting there needs them
    # (windows.window_units picks per window); None: no event of these needs one.
    earlier_unit: npt.NDArray[np.uint64] | None = None

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def from_records(
        index: list[int], records: list[PolicyRecord], n_measures: int, unknown: int = 0
    ) -> Columns:
        n = len(records)
        earlier = None
        if any(r.earlier_unit is not None for r in records):
            earlier = np.fromiter(
                (r.unit if r.earlier_unit is None else r.earlier_unit for r in records),
                dtype=np.uint64, count=n,
            )  # fmt: skip
        return Columns(
            np.array(index, dtype=np.int64),
            np.fromiter((r.ts_ms for r in records), dtype=np.int64, count=n),
            np.fromiter((r.unit for r in records), dtype=np.uint64, count=n),
            np.fromiter((r.event_hash for r in records), dtype=np.uint64, count=n),
            [r.dims for r in records],
            np.array([r.measures for r in records], dtype=np.float64).reshape(n, n_measures),
            unknown,
            earlier,
        )

    @staticmethod
    def join(parts: list[Columns]) -> Columns:
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        return Columns(
            np.concatenate([p.index for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.unit for p in parts]),
            np.concatenate([p.event for p in parts]),
            [d for p in parts for d in p.dims],
            np.concatenate([p.measures for p in parts]),
            sum(p.unknown_fields for p in parts),
            None
            if all(p.earlier_unit is None for p in parts)
            else np.concatenate(
                [p.unit if p.earlier_unit is None else p.earlier_unit for p in parts]
            ),
        )

    def take(self, sel: npt.NDArray[np.int64]) -> Columns:
        """The rows at `sel` (index left empty: the caller sets it)."""
        return Columns(
            np.empty(0, dtype=np.int64), self.ts[sel], self.unit[sel], self.event[sel],
            [self.dims[j] for j in sel.tolist()], self.measures[sel], self.unknown_fields,
            None if self.earlier_unit is None else self.earlier_unit[sel],
        )  # fmt: skip

    @staticmethod
    def concat(a: Columns, b: Columns) -> Columns:
        return Columns.join([a, b])


class ColumnPolicy:
    """The fast path for one pipeline; shares its caches and keys with `policy`."""

    def __init__(self, decoder: Decoder, policy: Policy) -> None:
        self.decoder = decoder
        self.policy = policy
        contract = decoder.contract
        self._decode = msgspec.json.Decoder(event_struct(contract)).decode
        # Nested objects are rare and their sub-fields need checks: per-event path.
        self._nested = tuple(attrgetter(f.name) for f in contract.fields if f.children)
        self._get = {f.name: attrgetter(f.name) for f in contract.fields}
        self._ts_strings = TimestampCache()
        p = policy.pipeline
        self._dim_names = p.dimensions
        self._dim_fns = dict(policy.dim_functions)
        self._dim_cache: dict[str, BoundedCache[Any, str]] = {
            n: BoundedCache(DIMENSION_VALUES, {None: NONE}) for n in p.dimensions
        }
        self._measures = p.measures

    def run(self, values: list[bytes]) -> tuple[Columns, list[int]]:
        """Columns of the events that pass every check, and the indices of the others
        (which the caller sends down the per-event path)."""
        if len(values) <= CHUNK:
            return self._run(values)
        # Each pass over the decoded structs touches all of them: passes over a chunk that
        # stays in the core's cache beat passes over the whole fetch (measured: load/).
        parts = [self._run(values[i : i + CHUNK]) for i in range(0, len(values), CHUNK)]
        flagged: list[int] = []
        for c, (part, bad) in enumerate(parts):
            part.index += c * CHUNK
            flagged.extend(j + c * CHUNK for j in bad)
        return Columns.join([part for part, _ in parts]), flagged

    def _run(self, values: list[bytes]) -> tuple[Columns, list[int]]:
        n = len(values)
        empty = Columns.from_records([], [], len(self._measures))
        if not n:
            return empty, []
        flagged: set[int] = set()
        limit = self.decoder.max_bytes
        if max(map(len, values)) > limit:
            flagged.update(i for i, v in enumerate(values) if len(v) > limit)
        objs = self._decode_all(values, flagged)
        if flagged:
            keep = [i for i in range(n) if i not in flagged]
            objs = [objs[i] for i in keep]
        else:
            keep = list(range(n))
        for get in self._nested:
            nested = {j for j, v in enumerate(map(get, objs)) if v is not None}
            if nested:
                flagged.update(keep[j] for j in nested)
                objs = [o for j, o in enumerate(objs) if j not in nested]
                keep = [k for j, k in enumerate(keep) if j not in nested]
        if not objs:
            return empty, sorted(flagged)
        cols, bad2 = self._policy(objs)
        if bad2:
            flagged.update(keep[j] for j in bad2)
            good_list = [j for j in range(len(objs)) if j not in bad2]
            keep = [keep[j] for j in good_list]
            cols = cols.take(np.array(good_list, dtype=np.int64))
        cols.index = np.array(keep, dtype=np.int64)
        return cols, sorted(flagged)

    def _decode_all(self, values: list[bytes], flagged: set[int]) -> list[Any]:
        """Structs in batch order; None (and the index added to `flagged`) where a value
        is oversized or does not decode. One C-level pass unless something is wrong."""
        decode = self._decode
        if not flagged:
            try:
                return list(map(decode, values))
            except _DECODE_ERRORS:
                pass
        objs: list[Any] = []
        for i, v in enumerate(values):
            try:
                objs.append(None if i in flagged else decode(v))
            except _DECODE_ERRORS:
                objs.append(None)
                flagged.add(i)
        return objs

    def _units(
        self, objs: list[Any], ts: npt.NDArray[np.int64], one_period: bool
    ) -> list[int | None]:
        """Privacy unit of each event (None where no unit field is present): the policy's
        `PrivacyUnit`, given the unit fields one column at a time."""
        get = self._get
        return self.policy.unit.of_columns(lambda name: list(map(get[name], objs)), ts, one_period)

    def _policy(self, objs: list[Any]) -> tuple[Columns, set[int]]:
        n = len(objs)
        bad: set[int] = set()
        # Event time: ints are epoch ms, strings RFC 3339; the rest is the slow path's job.
        ts_col = list(map(self._get["ts"], objs))
        if set(map(type, ts_col)) == {int}:
            ts = np.array(ts_col, dtype=np.int64)  # msgspec kept them in range
        else:
            # msgspec has checked the ints (never 0); strings that the cache cannot vouch
            # for (0) get the reference parser, and the per-event path if it refuses them.
            ts = np.array([v if type(v) is int else 0 for v in ts_col], dtype=np.int64)
            spos = np.flatnonzero(ts == 0)
            parsed = self._ts_strings.many([ts_col[j] for j in spos.tolist()])
            for j in np.flatnonzero(parsed == 0).tolist():
                parsed[j] = parse_ts(ts_col[int(spos[j])]) or 0
            ts[spos] = parsed
            bad.update(np.flatnonzero(ts == 0).tolist())
        future = ts > self.decoder.now_ms() + self.decoder.max_future_ms
        if future.any():
            bad.update(np.flatnonzero(future).tolist())
        rotation = self.policy.pseudonyms.rotation_ms
        unit_list = self._units(objs, ts, one_period=len(bad) == 0)
        if None in unit_list:
            missing = [j for j, u in enumerate(unit_list) if u is None]
            bad.update(missing)
            for j in missing:
                unit_list[j] = 0
        unit = np.array(unit_list, dtype=np.uint64)
        # Hopping windows that start in the previous key period count people with its key.
        earlier = None
        need = needs_earlier_key(self.policy.pipeline.window, rotation, ts)
        if bad:
            need[list(bad)] = False
        if need.any():
            idx = np.flatnonzero(need)
            got = self._units([objs[j] for j in idx.tolist()], ts[idx] - rotation, True)
            earlier = unit.copy()
            earlier[idx] = [0 if g is None else g for g in got]  # same field: never None
        # Dimensions: dict-cached generalizers.
        dim_cols = []
        for name in self._dim_names:
            col = list(map(self._get[name], objs))
            dcache = self._dim_cache[name]
            out: list[str | None] = list(map(dcache.get, col))
            if None in out:
                fn = self._dim_fns[name]
                missed = [j for j in range(n) if out[j] is None]
                dcache.make_room(len(missed))
                for j in missed:
                    out[j] = dcache[col[j]] = fn(col[j])
            dim_cols.append(out)
        dims: list[tuple[str, ...]] = list(zip(*dim_cols, strict=True)) if dim_cols else [()] * n
        # Measures: NaN where absent.
        m = np.empty((n, len(self._measures)), dtype=np.float64)
        for k, name in enumerate(self._measures):
            m[:, k] = list(map(self._get[name], objs))  # numpy reads None as NaN
        events = self.policy.event_hash.many(list(map(self._get["event_id"], objs)))
        cols = Columns(
            np.empty(0, dtype=np.int64), ts, unit, events,
            dims, m, 0, earlier,
        )  # fmt: skip
        return cols, bad
