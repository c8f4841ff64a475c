"""Property tests of the distinct-unit count (anonstream.core.accumulators).

`DistinctUnits` below is the count's mergeable reference model (the product needs only the
one-pass `distinct_count`, so the model lives here, with its tests).

`merge` must be associative and commutative and equal to adding everything at once, and the
release's one-pass `distinct_count` must equal it: that is what makes batches, partitions
and roll-ups the same problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.accumulators import (
    HLL_P,
    U64,
    _hll_estimate,
    _hll_registers,
    distinct_count,
)


@dataclass
class DistinctUnits:
    """Distinct privacy units: exact (sorted unique uint64) up to `exact_limit`, then a
    HyperLogLog sketch. Set `exact_limit` at or above the largest k in use: below it the
    k decision is exact; above it the decision can no longer change, only the reported
    count becomes an estimate."""

    exact_limit: int = 4096
    exact: U64 | None = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    registers: npt.NDArray[np.uint8] | None = None

    def add(self, units: U64) -> None:
        self.merge(DistinctUnits(self.exact_limit, np.unique(units.astype(np.uint64))))

    def merge(self, other: DistinctUnits) -> None:
        if self.exact is not None and other.exact is not None:
            merged = np.union1d(self.exact, other.exact)
            if len(merged) <= self.exact_limit:
                self.exact = merged
                return
            self.registers = _hll_registers(merged)
            self.exact = None
            return
        mine = self.registers if self.exact is None else _hll_registers(self.exact)
        theirs = other.registers if other.exact is None else _hll_registers(other.exact)
        assert mine is not None and theirs is not None
        self.registers = np.maximum(mine, theirs)
        self.exact = None

    @property
    def is_exact(self) -> bool:
        return self.exact is not None

    def result(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        assert self.registers is not None
        return max(_hll_estimate(self.registers), self.exact_limit + 1)


SETTINGS = settings(deadline=None, max_examples=75)

U64_MAX = 2**64 - 1
SMALL_LIMIT = 64  # exact_limit small enough that the sketch path is reached cheaply

# Parts of a stream: small value pools so that the parts overlap (duplicates across parts).
units_part = st.lists(st.one_of(st.integers(0, 50), st.integers(0, U64_MAX)), max_size=60).map(
    lambda xs: np.array(xs, dtype=np.uint64)
)
units_parts = st.lists(units_part, min_size=3, max_size=3)


def _from(make: Callable[[], Any], values: np.ndarray) -> Any:
    acc = make()
    acc.add(values)
    return acc


def _merged(make: Callable[[], Any], parts: list[np.ndarray], order: list[int]) -> Any:
    """((p[o0] + p[o1]) + p[o2]) built from separate accumulators."""
    acc = _from(make, parts[order[0]])
    for i in order[1:]:
        acc.merge(_from(make, parts[i]))
    return acc


def _merged_right(make: Callable[[], Any], parts: list[np.ndarray]) -> Any:
    """p0 + (p1 + p2): the other association."""
    right = _from(make, parts[1])
    right.merge(_from(make, parts[2]))
    acc = _from(make, parts[0])
    acc.merge(right)
    return acc


def _state(acc: Any) -> tuple[Any, ...]:
    """Comparable full state of an accumulator (not only its result)."""
    if isinstance(acc, DistinctUnits):
        if acc.exact is not None:
            return ("exact", acc.exact.tolist())
        assert acc.registers is not None
        return ("hll", acc.registers.tobytes())
    raise AssertionError(type(acc))


def _check_merge_laws(make: Callable[[], Any], parts: list[np.ndarray]) -> None:
    everything = _from(make, np.concatenate(parts))
    at_once = _state(everything)
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]):
        assert _state(_merged(make, parts, order)) == at_once, order
    assert _state(_merged_right(make, parts)) == at_once
    # Adding part by part into one accumulator is the same too.
    acc = make()
    for p in parts:
        acc.add(p)
    assert _state(acc) == at_once
    # Merging an empty accumulator changes nothing, on either side.
    empty = make()
    empty.merge(everything)
    assert _state(empty) == at_once
    everything.merge(make())
    assert _state(everything) == at_once


# -- DistinctUnits ---------------------------------------------------------------------------


@SETTINGS
@given(units_parts)
def test_distinct_units_merge_laws_exact(parts: list[np.ndarray]) -> None:
    # Default limit (4096) is far above the at most 180 values here: always exact.
    _check_merge_laws(DistinctUnits, parts)
    acc = _merged(DistinctUnits, parts, [0, 1, 2])
    assert acc.is_exact
    assert acc.result() == len(set(np.concatenate(parts).tolist()))


@SETTINGS
@given(units_parts)
def test_distinct_units_merge_laws_around_small_limit(parts: list[np.ndarray]) -> None:
    make = lambda: DistinctUnits(SMALL_LIMIT)  # noqa: E731
    _check_merge_laws(make, parts)
    n_distinct = len(set(np.concatenate(parts).tolist()))
    acc = _merged(make, parts, [1, 2, 0])
    if n_distinct <= SMALL_LIMIT:
        assert acc.is_exact
        assert acc.result() == n_distinct
    else:
        assert not acc.is_exact
        # Above the limit the reported count never falls back under it (the k decision made
        # exactly below the limit cannot change).
        assert acc.result() > SMALL_LIMIT


@SETTINGS
@given(
    st.lists(
        st.lists(st.integers(0, U64_MAX), min_size=20, max_size=120).map(
            lambda xs: np.array(xs, dtype=np.uint64)
        ),
        min_size=3,
        max_size=3,
    )
)
def test_distinct_units_merge_laws_on_sketch_path(parts: list[np.ndarray]) -> None:
    """Every part alone is over the limit: merges of sketches with sketches."""
    make = lambda: DistinctUnits(16)  # noqa: E731
    _check_merge_laws(make, parts)
    acc = _merged(make, parts, [0, 1, 2])
    if len(set(np.concatenate(parts).tolist())) > 16:
        assert not acc.is_exact
        assert acc.registers is not None
        assert np.array_equal(acc.registers, _hll_registers(np.unique(np.concatenate(parts))))


@SETTINGS
@given(st.lists(st.integers(0, U64_MAX), max_size=300))
def test_distinct_units_exact_below_limit(xs: list[int]) -> None:
    acc = DistinctUnits(4096)
    # Added twice, in two orders: duplicates never count.
    acc.add(np.array(xs, dtype=np.uint64))
    acc.add(np.array(xs[::-1], dtype=np.uint64))
    assert acc.is_exact
    assert acc.result() == len(set(xs))


def test_distinct_units_limit_boundary() -> None:
    acc = DistinctUnits(SMALL_LIMIT)
    acc.add(np.arange(SMALL_LIMIT, dtype=np.uint64))
    assert acc.is_exact and acc.result() == SMALL_LIMIT
    acc.add(np.arange(SMALL_LIMIT, dtype=np.uint64))  # the same units again
    assert acc.is_exact and acc.result() == SMALL_LIMIT
    acc.add(np.array([10**12], dtype=np.uint64))  # one more: now a sketch
    assert not acc.is_exact and acc.result() >= SMALL_LIMIT + 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_hll_estimate_within_5_percent_for_100k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, U64_MAX, size=100_000, dtype=np.uint64, endpoint=True)
    n = len(np.unique(values))
    acc = DistinctUnits(SMALL_LIMIT)
    # In ten parts, merged: the sketch of the parts is the sketch of the whole.
    for part in np.array_split(values, 10):
        other = DistinctUnits(SMALL_LIMIT)
        other.add(part)
        acc.merge(other)
    assert not acc.is_exact
    assert abs(acc.result() - n) <= 0.05 * n
    assert acc.result() == _hll_estimate(_hll_registers(values))


def test_hll_registers_rank_bounds() -> None:
    # Value 0 has the most leading zeros possible: its rank is capped by the sentinel bits.
    regs = _hll_registers(np.array([0, U64_MAX, 1 << (64 - HLL_P)], dtype=np.uint64))
    assert regs[0] == 64 - HLL_P + 1
    assert regs[-1] == 1  # all ones: rank 1
    assert regs[1] == 64 - HLL_P + 1  # index 1, remaining bits all zero
    assert int(np.count_nonzero(regs)) == 3


@SETTINGS
@given(units_parts, st.sampled_from([SMALL_LIMIT, 4096]))
def test_distinct_count_equals_distinct_units_fed_in_parts(
    parts: list[np.ndarray], limit: int
) -> None:
    acc = DistinctUnits(limit)
    for part in parts:
        acc.add(part)
    assert distinct_count(np.concatenate(parts), limit) == acc.result()
