"""Reading the values of a release record for the audit: numbers, times, content digests,
every string with its path, and masking any value that looks like an identifier before it
is named in a finding (a finding never echoes a suspected identifier)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from anonstream.audit_detect import embedded_ipv4_reason, identifier_reasons

STAR = "*"
WindowKey = tuple[str, int, str, str, str]  # pipeline, pipeline_version, output, start, end

# Fields whose whole value is pinned by a strict pattern (hex id, RFC 3339 time): skipped
# when they match it, as the detector would misread the dates as phone numbers.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_PINNED_FIELDS = {
    "release_id": re.compile(r"[0-9a-f]{32}"),
    "window_start": _TIME_RE,
    "window_end": _TIME_RE,
}
_NUM = r"-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
# Band labels ("[1000,10000)", "(-inf,0)") hold configured edges, not data.
_BAND_RE = re.compile(rf"[\[(](?:-inf|{_NUM}),(?:inf|{_NUM})\)")


def mask(s: str) -> str:
    return s[:2] + "…"


def is_band(s: str) -> bool:
    return s == "NaN" or _BAND_RE.fullmatch(s) is not None


def is_ip_prefix(s: str) -> bool:
    """A generalized network ("203.0.113.0/24"), not a single host, is a valid dimension."""
    if "/" not in s:
        return False
    try:
        net = ipaddress.ip_network(s, strict=True)
    except ValueError:
        return False
    return net.prefixlen < net.max_prefixlen


def detect_identifiers(s: str, tokens: bool) -> list[str]:
    """What identifiers the audit's own detector (audit_detect, independent of the
    scrubber) sees in `s`, also encoded or disguised; empty when none. A generalized
    network is fine unless it carries more than a /24 of an IPv4 address (6to4...)."""
    if is_band(s):
        return []
    if is_ip_prefix(s):
        return embedded_ipv4_reason(s)
    return identifier_reasons(s, tokens=tokens)


def safe(s: object) -> str:
    """Text of a value for a message: as is when harmless, masked when it looks like an id."""
    text = s if isinstance(s, str) else str(s)
    if len(text) > 80 or detect_identifiers(text, tokens=True):
        return mask(text)
    return text


def fmt_dims(dims: dict[str, str]) -> str:
    return "{" + ", ".join(f"{safe(k)}={safe(v)}" for k, v in dims.items()) + "}"


def as_number(x: object) -> int | float | None:
    return x if isinstance(x, int | float) and not isinstance(x, bool) else None


def parse_time(s: object) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def content_digest(rec: dict[str, Any]) -> bytes:
    try:
        raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: fall back to the stdlib encoder
        raw = json.dumps(rec, sort_keys=True, default=str).encode()
    return hashlib.blake2b(raw, digest_size=16).digest()


def key_path(parts: Iterable[object]) -> str:
    return ".".join(safe(p) for p in parts) or "(record)"


def walk_strings(obj: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every dict key and string value, with the path of keys leading to it."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            k = str(key)
            yield (*path, k), k
            pinned = _PINNED_FIELDS.get(k) if not path else None
            if pinned is not None and isinstance(value, str) and pinned.fullmatch(value):
                continue
            yield from walk_strings(value, (*path, k))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from walk_strings(value, (*path, str(i)))


def window_name(key: WindowKey) -> str:
    p, v, o, s, e = key
    return f"{p} v{v} output {o} window {s}..{e}"
