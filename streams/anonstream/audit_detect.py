"""The audit's own identifier detector: a second pair of eyes on released text.

It shares nothing with the scrubber (``core/scrub.py``) on purpose, so that a gap in one
is not a gap in both. The scrubber scans one mapped view with regex passes and replaces
what it finds; this module only answers "is there an identifier in here?", by another
route: it first peels every layer a value can hide behind, keeping each layer,

1. the text as released;
2. NFKC, then format characters (Cf) and combining marks removed (after NFD), digits of
   any script made ASCII;
3. percent-decoded (``urllib.parse.unquote``, overlong UTF-8 read as what it spells)
   until it no longer changes; HTML entities, "\\u0040", "\\x40", "\\u{40}", "%u0040",
   "\\U00000040" and escaped backslashes decoded; and, each as a layer of its own,
   CSS ("\\40 ") and octal ("\\100") backslash escapes, UTF-7 ("+AEA-") and quoted-printable
   ("=2E", in a token with "=40");
4. IDNA "xn--" labels decoded from punycode; every run of 8+ base64/base64url/hex
   characters decoded, at each alignment, and the
   printable pieces of the result peeled again (three layers deep);

then tokenizes each layer and checks each token against known formats: an email shape
around every "@", IPv4 octets joined by one separator, IPv6 parsed by ``ipaddress``
(with the IPv4 address that 6to4, Teredo, NAT64 and mapped forms embed), digit groups
joined by separators checked for Luhn (cards) and length (phones, long numbers),
inet_aton() forms with a hex part ("0xC0.0xA8.0x01.0x0F", "0xC0A8010F") and a hex IPv4
host label ("c0a8010f.example.net"), and
pseudonym-like tokens (16+ hex, UUIDs, base64-like runs).

Why this module is long: it is the audit's whole second detector, every layer and every
format in one place, kept apart from core/scrub.py on purpose (see above); splitting the
layers from the formats would only spread one reading of a value over two files.

Cost is linear in the input (one tokenizing pass per layer, layers shrink as they are
decoded); values longer than MAX_CHECKED are reported as too long to check.
"""

from __future__ import annotations

import binascii
import codecs
import html
import ipaddress
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import unquote

__all__ = ["MAX_CHECKED", "embedded_ipv4_reason", "identifier_reasons"]

MAX_CHECKED = 8192  # released values are short (dims are cut to 80-200 characters)
_DEPTH = 3
_PCT_ROUNDS = 16

EMAIL = "an email address"
IPV4 = "an IP address"
CARD = "a card number"
PHONE = "a phone number"
LONG_NUMBER = "a long number"
HEX_TOKEN = "a hex token of 16+ characters (pseudonym-like)"
B64_TOKEN = "a base64-like token of 16+ characters (pseudonym-like)"
TOO_LONG = "a value too long to check"

_ENCODED_RUN = re.compile(r"[A-Za-z0-9+/=_\-]{8,}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8,}")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]+")
_DIGITS = re.compile(r"[0-9]+")
_NUMBER_SEPS = frozenset(" -._,/()+*:|~xX")
_IP4_SEPS = frozenset(" -._,/*+:|~xX")
# Joints a number seldom has in benign text: a chain with one needs 10+ digits to be a
# phone, so times ("10:15:00") and sizes ("1920x1080") pass.
_WEAK_SEPS = frozenset("*:|~xX")
_ESCAPE = re.compile(
    r"\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})|\\u\{([0-9A-Fa-f]{1,8})\}|=(40)(?=[0-9A-Za-z])"
    r"|%[uU]([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})"  # IIS "%u0040", Python "\\U00000040"
)
# Backslash escapes read two ways, each its own layer: CSS ("\\40 ", "\\000040", hex,
# one space closing it) and octal ("\\100", C and shells).
_CSS = re.compile(r"\\([0-9A-Fa-f]{1,6}) ?")
_OCT = re.compile(r"\\([0-3][0-7]{2})")
_UTF7 = re.compile(r"\+([A-Za-z0-9+/]{2,64})-?")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Quoted-printable: every "=XX" of a whitespace-free token that has "=40" (an "@").
_QP_TOKEN = re.compile(r"\S+")
_QP_RUN = re.compile(r"(?:=[0-9A-Fa-f]{2})+")
_BACKSLASHES = re.compile(r"\\{2,}")
_DROPPED = re.compile("[\x00\ufffd]+")
_IP6_RUN = re.compile(r"[0-9A-Fa-f:.]{3,}")
_HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{16,}(?![0-9A-Za-z])")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_CHAIN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{4,}+(?:[.\-: /_][0-9A-Fa-f]{4,}+)++")
_HEX_SPLIT = re.compile(r"[.\-: /_]")
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{16,}")
_B64_PIECES = re.compile(r"[+/=_\-]")
_LOCAL_CHARS = frozenset("._%+-'!#$&*=?^`{|}~")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212")


