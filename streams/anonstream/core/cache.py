"""Bounded caches of the core, and every limit in one table.

The hot path caches pure functions of values that repeat (pseudonyms, generalized
dimension values, scrubbed strings, period keys, timestamp parts). None of them may grow
with the stream, and none may change a result: a cache only saves recomputing. So each is
a `BoundedCache`, a plain dict (look-ups stay C-level, `map(cache.get, column)`) that empties
itself when the next entries would pass its limit; a miss after that is computed again and
gives the same value. Emptying beats LRU bookkeeping here: the hot values return within a
batch or two, and a dict has no per-hit cost.

Entries are raw values of events (emails, IPs, user agents) held in process memory only,
like the event being processed; nothing here is persisted or logged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# -- limits ------------------------------------------------------------------------------
# Pseudonyms of one privacy-unit field in one key period (core/unit.py): about 100 bytes an
# entry, so at most ~50 MB per field and period; half a million people per day per field
# is beyond one worker's share, so a day's people stay cached and each is hashed once.
PSEUDONYMS_PER_PERIOD = 500_000
# (key period, unit field) pairs with a pseudonym cache: events of a few periods are in
# flight at once (the current one, the one before for hopping windows and late events).
UNIT_PERIODS = 16
# Period keys and keyed hash states of a Pseudonymizer (core/keys.py): 32 bytes and a
# BLAKE2b state each; only a few periods are ever open at once, 64 covers replays of
# two months of daily keys without recomputing one HMAC per event.
PERIOD_KEYS = 64
# Distinct values of one dimension field (core/columns.py), raw value -> released value:
# user agents and URLs of one stream run to tens of thousands; 200,000 strings of up to a
# few hundred bytes each is tens of MB at worst, and generalizing a miss costs 10-300 us.
DIMENSION_VALUES = 200_000
# Kept and free-text values after scrubbing (core/policy.py): event types and service names
# repeat; free text mostly does not, so a small cache bounds what scrubbing cost it saves.
KEPT_VALUES = 50_000
# Heads (date and time to the second) and tails (fraction and offset) of RFC 3339 event
# times (core/decode.py TimestampCache): one head per second of event time, so 100,000 is
# more than a day of one stream's seconds.
TIMESTAMP_PARTS = 100_000

# Cell ids of dimension tuples, and back (core/engine.py): open windows keep their own cell
# names, so emptying this costs only re-hashing; half a million cells (~100 bytes each both
# ways) is far more than the cells of the windows open at once.
CELL_NAMES = 500_000

# Least-recently-used caches of the value functions (functools.lru_cache, which evicts
# one entry at a time; their hit rates are what the hot path lives on):
# IPv4/IPv6 prefixes that miss the /24 fast path (core/ipprefix.py); a stream's networks.
IP_PREFIXES = 16_384
# Parsed user agents per UserAgentGeneralizer (core/useragent.py): parsing costs 10-300 us
# and a site sees thousands of distinct agents, not millions.
USER_AGENTS = 10_000
# URL path segments and whole path templates (core/urls.py): pages repeat, ids in them
# do not, hence more room than for hosts.
URL_SEGMENTS = 65_536
URL_PATHS = 65_536
# URL and referrer hosts (core/urls.py): a stream links to thousands of sites.
URL_HOSTS = 16_384
# Band tables by their edges (core/bands.py): a pipeline has a handful of edge lists.
BAND_TABLES = 256


class BoundedCache(dict[K, V]):
    """A dict of at most about `limit` entries that empties itself (keeping its `pinned`
    entries) when more would not fit. Callers reserve room before adding: `make_room(n)`
    before n additions, so that nothing they read earlier in a batch is lost midway."""

    __slots__ = ("limit", "pinned")

    def __init__(self, limit: int, pinned: Mapping[K, V] | None = None) -> None:
        super().__init__(pinned or {})
        if limit < 1:
            raise ValueError("a cache limit must be at least 1")
        self.limit = limit
        self.pinned = dict(pinned or {})

    def make_room(self, n: int = 1) -> None:
        """Empty the cache, bar its pinned entries, if `n` more entries would pass the limit."""
        if len(self) + n > self.limit:
            self.clear()
            self.update(self.pinned)

    def put(self, key: K, value: V) -> V:
        """Add one entry (making room first) and return its value."""
        self.make_room()
        self[key] = value
        return value


def cached(fn: Callable[[K], V], limit: int) -> Callable[[K], V]:
    """`fn` through a `BoundedCache` of `limit` entries (fn must be pure)."""
    cache: BoundedCache[K, V] = BoundedCache(limit)
    get = cache.get

    def call(value: K) -> V:
        out = get(value)
        if out is None:
            out = cache.put(value, fn(value))
        return out

    return call
