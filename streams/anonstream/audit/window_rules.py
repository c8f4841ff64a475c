"""The audit's checks across the records of a window, run once every record is read: the
summary's count, two numbers for one group, a "*" cell that looks like a total, one output
subtracted from another, noise declared per output, and the dp budget of each period.
`WindowRules` holds the cells and summaries the per-record checks (record_rules) collect."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from anonstream.audit.ledger import LedgerCheck
from anonstream.audit.report import AuditReport, Finding, Severity
from anonstream.audit.values import STAR, WindowKey, fmt_dims, safe, window_name


@dataclass(slots=True)
class Cell:
    release_id: str
    line: int | None
    dims: dict[str, str]
    events: float
    users: float
    k: int
    noised: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else f"release {self.release_id}"


@dataclass(slots=True)
class Summary:
    release_id: str
    line: int | None
    cells_released: int
    k: int
    privacy: dict[str, Any] | None = None  # dp outputs only


class WindowRules:
    """The state of an audit (findings, and the cells and summaries of every window) and the
    checks across a window's records."""

    def __init__(
        self, k: int | None, assume_totals: bool, ledger: list[dict[str, Any]] | None = None,
        whole_topic: bool = False,
    ) -> None:  # fmt: skip
        self.ledger = LedgerCheck(ledger, whole_topic) if ledger is not None else None
        self.k = k
        self.assume_totals = assume_totals
        self.report = AuditReport()
        self.cells: dict[WindowKey, list[Cell]] = defaultdict(list)
        self.summaries: dict[WindowKey, list[Summary]] = defaultdict(list)
        self.noise_decls: dict[WindowKey, dict[str, tuple[str, int | None]]] = defaultdict(dict)

    def find(
        self, rid: str | None, line: int | None, rule: str, msg: str, sev: Severity = "error"
    ) -> None:
        self.report.findings.append(Finding(rid, line, rule, msg, sev))

    def finish(self) -> AuditReport:
        keys = set(self.cells) | set(self.summaries)
        self.report.windows = len(keys)
        span: dict[tuple[str, int, str], tuple[str, str]] = {}
        for p, v, o, s, _e in keys:
            lo, hi = span.get((p, v, o), (s, s))
            span[(p, v, o)] = (min(lo, s), max(hi, s))
        for key in sorted(keys):
            first, last = span[key[:3]]
            cells = self.cells.get(key, [])
            self._summary_count(key, cells, key[3] == first, key[3] == last)
            self._same_dims(cells)
            self._star_parents(cells)
            if len(self.noise_decls.get(key, {})) > 1:
                rid, line = next(iter(self.noise_decls[key].values()))
                self.find(
                    rid, line, "noise",
                    f"{window_name(key)}: cells of one output and window declare different "
                    "noise (or none): noise is set per output",
                    "warning",
                )  # fmt: skip
        self._budget()
        for l_rid, l_msg, l_sev in self.ledger.findings() if self.ledger is not None else []:
            self.find(l_rid, None, "ledger", l_msg, "error" if l_sev == "error" else "warning")
        by_window: dict[tuple[str, int, str, str], dict[str, list[Cell]]] = defaultdict(dict)
        for (p, v, o, s, e), cells in self.cells.items():
            by_window[(p, v, s, e)][o] = cells
        for outputs in by_window.values():
            # The others are built from the primary output: the finest (every dimension
            # of the window), of those the one holding most events, then the smallest k (an
            # output with the same dimensions and a larger k holds part of them or coarser).
            dims_of = {o: set(cells[0].dims) for o, cells in outputs.items() if cells}
            every = set().union(*dims_of.values()) if dims_of else set()
            rank = {
                o: (-sum(c.events for c in outputs[o]), min(c.k for c in outputs[o]))
                for o, d in dims_of.items()
                if d == every
            }
            primary = {o for o, r in rank.items() if r == min(rank.values())}
            for (name_a, a), (name_b, b) in itertools.permutations(sorted(outputs.items()), 2):
                if name_a in primary:
                    self._cross_output(name_a, a, name_b, b)
        if self.report.duplicate_deliveries:
            self.find(
                None, None, "duplicate",
                f"{self.report.duplicate_deliveries} records delivered more than once with the "
                "same content (a consumer keeps the first per release_id)",
                "info",
            )  # fmt: skip
        return self.report

    def _budget(self) -> None:
        """dp outputs: per pipeline and privacy period, the windows' charges add up to no
        more than the budget every summary declares, and refused windows release nothing."""
        periods: dict[tuple[str, int], list[tuple[Summary, dict[str, Any]]]] = defaultdict(list)
        for key, summaries in self.summaries.items():
            s = summaries[0]
            if s.privacy is None:
                continue
            # Per budget: pipelines sharing one spend it together (its name, else the pipeline).
            name = s.privacy.get("budget") or key[0]
            periods[(name, s.privacy["period_start_ms"])].append((s, s.privacy))
            if s.privacy["status"] != "released" and self.cells.get(key):
                self.find(
                    s.release_id, s.line, "budget",
                    f"{window_name(key)}: aggregates released for a window whose budget "
                    "was refused",
                )  # fmt: skip
        for (pipeline, start), items in periods.items():
            s0, pv0 = items[0]
            budget = (pv0["period_epsilon_budget"], pv0["period_delta_budget"])
            eps = sum(pv["window_epsilon"] for _, pv in items)
            delta = sum(pv["window_delta"] for _, pv in items)
            declared = max(pv["period_epsilon_spent"] for _, pv in items)
            where = f"budget {safe(pipeline)}, period starting {start} ms"
            tol = 1e-9 * max(1.0, budget[0])
            if eps > budget[0] + tol or delta > budget[1] * (1 + 1e-9):
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: windows charged epsilon {eps:.6g}, delta {delta:.3g}, over the "
                    f"budget epsilon {budget[0]:g}, delta {budget[1]:g}",
                )  # fmt: skip
            if eps > declared + tol:
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: windows charged epsilon {eps:.6g} but the summaries say "
                    f"{declared:.6g} was spent",
                )  # fmt: skip
            if any((pv["period_epsilon_budget"], pv["period_delta_budget"]) != budget
                   for _, pv in items):  # fmt: skip
                self.find(
                    s0.release_id, s0.line, "budget",
                    f"{where}: summaries declare different budgets",
                    "warning",
                )  # fmt: skip

    def _summary_count(
        self, key: WindowKey, cells: list[Cell], is_first: bool, is_last: bool
    ) -> None:
        summaries = self.summaries.get(key, [])
        name = window_name(key)
        if not summaries:
            if cells and not is_last:
                c = cells[0]
                self.find(c.release_id, c.line, "sanity", f"{name}: no window_summary", "warning")
            return
        s = summaries[0]
        if len(summaries) > 1:
            self.find(
                s.release_id, s.line, "sanity",
                f"{name}: {len(summaries)} window summaries with different release_ids",
            )  # fmt: skip
        seen = len(cells)
        if seen > s.cells_released:
            self.find(
                s.release_id, s.line, "differencing",
                f"{name}: {seen} aggregates released but the summary says {s.cells_released}",
            )  # fmt: skip
        elif seen < s.cells_released:
            # The oldest window of a topic may have lost its first records to retention.
            self.find(
                s.release_id, s.line, "differencing",
                f"{name}: summary says {s.cells_released} aggregates but the stream holds "
                f"{seen}" + (" (the stream may begin inside this window)" if is_first else ""),
                "warning" if is_first else "error",
            )  # fmt: skip
        for c in cells:
            if c.k < s.k:
                self.find(
                    c.release_id, c.line, "sanity",
                    f"aggregate k {c.k} < k {s.k} of its window summary",
                )  # fmt: skip

    def _same_dims(self, cells: list[Cell]) -> None:
        first: dict[frozenset[tuple[str, str]], Cell] = {}
        for c in cells:
            key = frozenset(c.dims.items())
            if key in first:
                o = first[key]
                self.find(
                    c.release_id, c.line, "differencing",
                    f"same dims {fmt_dims(c.dims)} as {o.where} in the same window and output: "
                    "two numbers for one group, their difference can single people out",
                )  # fmt: skip
            else:
                first[key] = c

    def _star_parents(self, cells: list[Cell]) -> None:
        """A "*" cell P is a residual, disjoint from the cells under it. If it is as large as
        all of them together plus a rest under k, it looks like a total: P minus its children
        would describe fewer than k people."""
        indexes: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[tuple[str, ...], list[Cell]]]
        indexes = {}
        for p in cells:
            if p.noised or STAR not in p.dims.values():
                continue
            names = tuple(p.dims)
            fixed = tuple(d for d in names if p.dims[d] != STAR)
            starred = [d for d in names if p.dims[d] == STAR]
            idx_key = (tuple(sorted(names)), fixed)
            if idx_key not in indexes:
                index: dict[tuple[str, ...], list[Cell]] = defaultdict(list)
                for c in cells:
                    if set(c.dims) == set(names) and all(c.dims[d] != STAR for d in fixed):
                        index[tuple(c.dims[d] for d in fixed)].append(c)
                indexes[idx_key] = index
            under = [
                c
                for c in indexes[idx_key].get(tuple(p.dims[d] for d in fixed), [])
                if c is not p and any(c.dims[d] != STAR for d in starred)
            ]
            if not under or any(c.noised for c in under):
                continue
            k = max(p.k, self.k or 0)
            if self.assume_totals:
                children = maximal(under, starred)
                sum_e = sum(c.events for c in children)
                sum_u = sum(c.users for c in children)
                leak = p.events > sum_e > 0 and 0 < p.events - sum_e < k and p.users > sum_u
            else:
                children = under
                sum_e = sum(c.events for c in children)
                leak = (
                    p.events >= sum_e
                    and p.users >= max(c.users for c in children)
                    and 0 < p.events - sum_e < k
                )
            if not leak:
                continue
            # The numbers alone cannot tell a total from a residual (real residuals trip the
            # default test now and then), so only a stream declared total-style fails on it.
            msg = (
                f'"*" cell {fmt_dims(p.dims)} ({p.events} events, {p.users} users) exceeds '
                f"its {len(children)} released sub-cells together ({sum_e} events) by "
                f"{p.events - sum_e} events, under k {k}: "
            )
            if self.assume_totals:
                msg += "as a total, it minus its sub-cells describes fewer than k people"
            else:
                msg += "fine if it is a residual, a leak if it is a total of its sub-cells"
            sev: Severity = "error" if self.assume_totals else "warning"
            self.find(p.release_id, p.line, "differencing", msg, sev)

    def _cross_output(self, name_a: str, a: list[Cell], name_b: str, b: list[Cell]) -> None:
        """A is the primary output, B's dims a subset of A's: A's cells inside one B cell
        are disjoint parts of it, so any number of B minus the same number of those parts
        describes a group that A did not show. Every released quantity is checked: events,
        users (the parts' users minus B's is the overlap of the parts: 0 or at least k),
        sums (equal), means (withheld with any part's, and between the parts' means) and
        histograms (each band a union of bands of every part, with their total). Those are checked
        where A's cells make up the whole of B's cell (same events)."""
        if not a or not b:
            return
        dims_a, dims_b = set(a[0].dims), set(b[0].dims)
        if not dims_b <= dims_a:
            return
        on = tuple(sorted(dims_b))
        inside: dict[tuple[str, ...], list[Cell]] = defaultdict(list)
        for c in a:
            if set(c.dims) == dims_a and all(c.dims[d] != STAR for d in on):
                inside[tuple(c.dims[d] for d in on)].append(c)
        for cell in b:
            if cell.noised or set(cell.dims) != dims_b or STAR in cell.dims.values():
                continue
            parts = inside.get(tuple(cell.dims[d] for d in on), [])
            if not parts or any(p.noised for p in parts):
                continue
            # What B minus A's parts leaves is shown by B: it must be a group B may show.
            k = max(cell.k, self.k or 0)
            lines = ", ".join(p.where for p in parts[:5]) + (", …" if len(parts) > 5 else "")
            what = (
                f"output {name_b} cell {fmt_dims(cell.dims)} minus the {len(parts)} cells of "
                f"output {name_a} inside it ({lines})"
            )
            rest = cell.events - sum(p.events for p in parts)
            if 0 < rest < k:
                self.find(
                    cell.release_id, cell.line, "differencing",
                    f"{what} leaves {rest} events: fewer than k {k} people, revealed by "
                    "subtraction",
                )  # fmt: skip
            elif rest < 0:
                self.find(
                    cell.release_id, cell.line, "sanity",
                    f"the cells of output {name_a} inside output {name_b} cell "
                    f"{fmt_dims(cell.dims)} hold {-rest} more events than it",
                    "warning",
                )  # fmt: skip
            if rest:
                continue
            overlap = sum(p.users for p in parts) - cell.users
            if 0 < overlap < k:
                self.find(
                    cell.release_id, cell.line, "differencing",
                    f"{what}: their users minus its users is {overlap}, the number of people "
                    f"in two of them: fewer than k {k}, revealed by subtraction",
                )  # fmt: skip
            for name, value in cell.metrics.items():
                self._derived(cell, parts, name, value, what)

    def _derived(self, cell: Cell, parts: list[Cell], name: str, value: object, what: str) -> None:
        """One measure of a coarser cell against the same measure of its parts."""
        if value is None or not name.endswith(("_sum", "_mean", "_histogram")):
            return
        if any(p.k > cell.k for p in parts):
            return  # a part with a larger k may withhold or coarsen what the cell may show
        theirs = [p.metrics.get(name) for p in parts]
        if any(t is None for t in theirs):
            self.find(
                cell.release_id, cell.line, "differencing",
                f"{what}: {name} is withheld in a part but released here, so the difference "
                "is the withheld value",
            )  # fmt: skip
            return
        bad = ""
        if name.endswith("_sum") and isinstance(value, int | float):
            total = sum(float(t) for t in theirs if isinstance(t, int | float))
            if abs(float(value) - total) > 0.001 * (len(parts) + 1):
                bad = f"{name} {value} differs from the parts' total {round(total, 3)}"
        elif name.endswith("_mean") and isinstance(value, int | float):
            means = [float(t) for t in theirs if isinstance(t, int | float)]
            if means and not min(means) - 0.001 <= float(value) <= max(means) + 0.001:
                bad = f"{name} {value} is outside the parts' means"
        elif name.endswith("_histogram") and isinstance(value, dict):
            bad = histogram_difference(name, value, [t for t in theirs if isinstance(t, dict)])
        if bad:
            self.find(
                cell.release_id, cell.line, "differencing",
                f"{what}: {bad}; the difference describes people the parts did not show",
            )  # fmt: skip


