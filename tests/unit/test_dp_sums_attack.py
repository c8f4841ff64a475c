"""Red team: a dp sum's exact value, before noise, must move by at most the clamp when one
person's value is added (the sensitivity the noise is scaled to). Sums used to be taken in
float64 (`np.bincount(weights=...)`): rounded above 2^53, and wrapped to -2^63 above 2^63,
where one person more flips the released sum's sign."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.dp import SUM_LIMIT, integer_sums

HI = 2**50  # an integer clamp far above float64's exact range once summed


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 3), st.integers(-HI, HI)), min_size=1, max_size=300),
    extra=st.tuples(st.integers(0, 3), st.integers(-HI, HI)),
    at=st.integers(0, 300),
)
def test_one_value_more_moves_the_sums_by_at_most_that_value(
    rows: list[tuple[int, int]], extra: tuple[int, int], at: int
) -> None:
    g, v = (np.array(x, dtype=np.int64) for x in zip(*rows, strict=True))
    at = min(at, len(rows))  # the new row anywhere: float sums depend on the order
    g2, v2 = np.insert(g, at, extra[0]), np.insert(v, at, extra[1])
    a, b = integer_sums(g, v, 4), integer_sums(g2, v2, 4)
    assert int(np.abs(b.astype(object) - a.astype(object)).sum()) <= abs(extra[1])
    exact = [sum(int(x) for x, y in zip(v, g, strict=True) if y == c) for c in range(4)]
    assert a.tolist() == [max(-SUM_LIMIT, min(SUM_LIMIT, s)) for s in exact]


def test_sums_past_int64_saturate_instead_of_wrapping() -> None:
    big = np.full(200_000, 2**46, dtype=np.int64)  # 1.4e19 > 2^63
    g = np.zeros(len(big), dtype=np.int64)
    assert integer_sums(g, big, 1).tolist() == [SUM_LIMIT]
    assert integer_sums(g, -big, 1).tolist() == [-SUM_LIMIT]
    # Below the limit: exact, where float64 is off (2^53 + 1 is not a float64).
    small = np.array([2**53, 1], dtype=np.int64)
    assert integer_sums(np.zeros(2, dtype=np.int64), small, 1).tolist() == [2**53 + 1]