# ----------------------------------------------------------------------------- layers


def _plain(s: str) -> str:
    """NFKC, then no format characters, no combining marks, ASCII digits and dashes; any
    whitespace (and the blank braille cell) a space, tag characters the ASCII they mirror."""
    if s.isascii() and (s.isprintable() or not any(c.isspace() for c in s)):
        return s
    s = "".join(
        chr(ord(c) - 0xE0000) if 0xE0020 <= ord(c) <= 0xE007E
        else " " if c.isspace() or c == "\u2800" else c
        for c in s
    )  # fmt: skip
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", s))
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat in ("Cf", "Mn", "Mc", "Me"):
            continue
        if cat == "Nd" and not ch.isascii():
            ch = str(unicodedata.decimal(ch))
        elif ch in _DASHES:
            ch = "-"
        out.append(ch)
    return "".join(out)


def _read_overlong(err: UnicodeError) -> tuple[str, int]:
    """Decode error handler: an overlong UTF-8 form ("%C1%80", "%E0%81%80") is read as
    the character it spells, as lenient decoders do; other bad bytes are U+FFFD."""
    assert isinstance(err, UnicodeDecodeError)
    raw, at = err.object, err.start
    lead = raw[at]
    size = 2 if lead in (0xC0, 0xC1) else 3 if lead == 0xE0 else 4 if lead == 0xF0 else 0
    tail = raw[at + 1 : at + size]
    if size and len(tail) == size - 1 and all(0x80 <= b <= 0xBF for b in tail):
        cp = lead & (0x7F >> size)
        for b in tail:
            cp = cp << 6 | (b & 0x3F)
        if cp < (0x80, 0x800, 0x10000)[size - 2]:  # overlong indeed
            return chr(cp), at + size
    return "\ufffd", at + 1


codecs.register_error("anonstream-audit-overlong", _read_overlong)


def _unpercent(s: str) -> str:
    for _ in range(_PCT_ROUNDS):
        if "%" not in s:
            return s
        nxt = _plain(unquote(s, errors="anonstream-audit-overlong"))
        if nxt == s:
            return s
        s = nxt
    return s


def _escape_repl(m: re.Match[str]) -> str:
    cp = int(next(g for g in m.groups() if g is not None), 16)
    return chr(cp) if cp <= 0x10FFFF else m.group()


def _printable(cp: int, tok: str) -> str:
    return chr(cp) if 0x20 <= cp <= 0x7E else tok


def _utf7_repl(m: re.Match[str]) -> str:
    bits = "".join(f"{_B64_ALPHABET.index(c):06b}" for c in m.group(1))
    units = [int(bits[i : i + 16], 2) for i in range(0, len(bits) - 15, 16)]
    if units and all(0x20 <= u <= 0x7E for u in units):
        return "".join(map(chr, units))
    return m.group()


def _qp_repl(m: re.Match[str]) -> str:
    if "=40" not in m.group():
        return m.group()
    return _QP_RUN.sub(
        lambda r: bytes.fromhex(r.group().replace("=", "")).decode("utf-8", "replace"),
        m.group(),
    )


def _other_escapes(s: str) -> Iterator[str]:
    """Readings of ``s`` with CSS, octal, UTF-7 and quoted-printable escapes decoded."""
    if "\\" in s:
        yield _CSS.sub(lambda m: _printable(int(m.group(1), 16), m.group()), s)
        yield _OCT.sub(lambda m: _printable(int(m.group(1), 8), m.group()), s)
    if "+" in s:
        yield _UTF7.sub(_utf7_repl, s)
    if "=40" in s:
        yield _QP_TOKEN.sub(_qp_repl, s)