def band_bounds(label: str) -> tuple[float, float] | None:
    m = re.fullmatch(r"\[([^,]+),([^)]+)\)", label)
    if m is None:
        return None
    try:
        return float(m.group(1)), float(m.group(2))
    except ValueError:
        return None


def histogram_difference(name: str, hist: dict[str, Any], parts: list[dict[str, Any]]) -> str:
    """Why a histogram is not the total of its parts' histograms ('' if it is): each of
    its bands must be a union of whole bands of every part, with their total count."""
    part_bands = [
        [(bb, n) for lab, n in p.items() if (bb := band_bounds(lab)) is not None] for p in parts
    ]
    for label, count in hist.items():
        bounds = band_bounds(label)
        if bounds is None:
            return f"{name} band {label!r} is not a band"
        lo, hi = bounds
        total = 0.0
        for bands in part_bands:
            for (a, b), n in bands:
                if lo <= a and b <= hi:
                    total += n if isinstance(n, int | float) else 0
                elif a < hi and lo < b:  # overlaps the band without lying inside it
                    return f"{name} band {label} cuts a band [{a:g},{b:g}) of a part"
        if total != count:
            return f"{name} band {label} holds {count}, the parts' bands in it {total:g}"
    return ""


def maximal(cells: list[Cell], starred: list[str]) -> list[Cell]:
    """The cells under a parent that no other cell under it contains (its direct children
    when cells are totals of the cells below them)."""
    present = {tuple(sorted(c.dims.items())) for c in cells}
    out = []
    for c in cells:
        fixed = [d for d in starred if c.dims[d] != STAR]
        contained = False
        for r in range(1, len(fixed)):
            for drop in itertools.combinations(fixed, r):
                general = {**c.dims, **dict.fromkeys(drop, STAR)}
                if tuple(sorted(general.items())) in present:
                    contained = True
                    break
            if contained:
                break
        if not contained:
            out.append(c)
    return out
