"""The privacy budget of dp outputs: a ledger of what each window cost, per privacy period.

The period is the pseudonym rotation period: within it one person has one pseudonym, so
contribution bounds hold per window and losses of the period's windows and dp outputs add
up (basic composition, `compose`). Before a window of a dp output is released, the
ledger checks that its cost (from OpenDP's maps, `dp.plan_output`) still fits the period's
budget and records the charge; a window that does not fit is not released. A window
already charged is not released again, unless the operator allows re-releases, and then it
is charged again (fresh noise on the same people costs as much as the first release).

A budget is the pipeline's own, or named (`dp_budget: {name: ...}`) and then shared by every
pipeline that names it: one `Ledger` spends for all of them, over all their windows and dp
outputs, so pipelines whose privacy unit is the same people cannot each spend a full budget.

The store is pluggable: memory (tests, one process), a JSONL file (survives restarts of a
replay), or the worker's Kafka topic (runtime/ledger.py).

In scale-out, a period's windows of a dp pipeline all go to one partials partition
(`period_of`, runtime/scaleout.partials_partition), so one release stage at a time spends a
period; a budget shared by several pipelines would be spent on several partials topics at
once, so it is refused there (`check_scale_out_budgets`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import orjson

from anonstream.core.pipeline import Pipeline

Status = Literal["released", "budget_exhausted", "already_released"]

log = logging.getLogger("anonstream.worker")


def period_of(start_ms: int, rotation_ms: int) -> int:
    """The privacy period of a window: the start of the pseudonym rotation period its start
    falls in (a window's size divides the period, so a tumbling window never straddles two)."""
    return start_ms - start_ms % rotation_ms


def compose(losses: list[tuple[float, float]]) -> tuple[float, float]:
    """Basic sequential composition of (epsilon, delta) losses, for a window's quantities
    and for a period's windows (OpenDP's `make_composition` for approximate DP gives the
    same; see the tests)."""
    return (math.fsum(e for e, _ in losses), math.fsum(d for _, d in losses))


@dataclass(frozen=True, slots=True)
class Charge:
    """One released window of one dp output and its privacy loss. Holds no data."""

    pipeline: str
    output: str
    start_ms: int
    end_ms: int
    period: int  # start of the privacy period, in ms
    epsilon: float
    delta: float
    rerelease: bool = False
    budget: str = ""  # the budget charged ("": written before budgets had names: the pipeline's)
    digest: str = ""  # content_digest of the window's released aggregates of this output

    @property
    def budget_name(self) -> str:
        return self.budget or self.pipeline

    @classmethod
    def from_json(cls, raw: str | bytes) -> Charge:
        """A charge read back from a ledger (file or topic), checked field by field: a
        charge whose loss is not a finite number >= 0 (NaN, inf, negative, a string) would
        make the spending unknown or lower it, so it is refused like any damaged record
        (ValueError): the release stops, the spending is never reset or reduced."""
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        c = cls(**d)  # TypeError: a missing or unknown field
        for name in ("pipeline", "output", "budget", "digest"):
            if not isinstance(getattr(c, name), str):
                raise ValueError(f"{name}: expected a string")
        for name in ("start_ms", "end_ms", "period"):
            v = getattr(c, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name}: expected an integer")
        if not c.start_ms < c.end_ms:
            raise ValueError("start_ms: expected before end_ms")
        for name, top in (("epsilon", math.inf), ("delta", 1.0)):
            v = getattr(c, name)
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ValueError(f"{name}: expected a number")
            if not (math.isfinite(v) and 0 <= v <= top):
                raise ValueError(f"{name}: expected a finite number >= 0 (<= 1 for delta)")
        if not isinstance(c.rerelease, bool):
            raise ValueError("rerelease: expected true or false")
        return c


def budget_name(p: Pipeline) -> str:
    """The budget a dp pipeline spends: its declared name, else the pipeline's own name."""
    assert p.dp_budget is not None
    return p.dp_budget.name or p.name


def content_digest(records: Iterable[dict[str, Any]]) -> str:
    """A hash of a window's released aggregates of one output, independent of their order:
    the ledger records it with the charge and the audit recomputes it from the output
    topic, so a window published twice with other content is found."""
    lines = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)
    return hashlib.blake2b(b"\n".join(lines), digest_size=16).hexdigest()


