"""Sums that do not depend on the order of their terms.

A float sum added left to right depends on the order of its terms in the last bits, and a
release seeds its noise with the exact figures: two release paths that add the same values
in another order (single mode over a window's rows, the sharded release adding up the
shards' partial sums, core/sharded.py) must still give the very same number. So a group's
sum is kept exact (an int, or a Fraction with a power-of-two denominator: every float is
one) and rounded once, correctly, when it is released: the result is the float nearest
the exact sum, whatever the order or grouping of the terms.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt

Exact = int | Fraction
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_INT_EXACT = float(2**53)  # below this, a float sum of integers is exact in any order
_LOW = 26  # a 53-bit mantissa in two halves: bincount's float64 adds each half exactly


def exact_sums(values: F64, group: I64, n_groups: int) -> list[Exact]:
    """The exact sum of `values` in each group 0..n_groups-1 (finite values only)."""
    if not len(values):
        return [0] * n_groups
    if bool((np.floor(values) == values).all()) and float(np.abs(values).sum()) < _INT_EXACT:
        s = np.bincount(group, weights=values, minlength=n_groups)  # exact: see _INT_EXACT
        return [int(x) for x in s.tolist()]
    mant, exp = np.frexp(values)
    m = (mant * 2.0**53).astype(np.int64)  # value = m * 2**(exp - 53), exactly
    e = exp.astype(np.int64) - 53
    hi, lo = (m >> _LOW).astype(np.float64), (m & ((1 << _LOW) - 1)).astype(np.float64)
    e_min = int(e.min())
    num = [0] * n_groups
    for x in np.unique(e).tolist():
        sel = e == x
        # Each half is below 2**27 and a group has fewer than 2**26 terms: exact in float64.
        h = np.bincount(group[sel], weights=hi[sel], minlength=n_groups)
        lw = np.bincount(group[sel], weights=lo[sel], minlength=n_groups)
        shift = x - e_min
        for i in np.flatnonzero((h != 0) | (lw != 0)).tolist():
            num[i] += ((int(h[i]) << _LOW) + int(lw[i])) << shift
    scale = Fraction(2) ** e_min
    return [Fraction(n) * scale if n else 0 for n in num]


def exact_sums_float(values: F64, group: I64, n_groups: int) -> F64:
    """`exact_sums`, each correctly rounded to a float."""
    return np.array([float(x) for x in exact_sums(values, group, n_groups)], dtype=np.float64)
