"""Generalization of IP addresses to network prefixes (IPv4 /24, IPv6 /48 by default)."""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache

from anonstream.core.cache import IP_PREFIXES

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # as ipaddress: no leading 0
_V4_24_RE = re.compile(rf"({_OCTET}\.{_OCTET}\.{_OCTET})\.{_OCTET}")
_V4_ONES = (1 << 32) - 1
_V6_ONES = (1 << 128) - 1
IP_MAX_LEN = 100  # longest accepted ip value (a full IPv6 with an IPv4 tail and a zone)


def _embedded_v4(n: int) -> int | None:
    """The IPv4 address an IPv6 address carries, if it is of a kind that carries one:
    IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96 (not :: or ::1), 6to4 2002::/16,
    Teredo 2001::/32 (the client address, stored inverted) and NAT64 64:ff9b::/96 and
    64:ff9b:1::/48 (RFC 6052 layout: the "u" octet at bits 64-71 is skipped)."""
    if n >> 32 == 0xFFFF or (n >> 32 == 0 and n > 0xFFFF):
        return n & _V4_ONES
    if n >> 112 == 0x2002:
        return (n >> 80) & _V4_ONES
    if n >> 96 == 0x2001_0000:
        return (n & _V4_ONES) ^ _V4_ONES
    if n >> 32 == 0x0064_FF9B_0000_0000_0000_0000:
        return n & _V4_ONES
    if n >> 80 == 0x0064_FF9B_0001:
        return ((n >> 64) & 0xFFFF) << 16 | ((n >> 40) & 0xFFFF)
    return None


def _v4_text(n: int) -> str:
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@lru_cache(maxsize=IP_PREFIXES)
def _ip_prefix_slow(value: str, v4_bits: int, v6_bits: int) -> str | None:
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        # inet_pton/inet_ntop (C) are ~5x faster than the ipaddress module for IPv6.
        try:
            packed = socket.inet_pton(socket.AF_INET6, text.partition("%")[0])  # no zone
        except (OSError, ValueError):
            return None
        n = int.from_bytes(packed, "big")
        # An address that carries an IPv4 address ("::ffff:a.b.c.d", 6to4, Teredo,
        # NAT64) is generalized as that IPv4 address: a /48 of 6to4 is a whole IPv4.
        if (v4 := _embedded_v4(n)) is not None:
            return f"{_v4_text(v4 & (_V4_ONES ^ (_V4_ONES >> v4_bits)))}/{v4_bits}"
        net = n & (_V6_ONES ^ (_V6_ONES >> v6_bits))
        out = socket.inet_ntop(socket.AF_INET6, net.to_bytes(16, "big"))
        if "." in out:  # inet_ntop writes "::a.b.c.d" forms; keep ipaddress's spelling
            out = str(ipaddress.IPv6Address(net))
        return f"{out}/{v6_bits}"
    try:
        n = int(ipaddress.IPv4Address(text))
    except ValueError:
        return None
    return f"{_v4_text(n & (_V4_ONES ^ (_V4_ONES >> v4_bits)))}/{v4_bits}"


def ip_prefix(value: str, v4_bits: int = 24, v6_bits: int = 48) -> str | None:
    """Network prefix of an IP address in CIDR form, or None if ``value`` is not an IP.

    "203.0.113.77" -> "203.0.113.0/24"; "2001:db8:abcd:12:1::5" -> "2001:db8:abcd::/48".
    IPv6 that embeds an IPv4 address (IPv4-mapped "::ffff:1.2.3.4", 6to4, Teredo, NAT64)
    is generalized as that IPv4 address. Surrounding whitespace, brackets and an IPv6
    zone id are tolerated; a value longer than IP_MAX_LEN is not an IP. A /24 keeps the
    routing-level location
    while dropping the host part that identifies a subscriber.
    """
    if not (0 <= v4_bits <= 32 and 0 <= v6_bits <= 128):
        raise ValueError(f"prefix lengths out of range: v4_bits={v4_bits}, v6_bits={v6_bits}")
    if not isinstance(value, str) or len(value) > IP_MAX_LEN:
        return None
    # Fast path, the overwhelmingly common case: plain dotted IPv4 at /24 (one regex).
    if v4_bits == 24 and (m := _V4_24_RE.fullmatch(value)) is not None:
        return m.group(1) + ".0/24"
    return _ip_prefix_slow(value, v4_bits, v6_bits)
