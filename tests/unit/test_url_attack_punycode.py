"""Red-team regressions: an identifier in an IDNA host label. A phone or card number
written in another script's digits (Arabic-Indic, full-width) and sent as its punycode
("xn--8hbffaaagihp.example.com") is plain ASCII, so the host check, which folds only
non-ASCII labels, released it as is; a browser shows it as the number. The url and
referrer generalizers now judge an "xn--" label as the Unicode it stands for, and the
audit decodes such labels as one more layer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.audit_detect import identifier_reasons
from anonstream.core.generalize import referrer_domain, url_template

# Digits of scripts a browser shows in a host: Arabic-Indic, Eastern Arabic, Devanagari,
# full-width.
_ZEROS = [0x660, 0x6F0, 0x966, 0xFF10]


def _in_script(digits: str, zero: int) -> str:
    return "".join(chr(zero + int(d)) for d in digits)


def _label(text: str) -> str:
    return "xn--" + text.encode("punycode").decode("ascii")


@settings(max_examples=200, deadline=None)
@given(
    digits=st.from_regex(r"[1-9][0-9]{9,15}", fullmatch=True),
    zero=st.sampled_from(_ZEROS),
    parent=st.sampled_from(["example.com", "cdn.example.net"]),
)
def test_a_number_in_a_punycode_label_is_not_released(digits: str, zero: int, parent: str) -> None:
    label = _label(_in_script(digits, zero))
    for out in (
        url_template(f"https://{label}.{parent}/home"),
        referrer_domain(f"https://{label}.{parent}/"),
    ):
        assert label not in out, out
        assert out.endswith(parent) or f"{parent}/" in out


@settings(max_examples=100, deadline=None)
@given(digits=st.from_regex(r"[1-9][0-9]{9,15}", fullmatch=True), zero=st.sampled_from(_ZEROS))
def test_the_audit_reads_punycode_labels(digits: str, zero: int) -> None:
    assert identifier_reasons(f"{_label(_in_script(digits, zero))}.example.com/home")


def test_ordinary_idna_hosts_stay() -> None:
    for host in ("xn--mnchen-3ya.de", "xn--bcher-kva.example", "xn--80ak6aa92e.com"):
        assert url_template(f"https://{host}/x") == f"{host}/x"
        assert referrer_domain(f"https://www.{host}/") == host
        assert identifier_reasons(f"{host}/x") == []
