"""Free-text scrubbing: replace direct identifiers with typed placeholders.

Free-text fields (search terms, error messages, form values) routinely carry emails, IP
addresses, card and phone numbers. They must never reach a released aggregate, so
:func:`scrub_text` replaces them with ``<email>``, ``<ip>``, ``<card>``, ``<phone>`` and,
as a conservative catch-all for anything else that looks like an identifier, every
remaining run of six or more digits with ``<num>``.

Detection sees through disguises. The text is scanned in a *detection view*: compatibility
forms folded (the NFKD half of NFKC: full-width letters, ligatures), format characters
(category Cf: zero-width spaces and joiners, soft hyphens, direction marks) and combining
marks removed, digits of any script and dashes made ASCII, then decoded to a fixed point:
percent escapes ("%2540" -> "%40" -> "@"; overlong UTF-8 "%C1%80" too), "%u0040",
escaped backslashes ("\\\\u0040" -> "\\u0040" -> "@"), "\\U00000040", "\\u0040", "\\x40",
"\\u{40}", CSS ("\\40 ", "\\000040") and octal ("\\100") escapes, UTF-7 ("+AEA-"), HTML
entities and quoted-printable in a token with an "=40" ("jane=2Edoe=40example=2Ecom").
Runs of 10+ base64/base64url/hex characters are decoded (at every alignment) and the
printable text inside is scanned the same way, up to three layers deep. A find is
replaced in the *original* text: the characters it came from (for an identifier inside
an encoded token, the whole token) become the placeholder.

Everything runs in time linear in the input: the patterns are single character classes,
anchored to the start of their run or bounded in length, and the email scanner is a
hand-written pass over the "@" runs (no backtracking regex). Callers cap the length of
what they pass in (see docs/input-contract.md). Plain ASCII without "%" and without a
10+ character base64-looking run skips the view (it would be the identity); a property
test checks the skip changes nothing.

The scrubber errs on the side of removing too much: dates such as ``2024-01-15`` or
decimal numbers with many digits come out as ``<phone>``/``<num>``.
"""

from __future__ import annotations

import binascii
import html
import re
import socket
import unicodedata
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "CARD",
    "EMAIL",
    "ID",
    "IP",
    "NUM",
    "PHONE",
    "contains_email",
    "contains_ip",
    "detection_view",
    "identifier_kinds",
    "identifier_spans",
    "luhn_ok",
    "scrub_identifiers",
    "scrub_text",
    "split_id_spans",
]

EMAIL = "<email>"
IP = "<ip>"
CARD = "<card>"
PHONE = "<phone>"
NUM = "<num>"
ID = "<id>"

Span = tuple[int, int, str]  # [start, end) and the placeholder that replaces it

# ------------------------------------------------------------------------------- emails

_LOCAL = r"\w.!#$%&'*+^~?{|}`\-"  # RFC 5322 atext but "/" and "=" (kept as separators)
# A maximal run of local-part characters and "@" that holds an "@". The look-behind pins
# each attempt to the start of a run, so the cost is linear in the run length.
_AT_RUN_RE = re.compile(rf"(?<![{_LOCAL}@])[{_LOCAL}@]*@[{_LOCAL}@]*")
_DOMAIN_RE = re.compile(r"[\w\-]+(?:\.[\w\-]+)*")
_IP_LITERAL_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# Inside decoded tokens, where random bytes can look like "x@y", an address needs a
# dotted domain with a letter TLD (random bytes almost never give one).
_STRICT_EMAIL_RE = re.compile(r".*@[ \t]{0,3}[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}", re.DOTALL)


# Looser forms a mail client or a person would still read as an address: a quoted local
# part ('"jane doe"@example.com') and spaces around the "@" ("jane.doe @ example.com").
# They need a dotted domain. Each attempt starts at a '"' (bounded) or at the start of a
# local-part run (possessive), so the cost stays linear.
_LOOSE_EMAIL_RE = re.compile(
    rf'(?:"[^"\n]{{1,64}}"|(?<![{_LOCAL}])[{_LOCAL}]++)[ \t]{{0,3}}@[ \t]{{0,3}}'
    r"[\w\-]++(?:\.[\w\-]++)++"
)


def _email_spans(text: str) -> list[Span]:
    """Addresses in ``text``: from the start of the local part to the end of the domain
    after the *last* "@" that has one, so "x@jane@example.com" is one match (stopping at
    the first domain would leave "jane" glued to the rest, a local part in the clear)."""
    out: list[Span] = []
    for m in _AT_RUN_RE.finditer(text):
        run = m.group()
        local = len(run) - len(run.lstrip("@"))
        if local == len(run):
            continue
        end = -1
        if run[-1] == "@" and (lit := _IP_LITERAL_RE.match(text, m.end())) is not None:
            end = lit.end()
        else:
            at = run.rfind("@", local)
            while at != -1:
                d = _DOMAIN_RE.match(run, at + 1)
                if d is not None:
                    end = m.start() + d.end()
                    break
                at = run.rfind("@", local, at)
        if end != -1:
            out.append((m.start() + local, end, EMAIL))
    if '"' in text or " @" in text or "@ " in text or "\t" in text:
        out += [(m.start(), m.end(), EMAIL) for m in _LOOSE_EMAIL_RE.finditer(text)]
    return out


