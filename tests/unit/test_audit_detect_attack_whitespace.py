"""Red-team regressions: the audit's own detector sees identifiers split by any
whitespace or spelled in Unicode tag characters, as the scrubber now does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from anonstream.audit_detect import identifier_reasons

BLANKS = ["\t", "\n", "\r\n", "\x0b", "\u2028", "\u1680", "\u3000", "\u2800"]


@given(sep=st.sampled_from(BLANKS))
def test_split_by_any_blank_is_found(sep: str) -> None:
    assert identifier_reasons(sep.join(["4111", "1111", "1111", "1111"]))
    assert identifier_reasons(sep.join(["415", "555", "0199"]))
    assert identifier_reasons(f"jane.doe{sep}@example.com")


def test_tag_characters_are_found() -> None:
    tags = "".join(chr(0xE0000 + ord(c)) for c in "jane.doe@example.com")
    assert "an email address" in identifier_reasons("promo" + tags)


def test_plain_lines_are_clean() -> None:
    assert identifier_reasons("line one\nline two") == []
