"""Generalization of numbers to bands between a pipeline's edges."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from anonstream.core.cache import BAND_TABLES
from anonstream.core.markers import NAN_BAND


def _fmt_edge(edge: float) -> str:
    return str(int(edge)) if edge.is_integer() else repr(edge)


class Bands:
    """Half-open numeric bands over increasing ``edges``, with open-ended tails.

    Edges [0, 1000, 10000] give the labels "(-inf,0)", "[0,1000)", "[1000,10000)" and
    "[10000,inf)" (indices 0..3); a value equal to an edge falls in the band that edge
    opens. NaN has index -1 and label "NaN". Coarse bands instead of exact values stop
    a rare amount (bytes, durations, prices) from singling out an event.
    """

    __slots__ = ("_array", "edges", "labels")

    def __init__(self, edges: Sequence[float]) -> None:
        values = tuple(float(e) for e in edges)
        if not values:
            raise ValueError("edges must not be empty")
        if not all(math.isfinite(e) for e in values):
            raise ValueError("edges must be finite")
        if any(b <= a for a, b in pairwise(values)):
            raise ValueError("edges must be strictly increasing")
        self.edges: tuple[float, ...] = values
        names = [_fmt_edge(e) for e in values]
        inner = [f"[{a},{b})" for a, b in pairwise(names)]
        self.labels: tuple[str, ...] = (f"(-inf,{names[0]})", *inner, f"[{names[-1]},inf)")
        self._array = np.asarray(values, dtype=np.float64)

    def index(self, value: float) -> int:
        """Band index of one value: 0 .. len(edges), or -1 for NaN."""
        if value != value:  # NaN
            return -1
        return bisect.bisect_right(self.edges, value)

    def label(self, value: float) -> str:
        """Band label of one value (see the class docstring for the format)."""
        if value != value:
            return NAN_BAND
        return self.labels[bisect.bisect_right(self.edges, value)]

    __call__ = label

    def index_array(self, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Vectorised :meth:`index` (numpy.searchsorted); NaN gives -1."""
        arr = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self._array, arr, side="right")
        return np.where(np.isnan(arr), -1, idx).astype(np.intp, copy=False)

    def label_array(self, values: npt.ArrayLike) -> npt.NDArray[np.str_]:
        """Vectorised :meth:`label`."""
        table = np.asarray((*self.labels, NAN_BAND))
        return table[self.index_array(values)]  # index -1 picks NAN_BAND, the last entry


@lru_cache(maxsize=BAND_TABLES)
def _bands(edges: tuple[float, ...]) -> Bands:
    return Bands(edges)


def band(value: float, edges: Sequence[float]) -> str:
    """Label of the band ``value`` falls in; see :class:`Bands` (prefer it in loops)."""
    return _bands(tuple(edges)).label(value)


def band_index(values: npt.ArrayLike, edges: Sequence[float]) -> npt.NDArray[np.intp]:
    """Vectorised band indices (0 .. len(edges), -1 for NaN) via numpy.searchsorted."""
    return _bands(tuple(edges)).index_array(values)