# -------------------------------------------------------------------------- IP and numbers

# Leading zeros are accepted ("010.001.002.003"): over-matching is the safe failure.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
# Dotted, or the same separator throughout ("192_0_2_1", "192-0-2-1" as in host names).
# One separator class plus a back-reference (each copy of the pattern gets its own group
# name): a single alternative keeps the per-digit cost low.
_IP4_SEP_CH = r"[._,\-/ ]"


def _ip4_pat(name: str) -> str:
    o = _OCTET
    return (
        rf"(?<![0-9]){o}(?P<{name}>{_IP4_SEP_CH}){o}(?P={name}){o}(?P={name}){o}"
        rf"(?![0-9]|(?P={name})[0-9])"
    )


# IPv6 *candidate*: a run of hex groups with at least two colons (plus an optional
# dotted IPv4 tail). Candidates are validated, and searched for an embedded address,
# in Python (see _find_ip6): a full IPv6 grammar in the regex would be slow and
# would still not cope with addresses glued to surrounding hex-looking text.
_IP6_PAT = r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]*+(?::[0-9A-Fa-f]*+){2,}(?:\.[0-9]{1,3}){0,3}"

# A cluster of digit groups joined by single separators (space, ".", "-", "_", ",", "/",
# optionally followed by a space, or brackets): "+44 20 7946 0958", "(555) 123-4567",
# "4111_1111_1111_1111", "555.123.4567", or a plain digit run: one number, whatever joins
# it. A group never starts an IPv4 address: "5 1.2.3.4" or "(1.2.3.4" must not be
# absorbed into a short, harmless-looking cluster (the address is matched on its own).
_SEP_CH = r"[ .\-_,/]"
_SEP = rf"(?:{_SEP_CH} ?|\){_SEP_CH}?|{_SEP_CH}?\()"
_CLUSTER_PAT = rf"(?:\+ ?)?\(?(?!{_ip4_pat('s1')})\d++(?:{_SEP}(?!{_ip4_pat('s2')})\d++)*+"

# Numbers are found in two steps: a coarse "span" regex that starts with a plain
# character class (so the regex engine can skip ahead quickly), then the precise
# patterns on spans long enough to matter. Spans shorter than 6 characters hold neither
# an IPv4 address nor a 6-digit run, and are not even matched.
_SPAN_RE = re.compile(r"[+(\d][\d .()\-_,/]{5,}")
_NUM_RE = re.compile(rf"(?P<ip4>{_ip4_pat('s0')})|(?P<num>{_CLUSTER_PAT})")
_IP6_RE = re.compile(_IP6_PAT)
_DIGIT_RE = re.compile(r"\d")
_NON_DIGIT_RE = re.compile(r"\D")
_RUN6_RE = re.compile(r"\d{6,}")
_CARD_SHAPE_RE = re.compile(rf"\d+(?:{_SEP_CH} ?\d+)*")

# Digit groups joined by separators the cluster pattern does not take ("*", "+", ":",
# "|", "~", "x", or any separator with spaces around it: "4111*1111*1111*1111",
# "192x0x2x55", "192 . 0 . 2 . 55"). Judged in Python, after the passes above, and only
# when a chain has such a joint, so times ("10:15:00"), sizes ("1920x1080") and ratios
# stay: Luhn and length decide a card, 10+ digits a phone, four octets with one joint an
# IPv4 address (with ":" only as the whole chain: "10:15:00:12" is, a MAC is not).
_CHAIN_RE = re.compile(r"(?<!\d)\d++(?:(?: *+[*+:|~xX.\-_,/] *+| ++)\d++)++")
_JOINT_RE = re.compile(r"\D+")
_WEAK_JOINTS = frozenset("*+:|~xX")
_WEAK_PHONE_DIGITS = 10


def _weak_chain_spans(chain: str, base: int, out: list[Span]) -> None:
    raw = _JOINT_RE.findall(chain)
    joints = [j.strip() or " " for j in raw]
    if not any(
        j in _WEAK_JOINTS or (j != " " and len(r) > 1) for j, r in zip(joints, raw, strict=True)
    ):
        return  # only ordinary joints: the cluster pattern has judged this already
    groups = _DIGIT_RUN_RE.findall(chain)
    digits = "".join(groups)
    for k in range(len(groups) - 3):
        sep = joints[k]
        if (
            joints[k + 1] == sep == joints[k + 2]
            and all(len(g) <= 3 and int(g) <= 255 for g in groups[k : k + 4])
            and (k == 0 or joints[k - 1] != sep)
            and (k + 3 == len(joints) or joints[k + 3] != sep)
            and (sep != ":" or len(groups) == 4)
        ):
            out.append((base, base + len(chain), IP))
            return
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        out.append((base, base + len(chain), CARD))
    elif len(digits) >= _WEAK_PHONE_DIGITS:
        out.append((base, base + len(chain), PHONE))


