"""Red-team regressions: an address whose "@" is a backslash escape ("\\u0040", "\\x40",
"\\100", "\\u{40}", "\\40 ") inside a URL. The url generalizer reads "\\" as "/" (as
browsers do), which cut the escape away from the address: "example.com/u/jane.doe
\\u0040example.org" was released as "example.com/u/jane.doe/u0040example.org" and
"https://jane.doe\\u0040example.org/x" as the host "jane.doe" (also as a referrer
domain). Every piece an escaped identifier touches is now its placeholder, and a host cut
out of one is "<invalid>"."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.generalize import referrer_domain, url_template

_WORDS = st.from_regex(r"[a-z]{4,8}", fullmatch=True)
_DOMAINS = st.sampled_from(["example.com", "example.org", "mail.example.net"])
_AT = st.sampled_from(["\\u0040", "\\x40", "\\100", "\\u{40}", "\\u{0040}", "\\40 "])
_PLAIN_SEGMENTS = st.lists(
    st.sampled_from(["u", "users", "profile", ".", "a/..", "v2"]), max_size=3
)


def _leaks(out: str, first: str, last: str) -> bool:
    """Does the released template still show both halves of the name?"""
    return first in out and last in out


@settings(max_examples=200, deadline=None)
@given(
    first=_WORDS,
    last=_WORDS,
    domain=_DOMAINS,
    at=_AT,
    before=_PLAIN_SEGMENTS,
    after=_PLAIN_SEGMENTS,
    host=st.sampled_from(
        ["https://shop.example.com/", "http://example.net:8080/", "//x.example/", "/", ""]
    ),
)
def test_escaped_address_in_a_path_never_survives(
    first: str, last: str, domain: str, at: str, before: list[str], after: list[str], host: str
) -> None:
    path = "/".join([*before, f"{first}.{last}{at}{domain}", *after])
    out = url_template(host + path)
    assert not _leaks(out, first, last), out
    assert domain not in out.partition("/")[2], out  # the domain is no segment either


@settings(max_examples=100, deadline=None)
@given(first=_WORDS, last=_WORDS, domain=_DOMAINS, at=_AT)
def test_escaped_address_as_the_host_is_invalid(
    first: str, last: str, domain: str, at: str
) -> None:
    value = f"https://{first}.{last}{at}{domain}/home"
    assert url_template(value) == "<invalid>"
    assert referrer_domain(value) == "<invalid>"


def test_backslashes_without_an_identifier_are_still_slashes() -> None:
    assert url_template("https://example.com\\products\\shoes") == "example.com/products/shoes"
    assert url_template("https://example.com/a\\..\\b") == "example.com/b"
    assert referrer_domain("https://www.example.com\\search") == "example.com"
