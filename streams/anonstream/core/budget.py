"""The privacy budget of dp outputs: a ledger of what each window cost, per privacy period.

The period is the pseudonym rotation period: within it one person has one pseudonym, so
contribution bounds hold per window and losses of the period's windows and dp outputs add
up (basic composition, `compose`). Before a window of a dp output is released, the
ledger checks that its cost (from OpenDP's maps, `dp.plan_output`) still fits the period's
budget and records the charge; a window that does not fit is not released. A window
already charged is not released again, unless the operator allows re-releases, and then it
is charged again (fresh noise on the same people costs as much as the first release).

The store is pluggable: memory (tests, one process), a JSONL file (survives restarts of a
replay), or a Kafka topic in a later step.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

from anonstream.core.pipeline import Pipeline

Status = Literal["released", "budget_exhausted", "already_released"]


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


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    period: int
    spent: tuple[float, float]  # the period's loss after this decision
    budget: tuple[float, float]

    def summary(self, cost: tuple[float, float]) -> dict[str, object]:
        """The window summary's `privacy` block."""
        charged = cost if self.status == "released" else (0.0, 0.0)
        return {
            "mode": "dp",
            "status": self.status,
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
    """One JSON line per charge, flushed and fsynced before the window is released."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[Charge]:
        if not self.path.exists():
            return []
        out = []
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(Charge(**json.loads(line)))
                except (ValueError, TypeError) as exc:
                    # A damaged ledger must stop the release, never reset the spending.
                    raise ValueError(f"{self.path}: line {n}: not a ledger charge") from exc
        return out

    def append(self, charge: Charge) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(charge), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Ledger:
    """Spending per privacy period of one pipeline's dp outputs."""

    def __init__(
        self, pipeline: Pipeline, store: LedgerStore | None = None, allow_rerelease: bool = False
    ) -> None:
        if pipeline.dp_budget is None:
            raise ValueError(f"pipeline {pipeline.name} has no dp_budget")
        from anonstream.core.dp import plans  # OpenDP loads only for dp pipelines

        self.p = pipeline
        plans(pipeline)  # scales and thresholds searched at start, not at the first window
        self.budget = (pipeline.dp_budget.epsilon, pipeline.dp_budget.delta)
        self.store = store if store is not None else MemoryLedgerStore()
        self.allow_rerelease = allow_rerelease
        self._by_period: dict[int, list[Charge]] = {}
        self._released: set[tuple[str, int]] = set()
        for c in self.store.load():
            if c.pipeline == pipeline.name:
                self._remember(c)

    def _remember(self, c: Charge) -> None:
        self._by_period.setdefault(c.period, []).append(c)
        self._released.add((c.output, c.start_ms))

    def period_of(self, start_ms: int) -> int:
        return start_ms - start_ms % self.p.rotation_ms

    def spent(self, period: int) -> tuple[float, float]:
        return compose([(c.epsilon, c.delta) for c in self._by_period.get(period, [])])

    def request(
        self, output: str, start_ms: int, end_ms: int, cost: tuple[float, float]
    ) -> Decision:
        """Charge the window if it may be released; the decision says whether it was."""
        period = self.period_of(start_ms)
        spent = self.spent(period)
        again = (output, start_ms) in self._released
        if again and not self.allow_rerelease:
            return Decision("already_released", period, spent, self.budget)
        after = compose([spent, cost])
        if after[0] > self.budget[0] or after[1] > self.budget[1]:
            return Decision("budget_exhausted", period, spent, self.budget)
        charge = Charge(self.p.name, output, start_ms, end_ms, period, *cost, rerelease=again)
        self.store.append(charge)  # recorded before anything is published
        self._remember(charge)
        return Decision("released", period, after, self.budget)
