"""Vectorised draws for the generator: a bounded Zipf sampler, categorical choices, Luhn-valid
test card numbers, UUIDs, hex tokens and RFC 3339 times in a few time zones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from anonstream.synthetic.vocabulary import EPOCH, TZS


class Zipf:
    """Bounded Zipf sampler over ``n`` items: rank ``k`` (1-based) has weight ``k**-s``."""

    def __init__(self, n: int, s: float, order: npt.NDArray[np.int64] | None = None) -> None:
        weights = np.arange(1, n + 1, dtype=np.float64) ** -s
        self.cdf = np.cumsum(weights / weights.sum())
        self.n = n
        # rank -> item id; identity when not given.
        self.order = order if order is not None else np.arange(n, dtype=np.int64)

    def sample(self, rng: np.random.Generator, m: int) -> npt.NDArray[np.int64]:
        ranks = np.searchsorted(self.cdf, rng.random(m), side="right")
        np.minimum(ranks, self.n - 1, out=ranks)
        return self.order[ranks]


def categorical(rng: np.random.Generator, weights: Sequence[float], m: int) -> list[int]:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, rng.random(m), side="right")
    np.minimum(idx, len(weights) - 1, out=idx)
    result: list[int] = idx.tolist()
    return result


def luhn_valid(number: str) -> bool:
    """True when ``number`` (digits only) passes the Luhn checksum."""
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_numbers(rng: np.random.Generator, m: int) -> list[str]:
    """``m`` Luhn-valid 16-digit card numbers of the form ``4000`` + 11 digits + check."""
    digits = np.zeros((m, 15), dtype=np.int64)
    digits[:, 0] = 4
    digits[:, 4:] = rng.integers(0, 10, size=(m, 11))
    # Once the check digit is appended, every other digit counting from the right of the
    # 15-digit body (positions 14, 12, ..., 0) is doubled.
    doubled = digits[:, ::-2] * 2
    doubled -= 9 * (doubled > 9)
    total = doubled.sum(axis=1) + digits[:, -2::-2].sum(axis=1)
    check = (-total) % 10
    body = ["".join(map(str, row)) for row in digits.tolist()]
    return [b + str(c) for b, c in zip(body, check.tolist(), strict=True)]


def uuid_strings(rng: np.random.Generator, m: int) -> list[str]:
    """``m`` RFC 4122 version-4 UUID strings drawn from ``rng``."""
    raw = rng.integers(0, 256, size=(m, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = raw.tobytes().hex()
    out = []
    for i in range(0, 32 * m, 32):
        out.append(
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
            f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        )
    return out


def hex_strings(rng: np.random.Generator, m: int, nbytes: int) -> list[str]:
    h = rng.integers(0, 256, size=m * nbytes, dtype=np.uint8).tobytes().hex()
    w = 2 * nbytes
    return [h[i : i + w] for i in range(0, len(h), w)]


def rfc3339(ms: int, tz_index: int) -> str:
    dt = EPOCH + timedelta(milliseconds=ms)
    if tz_index == 0:
        return dt.isoformat(timespec="milliseconds")[:-6] + "Z"
    return dt.astimezone(TZS[tz_index]).isoformat(timespec="milliseconds")