_DIGIT_RUN_RE = re.compile(r"\d+")
_OCTAL = frozenset("01234567")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_IP6_MAX_LEN = 45  # longest textual IPv6 ("ffff:...:255.255.255.255")
_IP6_MAX_GROUPS = 8  # at most 8 colons between the first and last group of one address


def luhn_ok(digits: str) -> bool:
    """Return True if ``digits`` (decimal digits only) passes the Luhn checksum.

    Only the checksum is checked, not the length; any non-digit makes it False.
    Separates real card numbers from arbitrary 13-19 digit runs (which become
    ``<phone>``/``<num>`` instead, so nothing leaks either way).
    """
    if not digits or not digits.isdecimal():
        return False
    total = 0
    odd = True
    for ch in reversed(digits):
        d = int(ch)  # int() also understands non-ASCII decimal digits
        total += d if odd else _DOUBLED[d]
        odd = not odd
    return total % 10 == 0


# IPv4 as inet_aton() and browsers read it, with hex parts: "0xC0.0xA8.0x01.0x0F",
# "0xc0.0xa8.0x10f", "0x7f.1" (the last part fills the bytes left), or one 32-bit hex
# number "0xC0A8010F". Decimal and octal forms are digit runs the number passes take
# already ("3232235791" is <num>, "0300.0250.01.017" <phone>). Each attempt starts after
# a non-word character and takes at most four bounded parts, possessively: linear.
_INET_PART = r"(?:0[xX][0-9A-Fa-f]{1,8}+|[0-9]{1,10}+)"
_INET_RE = re.compile(rf"(?<![0-9A-Za-z.]){_INET_PART}(?:\.{_INET_PART}){{0,3}}+(?![0-9A-Za-z])")
_INET_HEX_MIN = 6  # hex digits of a lone "0x..." number that make it one (as 6+ digits)


