"""Secret handling and keyed pseudonyms.

Pseudonyms are keyed BLAKE2b of the value under a per-period key derived from the master
secret, so that (a) nobody without the secret can enumerate emails or IPs back from them,
and (b) pseudonyms of two periods cannot be linked by anyone without the master secret:
period keys are derived from it, so retiring the master secret ends all linkability.
The master secret comes from the environment or a file, never from a pipeline file, and
is never logged: `MasterSecret.__repr__` hides it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import numpy.typing as npt

from anonstream.core.cache import PERIOD_KEYS, BoundedCache

SECRET_ENV = "ANONSTREAM_SECRET"
SECRET_FILE_ENV = "ANONSTREAM_SECRET_FILE"
MIN_SECRET_BYTES = 16

ROTATION_MS = {
    "hourly": 3_600_000,
    "daily": 86_400_000,
    "weekly": 7 * 86_400_000,
}


class SecretError(Exception):
    """The secret is missing or unusable. Messages never include the secret itself."""


@dataclass(frozen=True)
class MasterSecret:
    value: bytes = field(repr=False)
    source: str  # where it came from, safe to print: "env ANONSTREAM_SECRET", "file ..."
    throwaway: bool = False

    def __repr__(self) -> str:
        return f"MasterSecret(source={self.source!r}, throwaway={self.throwaway})"

    def fingerprint(self) -> str:
        """A short, non-reversible id to tell two secrets apart in audit records."""
        return hmac.new(self.value, b"anonstream/fingerprint/v1", hashlib.sha256).hexdigest()[:12]

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self.value, f"anonstream/{purpose}/v1".encode(), hashlib.sha256).digest()


def load_secret(
    env: dict[str, str] | None = None, *, allow_throwaway: bool = False
) -> MasterSecret:
    """Secret from ANONSTREAM_SECRET or ANONSTREAM_SECRET_FILE; a random one only in demo mode."""
    env = dict(os.environ) if env is None else env
    raw_value = env.get(SECRET_ENV)
    path = env.get(SECRET_FILE_ENV)
    if raw_value and path:
        raise SecretError(f"set only one of {SECRET_ENV} and {SECRET_FILE_ENV}, not both")
    if path:
        p = Path(path)
        try:
            data = p.read_bytes().strip()
        except OSError as exc:
            raise SecretError(f"cannot read {SECRET_FILE_ENV}={path}: {exc.strerror}") from None
        source = f"file {path}"
    elif raw_value:
        data = raw_value.strip().encode()
        source = f"env {SECRET_ENV}"
    elif allow_throwaway:
        return MasterSecret(secrets.token_bytes(32), "throwaway (demo mode)", throwaway=True)
    else:
        raise SecretError(
            f"no secret: set {SECRET_ENV} or {SECRET_FILE_ENV} (at least {MIN_SECRET_BYTES} "
            "bytes, e.g. `openssl rand -hex 32`); pseudonyms without a secret are reversible"
        )
    if len(data) < MIN_SECRET_BYTES:
        raise SecretError(f"the secret from {source} is shorter than {MIN_SECRET_BYTES} bytes")
    return MasterSecret(data, source)


class Pseudonymizer:
    """Keyed pseudonyms per (pipeline, period).

    This is the keyed function only: pseudonyms are cached once, by the privacy unit that
    asks for them (core/unit.py). What is kept here is per period: its key and a keyed
    hash state, both bounded (core/cache.py PERIOD_KEYS).
    """

    def __init__(
        self, secret: MasterSecret, pipeline: str, rotation_ms: int, cache_size: int = 0
    ) -> None:
        # cache_size: accepted for callers written when this class cached pseudonyms; the
        # one pseudonym cache is PrivacyUnit's now.
        del cache_size
        self._root = secret.derive(f"pseudonym/{pipeline}")
        self.rotation_ms = rotation_ms
        self._keys: BoundedCache[int, bytes] = BoundedCache(PERIOD_KEYS)
        # period -> keyed BLAKE2b state, never fed data
        self._keyed: BoundedCache[int, Any] = BoundedCache(PERIOD_KEYS)

    def period_of(self, ts_ms: int) -> int:
        return ts_ms // self.rotation_ms

    def period_key(self, period: int) -> bytes:
        key = self._keys.get(period)
        if key is None:
            key = self._keys.put(
                period, hmac.new(self._root, f"period/{period}".encode(), hashlib.sha256).digest()
            )
        return key

    def pseudonym(self, tag: str, value: str, ts_ms: int) -> int:
        """A 64-bit pseudonym of `value`, domain-separated by `tag` (the field name)."""
        return self.uncached(tag, value, ts_ms // self.rotation_ms)

    def _keyed_state(self, period: int) -> Any:
        keyed = self._keyed.get(period)
        if keyed is None:
            # The key block is hashed once per period; copies start from that state.
            keyed = self._keyed.put(
                period, hashlib.blake2b(key=self.period_key(period), digest_size=8)
            )
        return keyed

    def uncached(self, tag: str, value: str, period: int) -> int:
        """The pseudonym of `value` under the key of `period`."""
        return self.many(tag, [value], period)[0]

    def many(self, tag: str, values: list[str], period: int) -> list[int]:
        """`uncached` for many values of one tag and period."""
        copy = self._keyed_state(period).copy
        prefix = tag + "\x00"

        def one(value: str) -> int:
            h = copy()
            h.update((prefix + value).encode())
            return int.from_bytes(h.digest(), "little")

        return [one(v) for v in values]

    def pseudonym_hex(self, tag: str, value: str, ts_ms: int) -> str:
        return f"{self.pseudonym(tag, value, ts_ms):016x}"


class EventHasher:
    """Seeded 64-bit hash of event ids, for duplicate detection and for choosing which
    events of a heavy contributor count, without storing the ids.

    Event ids are not personal data, and these hashes never leave the process, so the fast
    non-cryptographic mmh3 is enough here; the seed comes from the secret so that nobody
    can craft ids that win the choice.
    """

    def __init__(self, secret: MasterSecret, pipeline: str) -> None:
        self._seed = int.from_bytes(secret.derive(f"event-id/{pipeline}")[:4], "little")

    def __call__(self, event_id: str) -> int:
        return int(mmh3.hash64(event_id, self._seed, signed=False)[0])

    def many(self, event_ids: list[str]) -> npt.NDArray[np.uint64]:
        """`__call__` for a whole batch with no Python call per id: the first 8 bytes of
        each x64 128-bit digest are exactly `hash64`'s first half."""
        digests = b"".join(map(mmh3.mmh3_x64_128_digest, map(str.encode, event_ids),
                               repeat(self._seed)))  # fmt: skip
        return np.frombuffer(digests, dtype="<u8")[::2].astype(np.uint64)
