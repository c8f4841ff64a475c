"""Free-text scrubbing: replace direct identifiers with typed placeholders.

Free-text fields (search terms, error messages, form values) routinely carry emails, IP
addresses, card and phone numbers. They must never reach a released aggregate, so
:func:`scrub_text` replaces them with ``<email>``, ``<ip>``, ``<card>``, ``<phone>`` and,
as a conservative catch-all for anything else that looks like an identifier, every
remaining run of six or more digits with ``<num>``.

The scrubber errs on the side of removing too much: dates such as ``2024-01-15`` or
decimal numbers with many digits come out as ``<phone>``/``<num>``. It is a few
precompiled regex passes, preceded by cheap checks that skip text with no digit and no
``@`` at all (the common case on the hot path).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "CARD",
    "EMAIL",
    "IP",
    "NUM",
    "PHONE",
    "contains_email",
    "contains_ip",
    "luhn_ok",
    "scrub_text",
]

EMAIL = "<email>"
IP = "<ip>"
CARD = "<card>"
PHONE = "<phone>"
NUM = "<num>"

# "@" plus its full-width / small variants and the percent-encoded form: an encoded
# address in free text (copied from a URL) is still an address.
_AT = r"(?:@|＠|﹫|%40)"
_LOCAL_CH = r"[\w.!#$%&'*+^~\-]"
# The look-behind pins the start of the local part to the start of its "word", so a
# long token without "@" costs O(len) instead of O(len**2) in failed attempts.
# "x@jane@example.com" is one match: matched up to its first domain only, it would leave
# "@example.com" behind with "jane" glued to the "@" before it, a local part in the clear.
_EMAIL_PAT = (
    rf"(?<!{_LOCAL_CH}){_LOCAL_CH}+(?:{_AT}{_LOCAL_CH}+)*?"
    rf"{_AT}(?:[\w\-]++(?:\.[\w\-]++)*+|\[[0-9A-Fa-f:.]+\])(?!{_AT}[\w\-\[])"
)

# Leading zeros are accepted ("010.001.002.003"): over-matching is the safe failure.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
_IP4_PAT = rf"(?<![0-9])(?:{_OCTET}\.){{3}}{_OCTET}(?![0-9]|\.[0-9])"

# IPv6 *candidate*: a run of hex groups with at least two colons (plus an optional
# dotted IPv4 tail). Candidates are validated, and searched for an embedded address,
# in Python (see _find_ip6): a full IPv6 grammar in the regex would be slow and
# would still not cope with addresses glued to surrounding hex-looking text.
_IP6_PAT = r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]*+(?::[0-9A-Fa-f]*+){2,}(?:\.[0-9]{1,3}){0,3}"

# A cluster of digit groups joined by single phone-style separators: "+44 20 7946 0958",
# "(555) 123-4567", "4111-1111-1111-1111", "555.123.4567", or a plain digit run.
# A group never starts an IPv4 address: "5 1.2.3.4" or "(1.2.3.4" must not be absorbed
# into a short, harmless-looking cluster (the address is matched on its own instead).
_SEP = r"(?:[ .\-]|\)[ .\-]?|[ .\-]?\()"
_GROUP = rf"(?!{_IP4_PAT})\d++"
_CLUSTER_PAT = rf"(?:\+ ?)?\(?{_GROUP}(?:{_SEP}{_GROUP})*+"

# Numbers are found in two steps: a coarse "span" regex that starts with a plain
# character class (so the regex engine can skip ahead quickly, ~10x faster than scanning
# with the alternation below), then the precise patterns on spans long enough to matter.
# Spans shorter than 6 characters hold neither an IPv4 address nor a 6-digit run, and
# are not even matched (no Python callback for the many short numbers in text).
_SPAN_RE = re.compile(r"[+(\d][\d .()\-]{5,}")
_NUM_RE = re.compile(rf"(?P<ip4>{_IP4_PAT})|(?P<num>{_CLUSTER_PAT})")
_EMAIL_RE = re.compile(_EMAIL_PAT)
_IP4_RE = re.compile(_IP4_PAT)
_IP6_RE = re.compile(_IP6_PAT)
_DIGIT_RE = re.compile(r"\d")
_NON_DIGIT_RE = re.compile(r"\D")
_RUN6_RE = re.compile(r"\d{6,}")
_CARD_SHAPE_RE = re.compile(r"\d+(?:[ \-]\d+)*")

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


def _classify_number(text: str) -> str:
    """Decide what a digit cluster is; short clusters (the vast majority) are kept."""
    digits = text if text.isdecimal() else _NON_DIGIT_RE.sub("", text)
    n = len(digits)
    if n < 6:
        return text
    plain = n == len(text)
    if 13 <= n <= 19 and (plain or _CARD_SHAPE_RE.fullmatch(text)) and luhn_ok(digits):
        return CARD
    if not plain and n >= 7:
        return PHONE
    return _RUN6_RE.sub(NUM, text)


def _ip6_plausible(window: str) -> bool:
    """A real, non-trivial IPv6 address (needs a digit and 3+ hex chars to skip "a::b")."""
    colons = window.count(":")
    if len(window) > _IP6_MAX_LEN or colons < 2:
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
        ipaddress.IPv6Address(window)
    except ValueError:
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


def _ip6_repl(m: re.Match[str]) -> str:
    """Replace every IPv6 address inside a candidate, leaving the rest for the main pass."""
    text = m.group()
    if "::" not in text and text.count(":") < 6:
        return text  # no window can be valid: times, MACs, "a:b:c" (fast exit)
    out: list[str] = []
    pos = 0
    while (hit := _find_ip6(text, pos)) is not None:
        out.append(text[pos : hit[0]])
        out.append(IP)
        pos = hit[1]
    out.append(text[pos:])
    return "".join(out)


def _num_repl(m: re.Match[str]) -> str:
    return IP if m.lastgroup == "ip4" else _classify_number(m.group())


def _span_repl(m: re.Match[str]) -> str:
    return _NUM_RE.sub(_num_repl, m.group())


def scrub_text(s: str) -> str:
    """Replace emails, IPs, card numbers, phone numbers and 6+ digit runs in free text.

    Placeholders: ``<email>``, ``<ip>`` (IPv4 and IPv6), ``<card>`` (13-19 digits,
    optionally space/dash separated, Luhn-valid), ``<phone>`` (7+ digits with
    separators or a leading "+"), ``<num>`` (any other run of 6+ digits, including
    non-ASCII digits). Text with nothing to scrub is returned unchanged (same object).
    """
    if not s:
        return s
    # Pre-checks: single-character ``in`` tests are memchr-fast, so text with no digit
    # and no "@" (most free text) costs a few hundred ns whatever its length.
    if s.isascii():
        has_at = "@" in s
        has_digit = (
            "0" in s
            or "1" in s
            or "2" in s
            or "3" in s
            or "4" in s
            or "5" in s
            or "6" in s
            or "7" in s
            or "8" in s
            or "9" in s
        )
    else:
        has_at = "@" in s or "＠" in s or "﹫" in s
        has_digit = _DIGIT_RE.search(s) is not None
    if not has_digit:
        return _EMAIL_RE.sub(EMAIL, s) if has_at else s
    # Emails first: their digits must not be turned into <num> before they are seen.
    if has_at or "%40" in s:
        s = _EMAIL_RE.sub(EMAIL, s)
    # IPv6 next, in its own pass: otherwise a digit cluster just before it
    # ("v6 2001:db8::1") would split the address.
    if s.count(":") >= 2:
        s = _IP6_RE.sub(_ip6_repl, s)
    return _SPAN_RE.sub(_span_repl, s)


def contains_email(s: str) -> bool:
    """True if ``s`` contains something email-shaped (also with ``%40`` for ``@``)."""
    return _EMAIL_RE.search(s) is not None


def contains_ip(s: str) -> bool:
    """True if ``s`` contains an IPv4 or (non-trivial) IPv6 address anywhere."""
    if _IP4_RE.search(s) is not None:
        return True
    if s.count(":") < 2:
        return False
    return any(_find_ip6(m.group(), 0) is not None for m in _IP6_RE.finditer(s))


# Identifier-like tokens that scrub_text leaves alone: UUIDs, long hex, and long tokens that
# mix letters and digits (cookie ids, session tokens). A whole run of token characters is
# judged at once, so ids glued together with "-" or "_" go as one.
_TOKEN_RUN = re.compile(r"[0-9A-Za-z_-]{12,}")
_HEXISH = frozenset("0123456789abcdefABCDEF-")


def _token_repl(m: re.Match[str]) -> str:
    run = m.group()
    has_digit = any(c.isdigit() for c in run)
    if has_digit and ((len(run) >= 16 and any(c.isalpha() for c in run)) or set(run) <= _HEXISH):
        return ID
    return run


ID = "<id>"


def scrub_identifiers(s: str) -> str:
    """scrub_text, plus opaque id tokens (UUIDs, hex, cookie-like tokens) -> "<id>": for
    values released as they are, where a cookie id must not survive."""
    return _TOKEN_RUN.sub(_token_repl, scrub_text(s))
