"""Generalization of user-agent strings to browser family + major version / OS family."""

from __future__ import annotations

import re
from functools import _CacheInfo, _lru_cache_wrapper, lru_cache

import ua_parser
from ua_parser import Domain, PartialResult, Resolver, load_builtins, load_lazy_builtins

from anonstream.core.cache import USER_AGENTS
from anonstream.core.markers import OTHER
from anonstream.core.scrub import (
    scrub_identifiers,
)

_UA_DOMAINS = Domain.USER_AGENT | Domain.OS
_UA_MAX_LEN = 1024  # longer strings are crafted; parse only a prefix to bound regex cost
_FAMILY_MAX_LEN = 48
_MAJOR_RE = re.compile(r"[0-9]{1,4}")  # a 5+ digit "version" is more likely an id


@lru_cache(maxsize=1)  # building the matchers costs ~0.3 s: once per process
def _default_resolver() -> Resolver:
    """Build (once per process) the fastest resolver ua-parser 1.x finds.

    Mirrors ua_parser's own default: ``BestAvailableResolver`` is the Rust-backed
    ``ua_parser.regex.Resolver`` when ua-parser-rs is importable (then the lazy
    matchers suffice, the patterns are compiled by the Rust side), else re2, else the
    pure-Python one, which needs the eagerly compiled matchers. ua-parser's own
    result cache is not used: results are cached as final strings in the generalizer.
    """
    if ua_parser.BestAvailableResolver is ua_parser.BasicResolver:
        matchers = load_builtins()
    else:
        matchers = load_lazy_builtins()
    return ua_parser.BestAvailableResolver(matchers)


def _safe_family(family: str | None) -> str:
    """A parsed family name, or "Other" if it is empty, odd, or carries an identifier.

    Families may be captured from the UA text itself ("(\\S+bot)"-style rules), so a
    crafted UA could smuggle an email or a number through them.
    """
    if not family:
        return OTHER
    family = family.strip()
    if (
        not family
        or len(family) > _FAMILY_MAX_LEN
        or not family.isprintable()
        or "/" in family
        or scrub_identifiers(family) != family
    ):
        return OTHER
    return family


class UserAgentGeneralizer:
    """Map a User-Agent string to "<browser family> <major> / <os family>".

    Examples: "Chrome 120 / Windows", "Firefox 121 / Mac OS X", "Mobile Safari 17 / iOS".
    Unknown families are "Other"; an unknown (or implausible, 5+ digit) major version is
    omitted ("curl 8 / Other", "Other / Other"). Nothing else from the UA survives.
    Parsing costs 10-300 µs, so results are kept in a per-instance LRU cache of
    ``cache_size`` entries (UA strings repeat heavily). Thread-safe.
    """

    __slots__ = ("_cached", "_resolver")

    def __init__(self, cache_size: int = USER_AGENTS, resolver: Resolver | None = None) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._resolver: Resolver = resolver if resolver is not None else _default_resolver()
        self._cached: _lru_cache_wrapper[str] = lru_cache(maxsize=cache_size)(self._generalize)

    def __call__(self, ua: str) -> str:
        return self._cached(ua)

    @property
    def resolver_name(self) -> str:
        """Qualified class name of the resolver in use (to check the accelerator is on)."""
        cls = type(self._resolver)
        return f"{cls.__module__}.{cls.__qualname__}"

    def cache_info(self) -> _CacheInfo:
        """Hits, misses, maxsize and currsize of the result cache."""
        return self._cached.cache_info()

    def _generalize(self, ua: str) -> str:
        if not isinstance(ua, str) or not ua or ua.isspace():
            return f"{OTHER} / {OTHER}"
        text = ua[:_UA_MAX_LEN]
        try:
            result: PartialResult = self._resolver(text, _UA_DOMAINS)
        except UnicodeError:  # lone surrogates cannot cross into the Rust resolver
            text = text.encode("utf-8", "replace").decode("utf-8")
            result = self._resolver(text, _UA_DOMAINS)
        browser = OTHER
        major = ""
        if result.user_agent is not None:
            browser = _safe_family(result.user_agent.family)
            raw_major = result.user_agent.major
            if browser != OTHER and raw_major and _MAJOR_RE.fullmatch(raw_major):
                major = f" {int(raw_major)}"
        os_family = _safe_family(result.os.family) if result.os is not None else OTHER
        return f"{browser}{major} / {os_family}"