_UNTERMINATED_HEX_ENTITY = re.compile(r"&#[xX]0*([0-9A-Fa-f]{2})(?![0-9A-Fa-f]*;)")


def _unescape(s: str) -> str:
    """HTML entities, "\\u0040"/"\\x40" escapes and quoted-printable "=40" decoded; NUL and
    U+FFFD (what overlong or broken UTF-8 decodes to) dropped."""
    if "&" in s:
        # "&#x40example": "@" and "example" as a person reads it (html takes "&#x40e").
        s = html.unescape(_UNTERMINATED_HEX_ENTITY.sub(r"&#x\1;", s))
    if "\\" in s or "=" in s or "%" in s:
        # "\\\\u0040" (a JSON string escaped twice, or more) is "\\u0040" once read
        s = _ESCAPE.sub(_escape_repl, _BACKSLASHES.sub(r"\\", s))
    return _DROPPED.sub("", s)


def _base_decodings(run: str) -> Iterator[bytes]:
    std = run.rstrip("=").replace("-", "+").replace("_", "/")
    for start in range(4):
        body = std[start:]
        body = body[: len(body) // 4 * 4 + (len(body) % 4 if len(body) % 4 > 1 else 0)]
        if len(body) < 6:
            break
        try:
            raw = binascii.a2b_base64(body + "=" * (-len(body) % 4))
        except binascii.Error:
            continue
        yield raw
    for m in _HEX_RUN.finditer(run):
        h = m.group()
        for start in (0, 1):
            even = h[start : start + (len(h) - start) // 2 * 2]
            if even:
                yield bytes.fromhex(even)


_PUNY = re.compile(r"(?<![0-9A-Za-z-])[xX][nN]--[0-9A-Za-z-]{1,59}")


def _puny_repl(m: re.Match[str]) -> str:
    try:
        return m.group()[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return m.group()


def _layers(s: str, depth: int = 0) -> Iterator[tuple[str, int]]:
    """Each layer of ``s`` with the number of encodings peeled to reach it."""
    yield s, depth
    # IDNA labels: "xn--8hbffaaagihp" is a phone number in Arabic-Indic digits.
    if depth < _DEPTH and "-" in s and (uni := _PUNY.sub(_puny_repl, s)) != s:
        yield from _layers(uni, depth + 1)
    plain = _unpercent(_plain(s))
    if plain != s:
        yield plain, depth
    for _ in range(_DEPTH):  # "%26%2364%3B" -> "&#64;" -> "@"
        clean = _unpercent(_plain(_unescape(plain)))
        if clean == plain:
            break
        plain = clean
        yield plain, depth
    for other in _other_escapes(plain):
        if other != plain:
            yield _unpercent(_plain(_unescape(other))), depth
    if depth >= _DEPTH:
        return
    for m in _ENCODED_RUN.finditer(plain):
        for raw in _base_decodings(m.group()):
            for piece in _CONTROL.split(raw.decode("utf-8", "replace")):
                if len(piece) >= 5:
                    yield from _layers(piece, depth + 1)


# ----------------------------------------------------------------------------- formats


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _email(t: str, strict: bool) -> bool:
    """Some "@" with a local-part character (or a closing quote) before it and a domain
    label after it, up to three spaces on either side; in a decoded layer (``strict``), or
    with spaces or a quote, the domain needs a dot and a letter TLD."""
    at = t.find("@")
    while at != -1:
        left = at
        while left > 0 and at - left < 3 and t[left - 1] in " \t":
            left -= 1
        start = at + 1
        while start < len(t) and start - at <= 3 and t[start] in " \t":
            start += 1
        before = t[left - 1] if left else ""
        loose = strict or left != at or start != at + 1 or before == '"'
        if before and (before.isalnum() or before in _LOCAL_CHARS or before == '"'):
            end = start
            while end < len(t) and (t[end].isalnum() or t[end] in "-."):
                end += 1
            domain = t[start:end].strip(".")
            dotted = "." in domain and domain.rsplit(".", 1)[1].isalpha()
            if domain and domain[0].isalnum() and (dotted or not loose):
                return True
            if end < len(t) and t[end] == "[" and not loose:
                return True  # address literal "jane@[192.0.2.1]"
        at = t.find("@", at + 1)
    return False


def _number_reasons(t: str) -> set[str]:
    """Digit groups joined by one or two separator characters are one number."""
    found: set[str] = set()
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(t)]
    i = 0
    while i < len(groups):
        j = i
        while j + 1 < len(groups):
            gap = t[groups[j][1] : groups[j + 1][0]]
            if not (1 <= len(gap) <= 3 and set(gap) <= _NUMBER_SEPS):
                break
            j += 1
        chain = groups[i : j + 1]
        found |= _chain_reasons(t, chain)
        i = j + 1
    return found


def _chain_reasons(t: str, chain: list[tuple[int, int]]) -> set[str]:
    found: set[str] = set()
    digits = "".join(t[a:b] for a, b in chain)
    if any(b - a >= 6 for a, b in chain):
        found.add(LONG_NUMBER)
    gaps = [t[chain[x][1] : chain[x + 1][0]] for x in range(len(chain) - 1)]
    weak = any(set(g) & _WEAK_SEPS or (g[0] == " " and g.strip()) for g in gaps)
    gaps = [g.strip() or " " for g in gaps]
    # IPv4: four groups of 1-3 digits, <= 255, one separator character throughout, not
    # part of a longer run with that separator ("1.2.3.4.5" is a version).
    small = [b - a <= 3 and int(t[a:b]) <= 255 for a, b in chain]
    for k in range(len(chain) - 3):
        sep = gaps[k]
        if (
            sep in _IP4_SEPS
            and gaps[k + 1] == sep == gaps[k + 2]
            and all(small[k : k + 4])
            and (k == 0 or gaps[k - 1] != sep)
            and (k + 3 == len(gaps) or gaps[k + 3] != sep)
            and (sep != ":" or len(chain) == 4)
        ):
            found.add(IPV4)
            break
    leading_plus = chain[0][0] > 0 and t[chain[0][0] - 1] == "+"
    if 13 <= len(digits) <= 19 and _luhn(digits):
        found.add(CARD)
    elif len(digits) >= (10 if weak else 7) and (len(chain) > 1 or leading_plus):
        found.add(PHONE)
    return found


# inet_aton() forms with hex parts ("0xC0.0xA8.0x01.0x0F", "0x7f.1"), a lone 32-bit hex
# number ("0xC0A8010F"), and an IPv4 address in hex as the first label of a host name
# ("c0a8010f.example.net"). Tokens are taken whole between non-word characters.
_INET_TOKEN = re.compile(r"[0-9A-Za-z]++(?:\.[0-9A-Za-z]++)*+")
# A host: at the start, after "//" or a space, up to a "/", ":" or the end.
_HOST_AT = re.compile(r"(?:^|(?<=//)|(?<=\s))[0-9A-Za-z\-]++(?:\.[0-9A-Za-z\-]++)++(?=[/:]|\s|$)")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def _aton_part(p: str) -> int | None:
    low = p.lower()
    try:
        if low.startswith("0x"):
            return int(low[2:], 16) if 2 < len(low) <= 10 else None
        if low.startswith("0") and len(low) > 1:
            return int(low, 8)
        return int(low) if low.isdigit() else None
    except ValueError:
        return None


def _inet_reasons(t: str) -> set[str]:
    found: set[str] = set()
    if "0x" in t.lower():
        for m in _INET_TOKEN.finditer(t):
            parts = m.group().split(".")
            hexed = [p.lower().startswith("0x") for p in parts]
            if not any(hexed):
                continue
            if len(parts) == 1:
                if len(parts[0]) >= 8 and _aton_part(parts[0]) is not None:
                    found.add(LONG_NUMBER)
                continue
            for k in range(len(parts) - 1):  # a run of 2-4 parts that reads as inet_aton
                for n in range(min(4, len(parts) - k), 1, -1):
                    vals = [_aton_part(p) for p in parts[k : k + n]]
                    if (
                        any(hexed[k : k + n])
                        and all(v is not None and v <= 255 for v in vals[:-1])
                        and vals[-1] is not None
                        and vals[-1] < 256 ** (5 - n)
                    ):
                        found.add(IPV4)
    if "." in t:
        for m in _HOST_AT.finditer(t):
            labels = m.group().split(".")
            if any(
                _HEX8.fullmatch(label) and not label.isalpha() and not label.isdigit()
                for label in labels[:-2]
            ):
                found.add(IPV4)
    return found


def _ipv6(t: str) -> bool:
    """A non-trivial IPv6 address in some window of a hex-and-colon run."""
    if t.count(":") < 2:
        return False
    for m in _IP6_RUN.finditer(t):
        run = m.group()
        if run.count(":") < 2:
            continue
        colons = [i for i, c in enumerate(run) if c == ":"]
        cuts = [0] + [i + 1 for i in colons]
        ends = [*colons, len(run)]
        first = 0
        for a in cuts:
            while first < len(ends) and ends[first] < a + 3:
                first += 1
            for b in ends[first:]:
                if b - a > 45:
                    break
                window = run[a:b]
                if window.count(":") < 2 or ("::" not in window and window.count(":") < 6):
                    continue
                try:
                    ipaddress.IPv6Address(window)
                except ValueError:
                    continue
                if sum(c not in ":." for c in window) >= 3 and any(c.isdigit() for c in window):
                    return True
    return False


def _is_b64_like(run: str) -> bool:
    if run.endswith("="):
        return True
    mixed = sum(len(p) for p in _B64_PIECES.split(run) if p and not p.isalpha() and not p.isdigit())
    return mixed * 2 >= len(run)


def _hex_chain(t: str) -> bool:
    """Hex groups of 4+ joined by one separator, 16+ hex in all, letters and digits."""
    for m in _HEX_CHAIN.finditer(t):
        groups = _HEX_SPLIT.split(m.group())
        if m.end() < len(t) and t[m.end()].isalnum():
            groups = groups[:-1]  # the last group runs on into a word
        hexes = "".join(groups)
        if len(groups) > 1 and len(hexes) >= 16 and not hexes.isdigit() and not hexes.isalpha():
            return True
    return False


def _token_reasons(t: str) -> set[str]:
    if _HEX_TOKEN.search(t) or _UUID.search(t) or _hex_chain(t):
        return {HEX_TOKEN}
    if any(_is_b64_like(m.group()) for m in _B64_TOKEN.finditer(t)):
        return {B64_TOKEN}
    return set()


# ------------------------------------------------------------------------------- API


def embedded_ipv4_reason(network: str) -> list[str]:
    """For a released network ("2002:c000:200::/40"): is more than a /24 of an IPv4
    address inside it (6to4 /48, NAT64 /120...)? Empty if not."""
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return []
    if not isinstance(net, ipaddress.IPv6Network):
        return []
    addr = net.network_address
    n = int(addr)
    plen = net.prefixlen
    v4_bits = 0
    if addr.sixtofour is not None:
        v4_bits = min(32, max(0, plen - 16))
    elif n >> 96 == 0x2001_0000 or n >> 32 in (0xFFFF, 0x64FF9B << 64) or 0xFFFF < n < 1 << 32:
        v4_bits = max(0, plen - 96)  # Teredo, mapped, NAT64, compatible: the low 32 bits
    return [f"{IPV4} (IPv4 inside IPv6, {v4_bits} bits)"] if v4_bits > 24 else []


def identifier_reasons(s: str, tokens: bool = False) -> list[str]:
    """What identifiers ``s`` holds in any layer; empty when none. ``tokens`` also looks
    for pseudonym-like tokens (for dimension values, where they must never appear)."""
    if len(s) > MAX_CHECKED:
        return [TOO_LONG]
    found: set[str] = set()
    for layer, depth in _layers(s):
        # Random bytes decoded from a token can look like "x@y": strict there.
        if "@" in layer and _email(layer, strict=depth > 0):
            found.add(EMAIL)
        if any(c.isdigit() for c in layer):
            found |= _number_reasons(layer)
            found |= _inet_reasons(layer)
            if _ipv6(layer):
                found.add(IPV4)
        if tokens:
            found |= _token_reasons(layer)
    if "/" in s and EMAIL not in found:
        # An address cut over path segments ("jane.doe/@/example.com") or a base64 token
        # cut at a "/" on a 4-character boundary: emails only, strict (dates and words
        # over segments must not join into numbers or tokens).
        for layer, _ in _layers(s.replace("/", "")):
            if "@" in layer and _email(layer, strict=True):
                found.add(EMAIL)
                break
    order = (EMAIL, IPV4, CARD, PHONE, LONG_NUMBER, HEX_TOKEN, B64_TOKEN)
    return [r for r in order if r in found]