def _inet_value(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        return int(part[2:], 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8) if set(part) <= _OCTAL else None
    return int(part)


def _inet_spans(t: str) -> list[Span]:
    out: list[Span] = []
    for m in _INET_RE.finditer(t):
        parts = m.group().split(".")
        if not any(p[:2] in ("0x", "0X") for p in parts):
            continue  # decimal and octal: the number passes judge them
        if len(parts) == 1:
            if len(parts[0]) - 2 >= _INET_HEX_MIN:
                out.append((m.start(), m.end(), NUM))
            continue
        values = [_inet_value(p) for p in parts]
        last = values[-1]
        if (
            all(v is not None and v <= 255 for v in values[:-1])
            and last is not None
            and last < 256 ** (5 - len(parts))
        ):
            out.append((m.start(), m.end(), IP))
    return out


def _number_spans(text: str, base: int, out: list[Span]) -> None:
    """What a digit cluster at ``base`` is; short clusters (the vast majority) are kept."""
    digits = text if text.isdecimal() else _NON_DIGIT_RE.sub("", text)
    n = len(digits)
    if n < 6:
        return
    plain = n == len(text)
    if 13 <= n <= 19 and (plain or _CARD_SHAPE_RE.fullmatch(text)) and luhn_ok(digits):
        out.append((base, base + len(text), CARD))
    elif not plain and n >= 7:  # separated digit groups are one number
        out.append((base, base + len(text), PHONE))
    elif plain:
        out.append((base, base + len(text), NUM))
    else:  # six digits in groups ("2026-11", "1,299.00"): only a plain 6-run inside
        out += [(base + m.start(), base + m.end(), NUM) for m in _RUN6_RE.finditer(text)]


def _ip6_plausible(window: str) -> bool:
    """A real, non-trivial IPv6 address (needs a digit and 3+ hex chars to skip "a::b")."""
    colons = window.count(":")
    if len(window) > _IP6_MAX_LEN or colons < 2:
        return False
    # A lone ":" at either end is never valid (cheap rejects for "1:1:1:..." runs).
    if (window[0] == ":" and window[1] != ":") or (window[-1] == ":" and window[-2] != ":"):
        return False
    # Uncompressed forms have exactly 7 colons (6 before a dotted IPv4 tail); checking
    # this first skips the costly ValueError for times ("10:30:00") and MAC addresses.
    compressed = window.count("::")
    if compressed > 1 or ":::" in window:
        return False
    if not compressed and colons != (6 if "." in window else 7):
        return False
    if not any(c.isdigit() for c in window):
        return False
    if len(window) - window.count(":") - window.count(".") < 3:
        return False
    try:
        socket.inet_pton(socket.AF_INET6, window)  # C; same grammar as ipaddress here
    except (OSError, ValueError):
        return False
    return True


def _find_ip6(cand: str, pos: int) -> tuple[int, int] | None:
    """Leftmost-longest valid IPv6 address in ``cand[pos:]``, as (start, end) offsets.

    The first/last group may be glued to surrounding hex-looking text ("a2001:db8::1",
    "::2001:db8::1"), so windows over the colon-separated groups are tried, trimming the
    outer groups to 4 characters. Groups are split lazily and at most 7 windows are
    tried per start group, so the cost is linear in the distance to the hit.
    """
    n = len(cand)
    spans: list[tuple[int, int]] = []  # (start, end) of each ":"-separated group
    nxt = pos
    a = 0
    while True:
        while len(spans) <= a + _IP6_MAX_GROUPS and nxt <= n:
            colon = cand.find(":", nxt)
            end = n if colon == -1 else colon
            spans.append((nxt, end))
            nxt = end + 1
        if a + 2 >= len(spans):
            return None
        a_start, a_end = spans[a]
        s0 = max(a_start, a_end - 4)
        for b in range(min(len(spans) - 1, a + _IP6_MAX_GROUPS), a + 1, -1):
            b_start, b_end = spans[b]
            e0 = b_end if "." in cand[b_start:b_end] else min(b_end, b_start + 4)
            if _ip6_plausible(cand[s0:e0]):
                return s0, e0
        a += 1


def _ip6_spans(text: str) -> list[Span]:
    out: list[Span] = []
    for m in _IP6_RE.finditer(text):
        cand = m.group()
        if "::" not in cand and cand.count(":") < 6:
            continue  # no window can be valid: times, MACs, "a:b:c" (fast exit)
        pos = 0
        while (hit := _find_ip6(cand, pos)) is not None:
            out.append((m.start() + hit[0], m.start() + hit[1], IP))
            pos = hit[1]
            if cand[pos : pos + 2] != "::":
                pos += 1  # no address starts with a single ":"
    return out


# Identifier-like tokens: UUIDs, long hex, and long tokens that mix letters and digits
# (cookie ids, session tokens). A whole run of token characters is judged at once, so ids
# glued together with "-" or "_" go as one.
_TOKEN_RUN = re.compile(r"[0-9A-Za-z_-]{12,}")
_HEXISH = frozenset("0123456789abcdefABCDEF-")


# The same id cut into hex groups ("8f3a2b91.c4d7e6a5", "8f3a-2b91-c4d7-e6a5",
# "8F3A2B91:C4D7E6A5", "/u/8f3a2b91/c4d7e6a5"): whole-word groups of 4+ hex joined by one
# separator, 16+ hex in all with letters and digits, are one id. Possessive and anchored
# at a word start: linear.
_HEX_CHAIN_RE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{4,}+(?:[.\-: /_][0-9A-Fa-f]{4,}+)++")
_HEX_CHAIN_MIN = 16


def _hex_chain_spans(t: str) -> list[Span]:
    out: list[Span] = []
    for m in _HEX_CHAIN_RE.finditer(t):
        a, b = m.span()
        if b < len(t) and t[b].isalnum():  # the last group runs on into a word
            b = a + max(m.group().rfind(c) for c in ".-: /_")
        chain = t[a:b]
        hexes = [c for c in chain if c.isalnum()]
        if (
            len(hexes) >= _HEX_CHAIN_MIN
            and any(c.isdigit() for c in hexes)
            and any(c.isalpha() for c in hexes)
            and not chain.isalnum()
        ):
            out.append((a, b, ID))
    return out


def _is_id_token(run: str) -> bool:
    has_digit = any(c.isdigit() for c in run)
    return has_digit and ((len(run) >= 16 and any(c.isalpha() for c in run)) or set(run) <= _HEXISH)


def _mask(text: str, spans: list[Span]) -> str:
    """``text`` with each span blanked by NULs (same length, so offsets stay valid)."""
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for a, b, _ in sorted(spans):
        if a < pos:
            a = pos
        parts.append(text[pos:a])
        parts.append("\x00" * (b - a))
        pos = max(pos, b)
    parts.append(text[pos:])
    return "".join(parts)


def _has_digit(t: str) -> bool:
    if t.isascii():
        # Single-character ``in`` tests are memchr-fast.
        return any(d in t for d in "0123456789")
    return _DIGIT_RE.search(t) is not None


def _shape_spans(t: str, ids: bool) -> list[Span]:
    """Identifier shapes in already-normalized text: emails, then IPv6 (a digit cluster
    just before an address must not split it), then numbers and IPv4, then (``ids``)
    opaque id tokens. Each step sees the earlier finds blanked out."""
    found = _email_spans(t) if "@" in t else []
    if not _has_digit(t):
        return found
    if t.count(":") >= 2:
        t = _mask(t, found)
        found += _ip6_spans(t)
    if "0x" in t or "0X" in t:
        t = _mask(t, found)
        found += _inet_spans(t)
    t = _mask(t, found)
    if ids:  # before numbers: the digit groups of a split id are no phone number
        found += _hex_chain_spans(t)
        t = _mask(t, found)
    for m in _SPAN_RE.finditer(t):
        span = m.group()
        for n in _NUM_RE.finditer(span):
            start = m.start() + n.start()
            if n.lastgroup == "ip4":
                found.append((start, m.start() + n.end(), IP))
            else:
                _number_spans(n.group(), start, found)
    t = _mask(t, found)
    for m in _CHAIN_RE.finditer(t):
        _weak_chain_spans(m.group(), m.start(), found)
    if ids:
        t = _mask(t, found)
        found += [
            (m.start(), m.end(), ID) for m in _TOKEN_RUN.finditer(t) if _is_id_token(m.group())
        ]
    return found


# ------------------------------------------------------------------------ detection view

_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_TABLE_MAX = 65_536  # distinct characters remembered (bounded memory)


def _fold_char(c: str) -> str:
    """What one character is for detection: compatibility-decomposed, format characters
    and combining marks dropped, any-script digits and dashes made ASCII. Any whitespace
    (tab, newline, U+2028, Ogham space...) and the blank braille cell are a space, so
    "4111\n1111\n1111\n1111" is a card as "4111 1111 1111 1111" is; Unicode tag
    characters (U+E0020-U+E007E, invisible "ASCII smuggling") are the ASCII they mirror."""
    cp = ord(c)
    if 0xE0020 <= cp <= 0xE007E:
        return chr(cp - 0xE0000)
    if c.isspace() or c == "\u2800":
        return " "
    if unicodedata.category(c) in ("Cf", "Cs") or c in "\x00\ufffd":
        return ""  # also NUL and U+FFFD (broken or overlong UTF-8: "%C0%80")
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", c):
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Mc", "Me", "Cf"):
            continue
        dec = unicodedata.decimal(ch, None)
        out.append(str(dec) if dec is not None else "-" if ch in _DASHES else ch)
    return "".join(out)


class _FoldTable(dict[int, str]):
    """str.translate table, filled on first sight of each character."""

    def __missing__(self, cp: int) -> str:
        out = _fold_char(chr(cp))
        if len(self) < _TABLE_MAX:
            self[cp] = out
        return out


class _LenTable(dict[int, str]):
    """Length of each character's fold, as a character (for a C-speed translate)."""

    def __missing__(self, cp: int) -> str:
        out = chr(len(_FOLD[cp]))
        if len(self) < _TABLE_MAX:
            self[cp] = out
        return out


class _DecodedTable(dict[int, str]):
    """The fold for decoded bytes, where control characters and U+FFFD (undecodable
    bytes) also become NUL, which no pattern crosses: one C-speed translate."""

    def __missing__(self, cp: int) -> str:
        out = "\x00" if _UNPRINTABLE_RE.fullmatch(chr(cp)) else _FOLD[cp]
        if len(self) < _TABLE_MAX:
            self[cp] = out
        return out


_FOLD = _FoldTable()
_LENS = _LenTable()
_DECODED = _DecodedTable()

_PCT_RUN_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# Escapes decoded in the view besides percent runs: IIS "%u0040", escaped backslashes (a
# run of them is one: "\\\\u0040", a JSON string escaped twice, is "\\u0040"), Python
# "\\U00000040", "\\u0040", "\\x40", "\\u{40}", CSS
# ("\\40 ", "\\000040") and octal ("\\100") backslash escapes, UTF-7 ("+AEA-"),
# quoted-printable runs ("=40", "=2E": only in a token that has "=40" before a letter or
# digit, so "a=40&b" stays), HTML entities. Every alternative is bounded or a single
# character-class run: linear.
_ESCAPE_RE = re.compile(
    r"(?:%[0-9A-Fa-f]{2})+|%[uU][0-9A-Fa-f]{4}|\\\\++|\\U[0-9A-Fa-f]{8}"
    r"|\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}|\\u\{[0-9A-Fa-f]{1,8}\}"
    r"|\\[0-9A-Fa-f]{1,6} ?|\+[A-Za-z0-9+/]++-?|(?:=[0-9A-Fa-f]{2})+"
    r"|&(?:#0*[0-9]{1,7}|#[xX]0*(?:[0-9A-Fa-f]{2}(?![0-9A-Fa-f]*;)|[0-9A-Fa-f]{1,6})"
    r"|[A-Za-z][A-Za-z0-9]{1,31});?"
)
# An unterminated hex entity is read as two digits ("&#x40example": "@" and "example", as
# a person reads it; a browser takes "&#x40e", "Ў"); one closed by ";" as all its digits.
_QP_AT_RE = re.compile(r"=40(?=[0-9A-Za-z=])")
_NON_SPACE_RE = re.compile(r"\S+")
_PCT_ROUNDS = 8  # decoding passes; deeper percent nesting is refused (see _view)
# Plain ASCII text is its own view unless it holds an escape, a NUL (dropped), ...
_VIEW_TRIGGER_RE = re.compile(r"[%&\\\x00\t\n\r\x0b\x0c\x1c-\x1f]|=40|\+[A-Za-z0-9+/]")
# ASCII characters the fold changes: NUL (dropped) and whitespace other than " " (a space).
_ASCII_FOLDED_RE = re.compile(r"[\x00\t\n\r\x0b\x0c\x1c-\x1f]")
# ... or a run that may be encoded.
_NEEDS_VIEW_RE = re.compile(
    r"[%&\\\x00\t\n\r\x0b\x0c\x1c-\x1f]|=40|\+[A-Za-z0-9+/]|[A-Za-z0-9+/=_\-]{10,}"
)
_B64_RUN_RE = re.compile(r"[A-Za-z0-9+/=_\-]{10,}")
_HEX_RUN_RE = re.compile(r"[0-9A-Fa-f]{12,}")
_URLSAFE = str.maketrans("-_", "+/")
_UNPRINTABLE_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")
_MAX_DEPTH = 3  # encoded layers decoded (base64 in hex in base64)

IntArray = npt.NDArray[np.intp]


class View(NamedTuple):
    """Detection text plus, per character, the original range it came from."""

    text: str
    starts: IntArray | None  # None: the identity (text is the original)
    ends: IntArray | None
    undecodable: list[tuple[int, int]]  # original ranges still percent-encoded


def _fold(text: str, starts: IntArray, ends: IntArray) -> tuple[str, IntArray, IntArray]:
    if text.isascii() and _ASCII_FOLDED_RE.search(text) is None:
        return text, starts, ends
    lens = np.frombuffer(text.translate(_LENS).encode("latin-1"), dtype=np.uint8)
    idx = np.repeat(np.arange(len(text)), lens)
    return text.translate(_FOLD), starts[idx], ends[idx]


def _ascii_char(cp: int, terminated: bool) -> str | None:
    """A backslash escape's character if it is printable ASCII (what a disguise spells);
    a letter or digit only if the escape is closed (a space, 6 digits, braces), so a
    backslash before a digit run ("C:\\1234...") does not eat digits of a number."""
    if 0x20 <= cp <= 0x7E and (terminated or not chr(cp).isalnum()):
        return chr(cp)
    return None


def _backslash(tok: str) -> tuple[str, int] | None:
    """A CSS ("\\40 ", "\\000040"), ES6 ("\\u{40}") or octal ("\\100") escape: its
    character and how many characters of ``tok`` it takes. The first reading that gives
    printable ASCII wins: CSS closed by a space or with six digits, three octal digits
    (C, shells: "\\056a" is ".a"), CSS with the digits there are."""
    if tok[1] == "u" and tok[2:3] == "{":
        return (c, len(tok)) if (c := _ascii_char(int(tok[3:-1], 16), True)) else None
    digits = tok[1:].rstrip(" ")
    if (tok[-1] == " " or len(digits) == 6) and (c := _ascii_char(int(digits, 16), True)):
        return c, len(tok)
    if len(digits) >= 3 and set(digits[:3]) <= _OCTAL:
        closed = len(digits) == 3 or not digits[3].isdigit()
        if c := _ascii_char(int(digits[:3], 8), closed):
            return c, 4
    return (c, len(tok)) if (c := _ascii_char(int(digits, 16), False)) else None


def _utf7(tok: str) -> str | None:
    """A UTF-7 shifted run ("+AEA-" is "@") if it decodes to printable ASCII (UTF-16BE
    units below 0x80: the run starts with "A", six zero bits)."""
    body = tok[1:].removesuffix("-")
    if body[0] != "A" or len(body) < 3:
        return None
    body = body[: len(body) - len(body) % 4 + (len(body) % 4 if len(body) % 4 > 1 else 0)]
    raw = binascii.a2b_base64(body + "=" * (-len(body) % 4))
    text = raw[: len(raw) // 2 * 2].decode("utf-16-be", "replace")
    return text if text.isascii() and text.isprintable() else None


_UTF7_MAX = 64  # shifted runs longer than this are not read as UTF-7 (base64 tokens are)


def _qp_tokens(text: str) -> list[tuple[int, int]]:
    """Whitespace-delimited tokens holding a quoted-printable "=40" (an "@")."""
    if "=40" not in text:
        return []
    return [m.span() for m in _NON_SPACE_RE.finditer(text) if _QP_AT_RE.search(m.group())]


# Overlong UTF-8: a character spelled with more bytes than it needs. Strict decoders
# refuse it, lenient ones (old IIS, Java's modified UTF-8) read the character, and so does
# a person who decodes the bits: "%C1%80" and "%E0%81%80" are "@".
_OVERLONG_RE = re.compile(
    rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]|\xf0[\x80-\x8f][\x80-\xbf]{2}"
)


def _overlong(m: re.Match[bytes]) -> bytes:
    seq = m.group()
    cp = seq[0] & (0x1F, 0x0F, 0x07)[len(seq) - 2]
    for b in seq[1:]:
        cp = cp << 6 | (b & 0x3F)
    return chr(cp).encode()


def _utf8(raw: bytes) -> str:
    """Decoded bytes, overlong forms read as the character they spell."""
    return _OVERLONG_RE.sub(_overlong, raw).decode("utf-8", "replace")


def _escapes(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, decoded) of each escape in ``text`` that decodes to something else."""
    qp = _qp_tokens(text) if "=" in text else []
    k = 0
    for m in _ESCAPE_RE.finditer(text):
        tok = m.group()
        a, b = m.span()
        head = tok[0]
        if head == "%":
            if tok[1] in "uU":
                out: str | None = chr(int(tok[2:], 16))
            else:
                out = _utf8(bytes.fromhex(tok.replace("%", "")))
        elif head == "\\":
            if tok[1] == "\\":
                out = "\\"
            elif tok[1] == "U":
                out = chr(cp) if (cp := int(tok[2:], 16)) <= 0x10FFFF else None
            elif tok[1] in "ux" and tok[2:3] != "{":
                out = chr(int(tok[2:], 16))  # a lone surrogate is dropped by the fold
            elif (hit := _backslash(tok)) is not None:
                out, b = hit[0], a + hit[1]
            else:
                out = None
        elif head == "+":
            out = _utf7(tok) if len(tok) <= _UTF7_MAX else None
        elif head == "=":
            while k < len(qp) and qp[k][1] <= a:
                k += 1
            if k < len(qp) and qp[k][0] <= a:
                out = _utf8(bytes.fromhex(tok.replace("=", "")))
            else:
                out = None
        else:
            out = html.unescape(tok)
        if out is not None and out != text[a:b]:
            yield a, b, out


def _unescape_all(text: str) -> str:
    """``text`` with its escapes decoded (one pass, no offsets)."""
    parts: list[str] = []
    pos = 0
    for a, b, out in _escapes(text):
        parts += (text[pos:a], out)
        pos = b
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _percent_decode(
    text: str, starts: IntArray, ends: IntArray
) -> tuple[str, IntArray, IntArray] | None:
    """One pass over percent runs and the other escapes; None if nothing changed. A
    decoded run maps, as a whole, to the original range of its escapes."""
    parts: list[str] = []
    s_idx: list[int] = []  # per output character: the index whose start / end it takes
    e_idx: list[int] = []
    pos = 0
    for a, b, decoded in _escapes(text):
        parts += (text[pos:a], decoded)
        s_idx += range(pos, a)
        e_idx += range(pos, a)
        s_idx += [a] * len(decoded)
        e_idx += [b - 1] * len(decoded)
        pos = b
    if not parts:
        return None
    parts.append(text[pos:])
    s_idx += range(pos, len(text))
    e_idx += range(pos, len(text))
    return (
        "".join(parts),
        starts[np.array(s_idx, dtype=np.intp)],
        ends[np.array(e_idx, dtype=np.intp)],
    )


def detection_view(s: str) -> View:
    """The text detection scans (see the module docstring), mapped to ``s``."""
    if s.isascii() and _VIEW_TRIGGER_RE.search(s) is None:
        return View(s, None, None, [])
    starts = np.arange(len(s), dtype=np.intp)
    text, starts, ends = _fold(s, starts, starts + 1)
    for _ in range(_PCT_ROUNDS):
        step = _percent_decode(text, starts, ends)
        if step is None:
            return View(text, starts, ends, [])
        text, starts, ends = _fold(*step)
    # Nested deeper than any real encoding: refuse what is still encoded (fail closed).
    left = [(int(starts[m.start()]), int(ends[m.end() - 1])) for m in _PCT_RUN_RE.finditer(text)]
    return View(text, starts, ends, left)


def _decodings(run: str) -> Iterator[str]:
    """Text of ``run`` read as base64/base64url at each alignment and as hex."""
    core = run.rstrip("=").translate(_URLSAFE)
    for off in range(4):
        chunk = core[off:]
        if len(chunk) < 8:
            break
        chunk = chunk[: len(chunk) - 1] if len(chunk) % 4 == 1 else chunk
        try:
            raw = binascii.a2b_base64(chunk + "=" * (-len(chunk) % 4))
        except binascii.Error:
            continue
        yield raw.decode("utf-8", "replace")
    for m in _HEX_RUN_RE.finditer(run):
        h = m.group()
        for off in (0, 1):
            part = h[off : len(h) - (len(h) - off) % 2]
            yield bytes.fromhex(part).decode("utf-8", "replace")


def _decoded_kind(run: str, ids: bool, depth: int) -> str | None:
    """The placeholder of the first identifier inside an encoded token, if any. The token
    is replaced as a whole, so this needs no offsets: no mapped view, one scan per
    decoding (unprintable characters become NUL, which no pattern crosses)."""
    for raw in _decodings(run):
        text = raw.translate(_DECODED)
        for _ in range(_PCT_ROUNDS):
            if (nxt := _unescape_all(text)) == text:
                break
            text = nxt.translate(_DECODED)
        for a, b, ph in _shape_spans(text, ids):
            if ph != EMAIL or _STRICT_EMAIL_RE.fullmatch(text, a, b):
                return ph
        if depth < _MAX_DEPTH:
            for m in _B64_RUN_RE.finditer(text):
                if (inner := _decoded_kind(m.group(), ids, depth + 1)) is not None:
                    return inner
    return None


def _spans(s: str, ids: bool, depth: int = 0, encoded_ids: bool = False) -> list[Span]:
    """Non-overlapping identifier spans of ``s``, in order, in ``s``'s own offsets.
    ``encoded_ids``: opaque id tokens count inside encoded tokens (even if not ``ids``)."""
    if s.isascii() and _NEEDS_VIEW_RE.search(s) is None:  # the view would be the identity
        return _merge(_shape_spans(s, ids))
    return _merge(_view_spans(s, ids, depth, encoded_ids))


def _view_spans(s: str, ids: bool, depth: int, encoded_ids: bool = False) -> list[Span]:
    """The full path: shapes in the detection view plus identifiers in encoded tokens,
    mapped back to ``s``."""
    view = detection_view(s)
    found: list[Span] = []  # encoded tokens first: on a tie their finding names the span
    if depth < _MAX_DEPTH:
        for m in _B64_RUN_RE.finditer(view.text):
            if (ph := _decoded_kind(m.group(), ids or encoded_ids, depth + 1)) is not None:
                found.append((m.start(), m.end(), ph))
    found += _shape_spans(view.text, ids)
    if view.starts is not None and view.ends is not None:
        starts, ends = view.starts, view.ends
        found = [(int(starts[a]), int(ends[b - 1]), ph) for a, b, ph in found if b > a]
    found += [(a, b, ID) for a, b in view.undecodable]
    if depth < _MAX_DEPTH and view.starts is not None and "+A" in s:
        # A base64 token can hold "+A..." that reads as UTF-7 in the view, which cuts the
        # token there: such tokens are also decoded as written.
        for m in _B64_RUN_RE.finditer(s):
            if "+A" in m.group() and (
                ph := _decoded_kind(m.group(), ids or encoded_ids, depth + 1)
            ):
                found.append((m.start(), m.end(), ph))
    return found


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, overlaps joined (the earlier find names the joined span)."""
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda x: (x[0], -x[1]))
    out = [spans[0]]
    for a, b, ph in spans[1:]:
        pa, pb, pph = out[-1]
        if a < pb:
            out[-1] = (pa, max(pb, b), pph)
        else:
            out.append((a, b, ph))
    return out


