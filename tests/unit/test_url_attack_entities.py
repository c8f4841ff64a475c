"""Red-team regressions: an address whose "@" is an HTML numeric entity inside a URL path.
"/u/jane.doe&#x40;example.org" was cut at the entity's "#" as if it began a fragment,
and the segment "jane.doe&" (the address's local part) was released; with the fragment
fixed, the ";" that closes the entity cut it again as a matrix parameter. An entity's "#"
now starts no fragment, and a piece whose identifier the ";" cut would part becomes its
placeholder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.generalize import url_template

_WORDS = st.from_regex(r"[a-z]{4,8}", fullmatch=True)
_DOMAINS = st.sampled_from(["example.com", "example.org", "mail.example.net", "bank.example"])
_AT = st.sampled_from(
    ["&#x40;", "&#X40;", "&#64;", "&#064;", "&#x0040;", "&#x40", "&#64", "&#0000064;"]
)
_TAILS = st.sampled_from(["", "/x", "#top", "/x#frag", ";v=1", "?q=1", "/x?q=1#f"])


@settings(max_examples=300)
@given(
    first=_WORDS, last=_WORDS, domain=_DOMAINS, at=_AT, tail=_TAILS,
    host=st.sampled_from(["https://shop.example.com/", "http://example.net:8080/", "/"]),
    segment=st.sampled_from(["u/", "users/", "", "a/./"]),
)  # fmt: skip
def test_an_entity_spelled_at_in_a_path_releases_no_name(
    first: str, last: str, domain: str, at: str, tail: str, host: str, segment: str
) -> None:
    out = url_template(f"{host}{segment}{first}.{last}{at}{domain}{tail}")
    assert not (first in out and last in out), out
    assert domain.split(".")[-2] not in out.split("/", 1)[-1] or out.endswith("..."), out


def test_an_ordinary_fragment_and_matrix_parameter_are_still_dropped() -> None:
    assert url_template("https://example.com/a#b") == "example.com/a"
    assert url_template("https://example.com/p;jsessionid=abc/x") == "example.com/p/x"
    assert url_template("https://example.com/a/b?q=1#f") == "example.com/a/b"


@settings(max_examples=200)
@given(
    first=_WORDS, last=_WORDS, zeros=st.integers(0, 3),
    domain=st.sampled_from(["example.com", "bank.example", "cafe.example.org", "deals.example"]),
)  # fmt: skip
def test_an_unterminated_hex_entity_before_a_hex_letter_is_still_an_at(
    first: str, last: str, domain: str, zeros: int
) -> None:
    """ "jane.doe&#x40example.com": a browser reads "&#x40e" (U+040E), a person "@" and
    "example.com". The scrubber (keep fields, URL segments) and the audit read it as the
    person does."""
    from anonstream.audit_detect import identifier_reasons
    from anonstream.core.scrub import scrub_identifiers

    value = f"{first}.{last}&#x{'0' * zeros}40{domain}"
    assert domain[0] in "abcdef"  # the hard case: the domain starts with a hex letter
    assert scrub_identifiers(f"see {value} now") == "see <email> now", value
    assert identifier_reasons(value) == ["an email address"], value
    assert not (first in (out := url_template(f"https://x.example/u/{value}")) and last in out)