def check_shared_budgets(pipelines: Iterable[Pipeline]) -> None:
    """Pipelines spending one budget must agree on it: the same epsilon, delta and period
    (the period bounds the spending; two period lengths would never add up)."""
    seen: dict[str, Pipeline] = {}
    for p in pipelines:
        if p.dp_budget is None:
            continue
        name = budget_name(p)
        first = seen.setdefault(name, p)
        assert first.dp_budget is not None
        a, b = first.dp_budget, p.dp_budget
        if (a.epsilon, a.delta, first.rotation_ms) != (b.epsilon, b.delta, p.rotation_ms):
            raise ValueError(
                f"dp budget {name}: pipelines {first.name} and {p.name} declare it with "
                "different epsilon, delta or pseudonym_rotation"
            )


def check_scale_out_budgets(pipelines: Iterable[Pipeline]) -> None:
    """Scale-out: a budget named by several pipelines is refused. Each pipeline has its own
    partials topic, whose partitions the group assigns independently, so the windows of one
    period of two such pipelines are released by two workers, each spending the shared
    budget on its own view of the ledger."""
    by_budget: dict[str, list[str]] = {}
    for p in pipelines:
        if p.dp_budget is not None:
            by_budget.setdefault(budget_name(p), []).append(p.name)
    shared = {name: ps for name, ps in by_budget.items() if len(ps) > 1}
    if shared:
        which = "; ".join(f"{name}: {', '.join(sorted(ps))}" for name, ps in sorted(shared.items()))
        raise ValueError(
            f"dp budgets shared by several pipelines run in single mode only ({which}): in "
            "scale-out each pipeline's windows are released by another worker. Run them with "
            "ANONSTREAM_SCALE_OUT=false, or give each pipeline its own budget."
        )


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    name: str  # the budget's
    period: int
    spent: tuple[float, float]  # the period's loss after this decision
    budget: tuple[float, float]

    def summary(self, cost: tuple[float, float]) -> dict[str, object]:
        """The window summary's `privacy` block."""
        charged = cost if self.status == "released" else (0.0, 0.0)
        return {
            "mode": "dp",
            "status": self.status,
            "budget": self.name,
            "window_epsilon": charged[0],
            "window_delta": charged[1],
            "period_start_ms": self.period,
            "period_epsilon_spent": self.spent[0],
            "period_delta_spent": self.spent[1],
            "period_epsilon_budget": self.budget[0],
            "period_delta_budget": self.budget[1],
        }


class LedgerStore(Protocol):
    def load(self) -> list[Charge]: ...
    def append(self, charge: Charge) -> None: ...


class MemoryLedgerStore:
    def __init__(self) -> None:
        self.charges: list[Charge] = []

    def load(self) -> list[Charge]:
        return list(self.charges)

    def append(self, charge: Charge) -> None:
        self.charges.append(charge)


