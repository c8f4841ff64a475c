"""Red-team regressions: an "@" spelled in forms that lenient decoders read and strict
ones do not. IIS "%u0040", Python "\\U00000040", a JSON string escaped twice
("\\\\u0040", which one more JSON decode turns into "\\u0040" and then "@"), and overlong
UTF-8 ("%C1%80", "%E0%81%80", "%F0%80%81%80": the bits of "@" in two, three or four
bytes) all passed `keep`, URL segments and the audit with the address in the clear."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.audit_detect import identifier_reasons
from anonstream.core.generalize import url_template
from anonstream.core.generalizers import scrub_kept

_WORDS = st.from_regex(r"[a-z]{4,8}", fullmatch=True)
_DOMAINS = st.sampled_from(["example.com", "example.org", "mail.example.net"])


def overlong(c: str, size: int) -> str:
    """``c`` (ASCII) in ``size`` UTF-8 bytes instead of one, percent-encoded."""
    cp = ord(c)
    lead = (0xC0, 0xE0, 0xF0)[size - 2]
    tail = [0x80 | (cp >> 6 * i) & 0x3F for i in range(size - 1)][::-1]
    return "".join(f"%{b:02X}" for b in (lead | cp >> 6 * (size - 1), *tail))


def json_escaped(c: str, times: int) -> str:
    """``c`` as "\\u00XX", the backslash escaped again ``times`` times (JSON in JSON)."""
    return "\\" * 2**times + f"u{ord(c):04x}"


_AT = st.one_of(
    st.sampled_from(["%u0040", "%U0040", "\\U00000040"]),
    st.integers(2, 4).map(lambda n: overlong("@", n)),
    st.integers(1, 9).map(lambda n: json_escaped("@", n)),
)
_DOT = st.one_of(st.just("."), st.just("%u002e"), st.integers(2, 3).map(lambda n: overlong(".", n)))


@st.composite
def disguised(draw: st.DrawFn) -> tuple[str, str, str]:
    first, last, domain = draw(_WORDS), draw(_WORDS), draw(_DOMAINS)
    return f"{first}{draw(_DOT)}{last}{draw(_AT)}{domain}", first, last


@settings(max_examples=300, deadline=None)
@given(disguised())
def test_kept_value_loses_the_address(case: tuple[str, str, str]) -> None:
    value, first, last = case
    out = scrub_kept(value)
    assert not (first in out and last in out), out


@settings(max_examples=300, deadline=None)
@given(disguised(), st.sampled_from(["https://example.com/u/", "/profile/", "//x.example/a/"]))
def test_url_segment_loses_the_address(case: tuple[str, str, str], prefix: str) -> None:
    value, first, last = case
    out = url_template(prefix + value)
    assert not (first in out and last in out), out


@settings(max_examples=300, deadline=None)
@given(disguised())
def test_audit_sees_the_address(case: tuple[str, str, str]) -> None:
    assert "an email address" in identifier_reasons(case[0])


def test_ordinary_text_is_untouched() -> None:
    # Valid UTF-8 and a lone bad byte are no disguise; a single backslash stays one.
    assert url_template("https://example.com/search/caf%C3%A9") == "example.com/search/caf%C3%A9"
    assert scrub_kept("spring%C0sale") == "spring%C0sale"
    assert scrub_kept("C:\\\\temp\\\\report") == "C:\\\\temp\\\\report"
    assert identifier_reasons("caf%C3%A9 %C0 C:\\\\temp") == []
