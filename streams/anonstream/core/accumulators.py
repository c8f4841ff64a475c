"""Distinct privacy units per cell: exact up to a limit, then HyperLogLog.

The release counts with `distinct_count` (one pass over a cell's rows). Its mergeable
form, a reference that nothing in the product needs, lives in tests/unit/test_accumulators.py:
there `merge` is property-tested associative and commutative and `distinct_count` equal
to it however the units are split, which is what makes batches, partitions and roll-ups
one and the same problem.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

HLL_P = 12  # 4096 registers: about 1.6 % standard error, 4 KiB per sketch
_HLL_M = 1 << HLL_P
_HLL_ALPHA = 0.7213 / (1 + 1.079 / _HLL_M)


def _hll_registers(values: U64) -> npt.NDArray[np.uint8]:
    """HyperLogLog registers of 64-bit values that are already uniformly distributed
    (keyed-hash pseudonyms), so no further hashing is needed."""
    regs = np.zeros(_HLL_M, dtype=np.uint8)
    if len(values) == 0:
        return regs
    idx = (values >> np.uint64(64 - HLL_P)).astype(np.int64)
    rest = (values << np.uint64(HLL_P)) | np.uint64((1 << HLL_P) - 1)  # sentinel bits
    # rank = leading zeros of `rest` + 1, by binary search on the bits (exact, vectorised)
    lz = np.zeros(len(values), dtype=np.int64)
    x = rest
    for s in (32, 16, 8, 4, 2, 1):
        top_empty = (x >> np.uint64(64 - s)) == 0
        lz += np.where(top_empty, s, 0)
        x = np.where(top_empty, x << np.uint64(s), x)
    rank = (lz + 1).astype(np.uint8)
    np.maximum.at(regs, idx, rank)
    return regs


def _hll_estimate(regs: npt.NDArray[np.uint8]) -> int:
    est = _HLL_ALPHA * _HLL_M * _HLL_M / float(np.sum(np.power(2.0, -regs.astype(np.float64))))
    zeros = int(np.count_nonzero(regs == 0))
    if est <= 2.5 * _HLL_M and zeros:
        est = _HLL_M * np.log(_HLL_M / zeros)
    return round(est)


def distinct_count(units: U64, exact_limit: int) -> int:
    """What the mergeable count of tests/unit/test_accumulators.py, fed `units` in any
    split, would report, in one pass: HyperLogLog registers of a union are the maxima of
    its parts' registers, so the order and grouping of the adds cannot change the result."""
    exact = np.unique(units)
    if len(exact) <= exact_limit:
        return len(exact)
    return max(_hll_estimate(_hll_registers(exact.astype(np.uint64))), exact_limit + 1)