class JsonlLedgerStore:
    """One JSON line per charge, flushed and fsynced before the window is released.

    Several processes may hold one file (two replays given the same `--ledger`): each
    decision is taken under an exclusive lock of the file, after reading the charges the
    others appended since (`exclusive`), or each would spend the whole budget (and release
    the same windows) on its own view of the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0  # bytes of the file read (or written) by this store so far
        self._lines = 0

    def _read_new(self, f: BinaryIO) -> list[Charge]:
        f.seek(self._offset)
        data = f.read()
        out = []
        for raw in data.splitlines():
            self._lines += 1
            if not raw.strip():
                continue
            try:
                out.append(Charge.from_json(raw))
            except (ValueError, TypeError) as exc:
                # A damaged ledger must stop the release, never reset the spending.
                raise ValueError(f"{self.path}: line {self._lines}: not a ledger charge") from exc
        self._offset += len(data)
        return out

    def load(self) -> list[Charge]:
        self._offset = self._lines = 0
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            return self._read_new(f)

    @contextmanager
    def exclusive(self) -> Iterator[list[Charge]]:
        """Hold the file's lock (against other processes) and yield the charges appended
        by others since this store last read it; appends within are under the lock."""
        with self.path.open("a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield self._read_new(f)
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def append(self, charge: Charge) -> None:
        line = (json.dumps(asdict(charge), sort_keys=True) + "\n").encode()
        with self.path.open("ab") as f:
            at = f.seek(0, os.SEEK_END)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if at == self._offset:  # nothing unread before it (always so under the lock)
            self._offset += len(line)
            self._lines += 1


class Ledger:
    """Spending per privacy period of one budget: the dp outputs of the pipelines given
    (one, or all that share a named budget)."""

    def __init__(
        self,
        pipelines: Pipeline | Sequence[Pipeline],
        store: LedgerStore | None = None,
        allow_rerelease: bool = False,
    ) -> None:
        ps = [pipelines] if isinstance(pipelines, Pipeline) else list(pipelines)
        if not ps or any(p.dp_budget is None for p in ps):
            raise ValueError(f"pipeline {ps[0].name if ps else '?'} has no dp_budget")
        check_shared_budgets(ps)
        names = {budget_name(p) for p in ps}
        if len(names) != 1:
            raise ValueError(f"one ledger spends one budget, not {sorted(names)}")
        from anonstream.core.dp import plans  # OpenDP loads only for dp pipelines

        for p in ps:
            plans(p)  # scales and thresholds searched at start, not at the first window
        self.name = names.pop()
        b = ps[0].dp_budget
        assert b is not None
        self.budget = (b.epsilon, b.delta)
        self.rotation_ms = ps[0].rotation_ms
        self.store = store if store is not None else MemoryLedgerStore()
        self.allow_rerelease = allow_rerelease
        self._by_period: dict[int, list[Charge]] = {}
        self._released: set[tuple[str, str, int]] = set()
        # Also a charge of one of these pipelines to another budget: a budget renamed (or
        # newly shared) mid-period keeps what its pipelines already spent and released.
        self._mine = {p.name for p in ps}
        for c in self.store.load():
            self._remember_if_mine(c)

    def learn(self, charges: Iterable[Charge]) -> None:
        """Charges another worker committed since the ledger was read (another deployment
        of these pipelines, e.g. a backfill under its own consumer group)."""
        for c in charges:
            self._remember_if_mine(c)

    def _remember_if_mine(self, c: Charge) -> None:
        if c.budget_name == self.name or c.pipeline in self._mine:
            self._remember(c)

    def _remember(self, c: Charge) -> None:
        # The period is recomputed from the window's start, not read from the charge: a
        # charge edited to name another period, or written under another rotation (the
        # pipeline's `pseudonym_rotation` changed mid-period), still counts in the period
        # its window starts in under this ledger's rotation.
        self._by_period.setdefault(self.period_of(c.start_ms), []).append(c)
        self._released.add((c.pipeline, c.output, c.start_ms))

    def period_of(self, start_ms: int) -> int:
        return period_of(start_ms, self.rotation_ms)

    def spent(self, period: int) -> tuple[float, float]:
        return compose([(c.epsilon, c.delta) for c in self._by_period.get(period, [])])

    def request(
        self, pipeline: str, output: str, start_ms: int, end_ms: int, cost: tuple[float, float],
        digest: str = "",
    ) -> Decision:  # fmt: skip
        """Charge the window if it may be released; the decision says whether it was.
        `digest` is the content_digest of what will be published if it is."""
        exclusive = getattr(self.store, "exclusive", None)  # a file other processes share
        with exclusive() if exclusive is not None else nullcontext([]) as others:
            for c in others:  # appended by another process since this one last read
                self._remember_if_mine(c)
            return self._decide(pipeline, output, start_ms, end_ms, cost, digest)

    def _decide(
        self, pipeline: str, output: str, start_ms: int, end_ms: int, cost: tuple[float, float],
        digest: str,
    ) -> Decision:  # fmt: skip
        period = self.period_of(start_ms)
        spent = self.spent(period)
        again = (pipeline, output, start_ms) in self._released
        if again and not self.allow_rerelease:
            return Decision("already_released", self.name, period, spent, self.budget)
        after = compose([spent, cost])
        if after[0] > self.budget[0] or after[1] > self.budget[1]:
            return Decision("budget_exhausted", self.name, period, spent, self.budget)
        charge = Charge(
            pipeline, output, start_ms, end_ms, period, *cost, rerelease=again,
            budget=self.name, digest=digest,
        )  # fmt: skip
        self.store.append(charge)  # recorded before anything is published
        self._remember(charge)
        if again:  # names, bounds and losses only: nothing about people
            log.warning(
                "%s/%s: window starting %d released again (re-releases allowed) and charged "
                "again: epsilon %g, delta %g; budget %s, period starting %d: epsilon %g of %g "
                "spent", pipeline, output, start_ms, cost[0], cost[1], self.name, period,
                after[0], self.budget[0],
            )  # fmt: skip
        return Decision("released", self.name, period, after, self.budget)


def ledgers(
    pipelines: Iterable[Pipeline], store: LedgerStore, allow_rerelease: bool = False
) -> dict[str, Ledger]:
    """Pipeline name -> the ledger of its budget: one Ledger per budget, shared by the
    engines of every pipeline that spends it."""
    by_budget: dict[str, list[Pipeline]] = {}
    for p in pipelines:
        if p.dp_budget is not None:
            by_budget.setdefault(budget_name(p), []).append(p)
    out: dict[str, Ledger] = {}
    for ps in by_budget.values():
        book = Ledger(ps, store, allow_rerelease)
        out.update((p.name, book) for p in ps)
    return out