def _apply(s: str, spans: list[Span]) -> str:
    if not spans:
        return s
    parts: list[str] = []
    pos = 0
    for a, b, ph in spans:
        parts += (s[pos:a], ph)
        pos = b
    parts.append(s[pos:])
    return "".join(parts)


def scrub_text(s: str) -> str:
    """Replace emails, IPs, card numbers, phone numbers and 6+ digit numbers in free text.

    Placeholders: ``<email>``, ``<ip>`` (IPv4, also with "_", ",", "-", "/" or " " for
    the dots, and IPv6), ``<card>`` (13-19 digits, optionally separated, Luhn-valid),
    ``<phone>`` (7+ digits with separators or a leading "+"), ``<num>`` (any other number
    of 6+ digits, including non-ASCII digits), ``<id>`` (percent-encoding nested more
    than 8 times). An identifier inside a base64/hex token replaces the whole token.
    Text with nothing to scrub is returned unchanged (same object).
    """
    if not s:
        return s
    return _apply(s, _spans(s, False))


def scrub_identifiers(s: str) -> str:
    """scrub_text, plus opaque id tokens (UUIDs, hex, cookie-like tokens) -> "<id>": for
    values released as they are, where a cookie id must not survive."""
    if not s:
        return s
    return _apply(s, _spans(s, True))


