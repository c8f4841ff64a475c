"""Identifiers in disguise (issue 13): through the shipped pipelines, and past the audit.

Every identifier class (emails, local parts, IPv4, IPv6, cards, phones, visitor ids) is
wrapped in each disguise (format characters, combining accents, full-width forms,
percent-encoding 1-3 times, base64, base64url, hex, digit separators, IPv6 that embeds
the IPv4 address), alone and combined, and planted in every kept or generalized field of
the shipped pipelines (k lowered to 2 so the planted cell is released). A reader who
decodes every layer of every released string must not find the identifier. Planted by
hand in a release record, the audit's own detector must flag it.

All identifiers are fake: example.com/.org/.net, 192.0.2.0/24 and the other
documentation networks, 2001:db8::/32, random Luhn-valid numbers starting with 4, and
+1 NPA-555-01xx phone numbers (reserved for fiction).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from anonstream.audit import audit_records
from anonstream.audit_detect import identifier_reasons
from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import Pipeline, parse_pipeline
from anonstream.runtime.replay import replay

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
SECRET = load_secret({"ANONSTREAM_SECRET": "d" * 32})
DAY = 86_400_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
PROPS = settings(
    max_examples=int(os.environ.get("DISGUISE_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------------------------------- identifiers


@dataclass(frozen=True)
class Ident:
    kind: str
    text: str
    forbidden: tuple[str, ...]  # lowercase forms no decoded release layer may contain
    digits: str | None = None  # digits no release layer may contain (digits only)
    ipv4: tuple[int, int, int, int] | None = None


def _luhn_complete(body: str) -> str:
    for c in "0123456789":
        digits = body + c
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError


_LOCAL = r"[a-z][a-z0-9]{2,7}[._+\-][a-z0-9]{2,7}"
_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]


@st.composite
def identifiers(draw: st.DrawFn) -> Ident:
    kind = draw(st.sampled_from(["email", "local", "ipv4", "ipv6", "card", "phone", "visitor"]))
    if kind in ("email", "local"):
        local = draw(st.from_regex(_LOCAL, fullmatch=True))
        if kind == "local":  # a local part with letters outside ASCII
            local = local[:2] + draw(st.sampled_from(["é", "ü", "ñ", "ø", "ç"])) + local[2:]
        address = f"{local}@{draw(st.sampled_from(_DOMAINS))}"
        return Ident(kind, address, (_fold(address).lower(), _fold(local).lower()))
    if kind == "ipv4":
        net = draw(st.sampled_from([(192, 0, 2), (198, 51, 100), (203, 0, 113)]))
        quad = (*net, draw(st.integers(1, 254)))
        return Ident(kind, ".".join(map(str, quad)), (".".join(map(str, quad)),), ipv4=quad)
    if kind == "ipv6":
        tail = draw(st.integers(1, (1 << 96) - 1))
        ip = ipaddress.IPv6Address((0x20010DB8 << 96) | tail)
        return Ident(kind, str(ip), (str(ip), ip.exploded))
    if kind == "card":
        body = "4" + draw(st.text("0123456789", min_size=14, max_size=14))
        card = _luhn_complete(body)
        return Ident(kind, card, (), digits=card)
    if kind == "phone":
        area = draw(st.integers(201, 989))
        line = f"01{draw(st.integers(0, 99)):02d}"
        return Ident(kind, f"+1 {area} 555 {line}", (), digits=f"{area}555{line}")
    vid = draw(st.text("0123456789abcdef", min_size=16, max_size=16))
    assume(any(c.isdigit() for c in vid) and any(c.isalpha() for c in vid))
    return Ident(kind, vid, (vid,))


# --------------------------------------------------------------------------- disguises

_CF = ["\u200b", "\u200c", "\u200d", "\u00ad", "\u200e", "\u200f", "\u2060", "\ufeff", "\u202a"]
_MARKS = ["\u0301", "\u0300", "\u0308", "\u0327", "\u030a", "\u0323"]
_SEPS = [" ", "-", ".", "_", ",", "/", "*", "+", ":", "|", "~", "x", " . "]
_IP4_SEPS = ["_", ",", "-", "/", " ", "*", "+", ":", "|", "~", "x", " . "]


def _with_separators(draw: st.DrawFn, ident: Ident) -> str:
    if ident.kind == "card":
        sep = draw(st.sampled_from(_SEPS))
        return sep.join(ident.text[i : i + 4] for i in range(0, len(ident.text), 4))
    if ident.kind == "phone":
        sep = draw(st.sampled_from(_SEPS))
        return sep.join(ident.text.split(" "))
    assert ident.ipv4 is not None
    sep = draw(st.sampled_from(_IP4_SEPS))
    return sep.join(map(str, ident.ipv4))


def _embedded(draw: st.DrawFn, ident: Ident) -> str:
    assert ident.ipv4 is not None
    a, b, c, d = ident.ipv4
    n = (a << 24) | (b << 16) | (c << 8) | d
    hi, lo = n >> 16, n & 0xFFFF
    inv = n ^ 0xFFFFFFFF
    forms = [
        f"::ffff:{ident.text}",
        f"::ffff:{hi:x}:{lo:x}",
        f"2002:{hi:x}:{lo:x}::1",  # 6to4
        f"2002:{hi:x}:{lo:x}:17::",
        f"2001:0:c000:201:8000:63bf:{inv >> 16:x}:{inv & 0xFFFF:x}",  # Teredo
        f"64:ff9b::{ident.text}",  # NAT64
        f"64:ff9b::{hi:x}:{lo:x}",
    ]
    return draw(st.sampled_from(forms))


def _format_chars(draw: st.DrawFn, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        chars.insert(draw(st.integers(0, len(chars))), draw(st.sampled_from(_CF)))
    return "".join(chars)


def _combining(draw: st.DrawFn, text: str) -> str:
    positions = [i for i, c in enumerate(text) if c.isalnum()]
    chosen = set(draw(st.lists(st.sampled_from(positions), min_size=1, max_size=4)))
    out = "".join(
        c + (draw(st.sampled_from(_MARKS)) if i in chosen else "") for i, c in enumerate(text)
    )
    return unicodedata.normalize("NFD", out)


def _full_width(draw: st.DrawFn, text: str) -> str:
    every = draw(st.booleans())
    return "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and (every or draw(st.booleans())) else c
        for c in text
    )


def _percent(draw: st.DrawFn, text: str) -> str:
    times = draw(st.integers(1, 3))
    every = draw(st.booleans())  # every byte, or only what a URL encoder would escape
    for _ in range(times):
        text = "".join(
            "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
            if every or not (c.isascii() and c.isalnum())
            else c
            for c in text
        )
    return text


def _b64(draw: st.DrawFn, text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(draw: st.DrawFn, text: str) -> str:
    out = base64.urlsafe_b64encode(text.encode()).decode()
    return out.rstrip("=") if draw(st.booleans()) else out


def _hex(draw: st.DrawFn, text: str) -> str:
    out = text.encode().hex()
    return out.upper() if draw(st.booleans()) else out


CHAR_DISGUISES: dict[str, Callable[[st.DrawFn, str], str]] = {
    "format": _format_chars,
    "combining": _combining,
    "full-width": _full_width,
}
ENCODINGS: dict[str, Callable[[st.DrawFn, str], str]] = {
    "percent": _percent,
    "base64": _b64,
    "base64url": _b64url,
    "hex": _hex,
}


@dataclass(frozen=True)
class Disguised:
    ident: Ident
    how: tuple[str, ...]
    text: str


@st.composite
def disguised(draw: st.DrawFn) -> Disguised:
    """An identifier in 1-3 disguises: a structural one (separators, embedding), a
    character-level one, an encoding; at least one of them."""
    ident = draw(identifiers())
    how: list[str] = []
    text = ident.text
    structural: list[str] = []
    if ident.kind in ("card", "phone", "ipv4"):
        structural.append("separators")
    if ident.kind == "ipv4":
        structural.append("embedded")
    use_structural: bool = draw(st.booleans())
    if structural and use_structural:
        pick = draw(st.sampled_from(structural))
        text = (_with_separators if pick == "separators" else _embedded)(draw, ident)
        how.append(pick)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(CHAR_DISGUISES)))
        text = CHAR_DISGUISES[name](draw, text)
        how.append(name)
    encodings = sorted(ENCODINGS)
    if not how or draw(st.booleans()):
        name = draw(st.sampled_from(encodings))
        text = ENCODINGS[name](draw, text)
        how.append(name)
    if draw(st.integers(0, 3)) == 0:  # format characters inside the encoded form too
        text = _format_chars(draw, text)
        how.append("format")
    return Disguised(ident, tuple(how), text)


# -------------------------------------------------------------------- a decoding reader


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", s))
    return "".join(c for c in s if unicodedata.category(c) not in ("Cf", "Mn", "Mc", "Me"))


def _reader_decodings(token: str) -> Iterator[str]:
    for alphabet in (token, token.replace("-", "+").replace("_", "/")):
        core = alphabet.rstrip("=")
        for off in range(4):
            chunk = core[off:]
            chunk = chunk[: len(chunk) - (len(chunk) % 4 == 1)]
            try:
                raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4))
            except (binascii.Error, ValueError):
                continue
            yield raw.decode("utf-8", "ignore")
    for m in re.finditer(r"[0-9A-Fa-f]{6,}", token):
        for off in (0, 1):
            h = m.group()[off:]
            yield bytes.fromhex(h[: len(h) // 2 * 2]).decode("utf-8", "ignore")


def reader_layers(s: str, depth: int = 0) -> set[str]:
    """Everything a reader gets from ``s`` by undoing encodings (a test-local decoder,
    written apart from both the scrubber and the audit detector)."""
    layers = {s}
    text = _fold(s)
    layers.add(text)
    for _ in range(6):
        nxt = _fold(unquote(text))
        if nxt == text:
            break
        layers.add(nxt)
        text = nxt
    if depth < 3:
        for layer in list(layers):
            for m in re.finditer(r"[A-Za-z0-9+/_=\-]{6,}", layer):
                for dec in _reader_decodings(m.group()):
                    if len(dec) >= 4:
                        layers |= reader_layers(dec, depth + 1)
    return layers


def _ipv4_re(quad: tuple[int, int, int, int]) -> re.Pattern[str]:
    return re.compile(r"(?<!\d)" + r"\D{1,3}".join(map(str, quad)) + r"(?!\d)")


def leaks(ident: Ident, extra: tuple[str, ...], strings: list[str]) -> list[str]:
    """What forms of ``ident`` a reader finds in ``strings`` (empty: none)."""
    found = []
    ip_re = _ipv4_re(ident.ipv4) if ident.ipv4 is not None else None
    for s in strings:
        for layer in reader_layers(s):
            low = _fold(layer).lower()
            found += [f for f in (*ident.forbidden, *extra) if f in low]
            if ident.digits is not None and ident.digits in re.sub(r"\D", "", low):
                found.append("digits")
            if ip_re is not None and ip_re.search(low):
                found.append("ipv4")
            if ident.ipv4 is not None:
                found += [
                    "embedded ipv4"
                    for m in re.finditer(r"[0-9a-f:.]{6,}", low)
                    if _embeds(m.group(), ident.ipv4)
                ]
    return found


def _embeds(text: str, quad: tuple[int, int, int, int]) -> bool:
    try:
        ip = ipaddress.IPv6Address(text.strip(":") if text.count("::") == 0 else text)
    except ValueError:
        return False
    target = ipaddress.IPv4Address(".".join(map(str, quad)))
    n = int(ip)
    inside = {ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None}
    inside.add(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    return target in inside


# ---------------------------------------------------------------------------- pipelines


def _shipped(name: str, dims: list[str]) -> Pipeline:
    """A shipped pipeline with every kept or generalized field as a dimension and k = 2
    (the smallest k there is), so that a value two people share is released."""
    doc: dict[str, Any] = yaml.safe_load((PIPELINES / f"{name}.yaml").read_text())
    doc["k"] = 2
    doc["dimensions"] = dims
    for out in doc.get("outputs") or []:
        out.pop("dimensions", None)
        out.pop("k", None)
    return parse_pipeline(doc, f"{name} (k=2, every field a dimension)")


WEB = _shipped("web_activity", ["type", "url", "user_agent", "referrer", "campaign_id", "ip"])
USAGE = _shipped("service_usage", ["type", "service", "user_agent"])


def _web_event(i: int, person: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}", "ts": T0 + i * 1000, "type": "page_view",
        "visitor_id": f"v-test-{person}", "ip": "198.51.100.7", "user_agent": UA,
        "url": "https://shop.example.com/home", "referrer": "https://www.example.org/",
        "campaign_id": "spring", "duration_ms": 100,
    }  # fmt: skip


def _usage_event(i: int, person: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}", "ts": T0 + i * 1000, "type": "email_sent",
        "service": "gateway", "user_email": f"person{person}@example.com",
        "user_agent": UA, "quantity": 1, "bytes": 100,
    }  # fmt: skip


Placement = tuple[Pipeline, str, Callable[[str], str]]

PLACEMENTS: dict[str, Placement] = {
    "web type": (WEB, "type", lambda x: x),
    "web type in text": (WEB, "type", lambda x: f"signup {x} done"),
    "web campaign_id": (WEB, "campaign_id", lambda x: f"cmp-{x}"),
    "web url path segment": (WEB, "url", lambda x: f"https://shop.example.com/u/{x}/orders"),
    "web url relative": (WEB, "url", lambda x: f"/u/{x}"),
    "web url query": (WEB, "url", lambda x: f"https://shop.example.com/s?q={x}"),
    "web url host label": (WEB, "url", lambda x: f"https://{x}.example.com/"),
    "web referrer path": (WEB, "referrer", lambda x: f"https://www.example.org/{x}"),
    "web referrer host": (WEB, "referrer", lambda x: f"https://{x}.example.org/"),
    "web user_agent": (WEB, "user_agent", lambda x: f"Mozilla/5.0 ({x}) Chrome/120.0"),
    "web user_agent product": (WEB, "user_agent", lambda x: f"{x}/1.0"),
    "web ip": (WEB, "ip", lambda x: x),
    "usage type": (USAGE, "type", lambda x: x),
    "usage service": (USAGE, "service", lambda x: f"svc {x}"),
    "usage user_agent": (USAGE, "user_agent", lambda x: f"{x} bot/2.1"),
}


def _strings(obj: object) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def release(placement: Placement, value: str | None, fast: bool = True) -> list[dict[str, Any]]:
    """Two people, same events, ``value`` planted in the placement's field; through the
    column-wise fast path, or (``fast=False``) the per-event reference path only."""
    pipeline, field, template = placement
    make = _web_event if pipeline is WEB else _usage_event
    events = []
    for i in range(4):
        ev = make(i, i % 2)
        if value is not None:
            ev[field] = template(value)
        events.append(orjson.dumps(ev))
    # fast=False: every message takes the per-event path (as in test_columns)
    engine = PipelineEngine(pipeline, SECRET, clock_ms=lambda: T0 + DAY, fast_path=fast)
    out: list[dict[str, Any]] = []
    replay(engine, events, out.append)
    return out


BENIGN_TEXT = {
    name: "\n".join(s for rec in release(p, None) for s in _strings(rec))
    for name, p in PLACEMENTS.items()
}


@PROPS
@given(st.data(), st.sampled_from(sorted(PLACEMENTS)))
def test_no_release_holds_a_disguised_identifier(data: st.DataObject, where: str) -> None:
    d = data.draw(disguised())
    benign = _fold(BENIGN_TEXT[where]).lower()
    extra = tuple(f for f in (_fold(d.text).lower(),) if len(f) >= 8)
    assume(not any(f in benign for f in (*d.ident.forbidden, *extra)))
    records = release(PLACEMENTS[where], d.text)
    aggregates = [r for r in records if r["kind"] == "aggregate"]
    assert aggregates, "the planted cell must be released (k = 2, two people)"
    strings = [s for rec in records for s in _strings(rec)]
    assert leaks(d.ident, extra, strings) == [], (where, d.ident.kind, d.how)
    # One implementation: the per-event path releases exactly the same.
    assert release(PLACEMENTS[where], d.text, fast=False) == records


# ---------------------------------------------------------------------------- the audit


def _record(value: str) -> dict[str, Any]:
    return {
        "kind": "aggregate", "schema_version": 1, "pipeline": "web_activity",
        "pipeline_version": 1, "output": "default",
        "window_start": "2026-11-30T10:00:00Z", "window_end": "2026-11-30T11:00:00Z",
        "dims": {"type": "page_view", "url": value}, "metrics": {"events": 30, "users": 12},
        "k": 10, "rollup_level": 0, "noise": None, "release_id": "0" * 32,
    }  # fmt: skip


@PROPS
@given(disguised())
def test_audit_detector_flags_every_disguised_identifier(d: Disguised) -> None:
    assert identifier_reasons(d.text, tokens=True), (d.ident.kind, d.how)
    assert identifier_reasons(f"x.example.com/u/{d.text}/orders", tokens=True), d.how


@settings(max_examples=40, deadline=None)
@given(disguised())
def test_audit_fails_a_release_with_a_planted_identifier(d: Disguised) -> None:
    report = audit_records([_record(d.text)])
    assert any(f.rule == "identifier" for f in report.findings), (d.ident.kind, d.how)
    assert d.ident.text not in report.render() + report.to_json()


def test_audit_detector_does_not_use_the_scrubber() -> None:
    import subprocess
    import sys

    code = (
        "import sys, anonstream.audit_detect, anonstream.audit;"
        "print('anonstream.core.scrub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "value",
    [
        "page_view",
        "shop.example.com/u/:email/orders/:num",
        "Chrome 120 / Windows",
        "x.com/blog/iphone15-pro-review-2024",
        "(too long)",
        "cmp-2026-11-a",
    ],
)
def test_audit_detector_passes_generalized_values(value: str) -> None:
    assert identifier_reasons(value, tokens=True) == []


@PROPS
@given(disguised())
def test_the_reader_sees_through_every_disguise(d: Disguised) -> None:
    """The oracle above is worth something only if it finds the raw disguised value."""
    assert leaks(d.ident, (), [d.text]), (d.ident.kind, d.how)
