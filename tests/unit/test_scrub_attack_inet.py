"""Red-team regressions: IPv4 addresses in the forms inet_aton() and browsers accept
("0xC0.0xA8.0x01.0x0F", "0xc0.0xa8.0x10f", "0xC0A8010F", "3232235791", octal
"0300.0250.01.017") and an IPv4 address in hex as a host label ("c0a8010f.example.net")
passed `keep`, URL segments, the URL/referrer host and the audit."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from anonstream.audit_detect import identifier_reasons
from anonstream.core.generalize import referrer_domain, url_template
from anonstream.core.scrub import scrub_identifiers, scrub_text

_FOUND = {"an IP address", "a long number", "a phone number", "a card number"}
_AROUND = st.text(alphabet="abcxyz ,;:!?()", max_size=12)
# Real host addresses: no 0.x.x.x, so every form has 8+ significant hex digits or 4 parts.
_ADDRS = st.integers(0x01000000, 0xFFFFFFFF)


def _part(value: int, style: str) -> str:
    return {"hex": f"0x{value:x}", "HEX": f"0X{value:X}", "oct": f"0{value:o}", "dec": str(value)}[
        style
    ]


@st.composite
def aton_forms(draw: st.DrawFn) -> str:
    """An address written as inet_aton() reads it, with at least one hex part (dotted), or
    as one hex / decimal number, or four zero-padded octal parts."""
    n = draw(_ADDRS)
    kind = draw(st.sampled_from(["dotted", "hex32", "dec32", "octal4"]))
    if kind == "hex32":
        return draw(st.sampled_from([f"0x{n:08x}", f"0x{n:08X}", f"0X{n:08x}"]))
    if kind == "dec32":
        return str(n)
    octets = list(ipaddress.IPv4Address(n).packed)
    if kind == "octal4":
        return ".".join(f"0{o:03o}" for o in octets)
    parts_n = draw(st.integers(2, 4))
    values = [*octets[: parts_n - 1], int.from_bytes(bytes(octets[parts_n - 1 :]), "big")]
    styles = [draw(st.sampled_from(["hex", "HEX", "oct", "dec"])) for _ in values]
    if not any(s in ("hex", "HEX") for s in styles):
        styles[draw(st.integers(0, len(styles) - 1))] = "hex"
    return ".".join(_part(v, s) for v, s in zip(values, styles, strict=True))


@settings(max_examples=400)
@given(aton_forms(), _AROUND, _AROUND)
def test_aton_forms_never_survive(value: str, pre: str, post: str) -> None:
    for scrub in (scrub_text, scrub_identifiers):
        out = scrub(f"{pre} {value} {post}")
        assert value not in out and "<" in out, (value, out)
    assert set(identifier_reasons(value)) & _FOUND, value
    assert set(identifier_reasons(f"{pre} {value} {post}")) & _FOUND, value
    segment = url_template(f"https://shop.example.com/u/{value}/orders")
    assert value not in segment and segment.startswith("shop.example.com/u/:"), segment
    assert url_template(f"https://{value}/x") == ":ip/x"


@settings(max_examples=300)
@given(_ADDRS, st.booleans(), st.sampled_from(["", "www.", "cdn."]))
def test_hex_ipv4_host_label(n: int, upper: bool, sub: str) -> None:
    label = f"{n:08X}" if upper else f"{n:08x}"
    assume(not label.isalpha() and not label.isdigit())  # words and :id are other cases
    host = f"{sub}{label}.example.net"
    assert referrer_domain(f"https://{host}/page") == f"{sub.removeprefix('www.')}:ip.example.net"
    assert url_template(f"https://{host}/page") == f"{sub}:ip.example.net/page"
    assert "an IP address" in identifier_reasons(host)
    assert "an IP address" in identifier_reasons(f"https://{host}/page")


def test_red_team_cases() -> None:
    for value in ["0xC0.0xA8.0x01.0x0F", "0xC0A8010F", "3232235791", "0300.0250.01.017"]:
        out = scrub_identifiers(f"from {value} today")
        assert value not in out, out
        assert set(identifier_reasons(value)) & _FOUND, value
    assert scrub_text("0xC0.0xA8.0x01.0x0F") == "<ip>"
    assert referrer_domain("https://c0a8010f.example.net/") == ":ip.example.net"
    assert url_template("https://c0a8010f.example.net/a") == ":ip.example.net/a"


def test_benign_lookalikes_stay() -> None:
    for value in [
        "0x1F4",  # a short hex constant
        "v0x1.2",
        "deadbeef",
        "version 1.2.3",
        "color 0xFF.0xGG",
        "c0a8010f",  # a bare 8-hex word in text (a short commit id) is not a host
        "cdn.example.com/static/js/main.3f2a1b4c.chunk.js",
    ]:
        assert scrub_text(value) == value, value
        assert identifier_reasons(value) == [], value
    assert referrer_domain("https://deadbeef.example.net/") == "deadbeef.example.net"
    assert url_template("https://shop.example.com/commit/c0a8010f") == (
        "shop.example.com/commit/c0a8010f"
    )
    assert url_template("https://shop.example.com/static/main.3f2a1b4c.chunk.js") == (
        "shop.example.com/static/main.3f2a1b4c.chunk.js"
    )


def _cost(fn: Callable[[str], object], value: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(value)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(
    "unit", ["0x1.", "0xC0A8010F.", "0x", "0x1 ", "c0a8010f.", "0x7f.0x0.0x0.0x1.", "00x"]
)
@pytest.mark.parametrize("fn", [scrub_identifiers, identifier_reasons], ids=["scrub", "audit"])
def test_hostile_runs_cost_a_bounded_ratio(fn: Callable[[str], object], unit: str) -> None:
    """A long run of each shape costs at most 20x a benign value of the same length (both
    measured here, min of several calls: no wall-clock limit)."""
    n = 8000
    benign = ("checkout step 3 of 4, page view 12 " * (n // 30))[:n]
    hostile = (unit * (n // len(unit) + 1))[:n]
    ratio = _cost(fn, hostile, 5) / _cost(fn, benign, 5)
    if ratio > 20:  # one longer look: noise only adds time
        ratio = _cost(fn, hostile, 15) / _cost(fn, benign, 15)
    assert ratio <= 20, (unit, ratio)