def identifier_spans(s: str) -> list[Span]:
    """Where :func:`scrub_text` would put placeholders: sorted, non-overlapping
    (start, end, placeholder) in ``s``'s own offsets."""
    return _spans(s, False) if s else []


def identifier_kinds(s: str, encoded_ids: bool = False) -> set[str]:
    """The placeholders :func:`scrub_text` would put into ``s`` (empty: nothing found);
    with ``encoded_ids`` also ``<id>`` for an opaque id (a cookie id) inside an encoded
    token, for values where a plain slug must stay but a disguised id must not."""
    return {ph for _, _, ph in _spans(s, False, 0, encoded_ids)} if s else set()


def split_id_spans(s: str) -> list[tuple[int, int]]:
    """Where an id cut into hex groups ("8f3a2b91.c4d7e6a5") stands in ``s``, in ``s``'s
    own offsets: for URL hosts and paths, whose labels and segments are judged apart."""
    view = detection_view(s)
    spans = _hex_chain_spans(view.text)
    if view.starts is None or view.ends is None:
        return [(a, b) for a, b, _ in spans]
    return [(int(view.starts[a]), int(view.ends[b - 1])) for a, b, _ in spans]


def contains_email(s: str) -> bool:
    """True if ``s`` contains an email address, also disguised (encoded, zero-width...)."""
    return EMAIL in identifier_kinds(s)


def contains_ip(s: str) -> bool:
    """True if ``s`` contains an IPv4 or (non-trivial) IPv6 address anywhere."""
    return IP in identifier_kinds(s)
