"""Red-team regressions: identifiers split by whitespace other than " " or spelled in
Unicode tag characters (invisible "ASCII smuggling") must be scrubbed like plain ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from anonstream.core.generalize import url_template
from anonstream.core.scrub import scrub_identifiers, scrub_text

CARD = ["4111", "1111", "1111", "1111"]
BLANKS = ["\t", "\n", "\r\n", "\x0b", "\x0c", "\u2028", "\u1680", "\u3000", "\u2800"]


def _tags(s: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in s)


@given(sep=st.sampled_from(BLANKS))
def test_card_phone_ip_split_by_any_blank(sep: str) -> None:
    assert scrub_text(sep.join(CARD)) == "<card>"
    assert scrub_text(sep.join(["415", "555", "0199"])) == "<phone>"
    assert scrub_text(sep.join(["192", "0", "2", "55"])) in ("<ip>", "<phone>")
    assert scrub_text(f"jane.doe{sep}@example.com") == "<email>"


@given(prefix=st.text(alphabet="abcxyz -", max_size=8))
def test_tag_characters_are_read_as_ascii(prefix: str) -> None:
    out = scrub_identifiers(prefix + _tags("jane.doe@example.com"))
    assert "@" not in out and not any(0xE0000 <= ord(c) <= 0xE007F for c in out)
    assert "<email>" in out
    assert "<card>" in scrub_text("x" + _tags("4111111111111111"))


def test_url_path_with_encoded_newlines() -> None:
    assert "1111" not in url_template("https://ex.org/p/4111%0A1111%0A1111%0A1111")
    assert "jane" not in url_template("https://ex.org/q/jane.doe%0A@example.com")
    assert "\U000e0040" not in url_template("https://ex.org/p/a" + _tags("jane.doe@example.com"))


def test_plain_text_unchanged() -> None:
    for s in ["line one\nline two", "a\tb", "10:15\n11:30", "size 1920x1080"]:
        assert scrub_text(s) == s


@given(zeros=st.integers(min_value=0, max_value=40), hexa=st.booleans())
def test_html_entities_with_leading_zeros(zeros: int, hexa: bool) -> None:
    """Browsers and html.unescape read "&#x0000040;" as "@" whatever the zeros."""
    ent = f"&#x{'0' * zeros}40;" if hexa else f"&#{'0' * zeros}64;"
    assert scrub_text(f"jane.doe{ent}example.com") == "<email>"
