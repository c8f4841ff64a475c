"""Hand-made cases from issues 12 and 13 (identifiers in disguise, hostile lengths), and
the proof that the scrubber's fast skip of the detection view changes nothing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from anonstream.audit_detect import identifier_reasons
from anonstream.core import scrub
from anonstream.core.generalize import (
    URL_INPUT_MAX,
    ip_prefix,
    referrer_domain,
    url_template,
)
from anonstream.core.policy import KEPT_INPUT_MAX, TOO_LONG, scrub_kept
from anonstream.core.scrub import scrub_identifiers, scrub_text

EMAIL_B64URL = base64.urlsafe_b64encode(b"jane.doe@example.com").decode().rstrip("=")


# ------------------------------------------------------------- issue 13, case by case


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # zero-width space before the "@": used to come out percent-quoted
        ("https://shop.example.com/u/jane\u200b@example.com", "shop.example.com/u/:email"),
        ("https://shop.example.com/u/jane%E2%80%8B%40example.com", "shop.example.com/u/:email"),
        # base64url-encoded address as a path segment
        (f"https://shop.example.com/u/{EMAIL_B64URL}", "shop.example.com/u/:email"),
        (f"https://shop.example.com/u/{EMAIL_B64URL}==", "shop.example.com/u/:email"),
        # double (and triple) percent-encoding
        ("https://shop.example.com/u/jane%2540example.com", "shop.example.com/u/:email"),
        ("https://shop.example.com/u/jane%252540example.com", "shop.example.com/u/:email"),
        # accent as a combining mark in the local part
        ("https://shop.example.com/u/jose\u0301@example.com", "shop.example.com/u/:email"),
        # hex of an address
        (f"https://shop.example.com/u/{b'jane@example.com'.hex()}", "shop.example.com/u/:email"),
        # separators in numbers and addresses inside one segment
        ("https://shop.example.com/c/4111_1111_1111_1111", "shop.example.com/c/:id"),
        ("https://shop.example.com/h/192_0_2_77", "shop.example.com/h/:ip"),
        # "+" in a path is no space for base64: the raw segment is checked too
        (
            "https://shop.example.com/u/"
            + base64.b64encode(b"jane>>doe@example.com").decode().replace("/", "_"),
            "shop.example.com/u/:email",
        ),
        # standard base64 with "+" and "/" (split over two path segments)
        (
            "https://shop.example.com/u/" + base64.b64encode(b"jane~~~x@example.com").decode(),
            "shop.example.com/u/:email",
        ),
        (
            "https://shop.example.com/u/" + base64.b64encode(b"a~?jane.doe@example.com").decode(),
            "shop.example.com/u/:email/:email",  # "YX4" (the start of the token) as well
        ),
        ("https://shop.example.com/call/555/0100/1234/x", "shop.example.com/call/:num/:num/:num/x"),
        ("https://shop.example.com/ip/192/0/2/77", "shop.example.com/ip/:num/:num/:num/:num"),
        ("https://shop.example.com/item-42/10000", "shop.example.com/item-42/:num"),
        # a cookie id in base64url, as a path segment and as a host label
        ("https://shop.example.com/v/MDAwMDBhMDAwMDBhMDAwMA", "shop.example.com/v/:id"),
        ("https://MDAwMDBhMDAwMDBhMDAwMA.example.com/", ":id.example.com/"),
        # identifiers spread over host labels
        ("https://192.0.2.77.example.org/x", ":ip.example.org/x"),
        ("https://4111.1111.1111.1111.example.com/", ":id.example.com/"),
        # full-width IPv4 host (browsers read it as 192.0.2.77)
        ("https://\uff11\uff19\uff12.\uff10.\uff12.\uff17\uff17/x", ":ip/x"),
    ],
)
def test_disguised_identifiers_in_urls(url: str, expected: str) -> None:
    assert url_template(url) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jane\u200b@example.com", "<email>"),  # released as is in `type`, audit silent
        ("jose\u0301@example.com", "<email>"),
        ("jane%2540example.com", "<email>"),
        ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "<email>"),
        ("sign-up " + base64.b64encode(b"jane@example.com").decode(), "sign-up <email>"),
        (EMAIL_B64URL, "<email>"),
        ("card 4111_1111_1111_1111", "card <card>"),
        ("card 4111,1111,1111,1111", "card <card>"),
        ("card 4111/1111/1111/1111", "card <card>"),
        ("call 555_010_1234", "call <phone>"),
        ("call 555,010,1234", "call <phone>"),
        ("host 192_0_2_77", "host <ip>"),
        ("host 192,0,2,77", "host <ip>"),
        ("host ip-192-0-2-77.example.net", "host ip-<ip>.example.net"),
        ("v6 2002:c000:24d::1", "v6 <ip>"),
        ("v6 64:ff9b::192.0.2.77", "v6 <ip>"),
        ("account \u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668", "account <num>"),
        ("visitor 3f9a\u200b0c1d2e4b5a69", "visitor <id>"),
    ],
)
def test_disguised_identifiers_in_kept_text(value: str, expected: str) -> None:
    assert scrub_identifiers(value) == expected


def test_whole_encoded_token_becomes_the_placeholder() -> None:
    token = base64.b64encode(b"mail jane@example.com now").decode()
    assert scrub_text(f"a {token} b") == "a <email> b"


def test_benign_values_stay() -> None:
    for value in ("page_view", "email_open", "cmp-2026-11-a", "checkout step 3 of 4",
                  "Mozilla", "application_settings", "2026-11"):  # fmt: skip
        assert scrub_identifiers(value) == value


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("2002:c000:24d::1", "192.0.2.0/24"),  # a /48 of 6to4 used to carry the IPv4
        ("2002:c000:24d:17::", "192.0.2.0/24"),
        ("::ffff:c000:24d", "192.0.2.0/24"),
        ("64:ff9b::c000:24d", "192.0.2.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
    ],
)
def test_ipv6_embedding_ipv4(ip: str, expected: str) -> None:
    assert ip_prefix(ip) == expected


@pytest.mark.parametrize(
    "value",
    [
        "jane\u200b@example.com",
        "jose\u0301@example.com",
        "jane%2540example.com",
        EMAIL_B64URL,
        b"jane@example.com".hex(),
        "4111_1111_1111_1111",
        "555,010,1234",
        "192_0_2_77",
        "2002:c000:24d::1",
        "2002:c000:24d::/48",
    ],
)
def test_audit_detector_sees_the_issue_cases(value: str) -> None:
    assert identifier_reasons(value, tokens=True)


# ---------------------------------------------------------------- issue 12: lengths


def test_hostile_type_is_capped_before_any_scan() -> None:
    assert scrub_kept("a@" * 12_000 + "[") == TOO_LONG
    assert scrub_kept("x" * KEPT_INPUT_MAX) == "x" * 80  # at the cap: scanned, then cut
    assert scrub_kept("a@" * (KEPT_INPUT_MAX // 2 - 1) + "[").startswith("<email>")


def test_hostile_url_and_referrer_are_capped() -> None:
    assert url_template("https://x.example.com/" + "a" * URL_INPUT_MAX) == "<invalid>"
    assert referrer_domain("https://x.example.com/" + "a" * URL_INPUT_MAX) == "<invalid>"
    assert ip_prefix("1" * 200) is None


def test_issue_12_shapes_are_fast_enough_to_run_here() -> None:
    """Functional check only (the cost ratio is test_adversarial's job): the scrubber
    finishes on the 24 KB shape that took 11 s and gives the same answer as before."""
    assert scrub_text("a@" * 12_000 + "[") == "<email>@["
    assert url_template("https://x.example.com/" + "a@" * 4000 + "[") == "x.example.com/:email"


def test_long_dotted_referrer_is_linear_and_invalid() -> None:
    assert referrer_domain("a." * 4000 + "@") == "<invalid>"
    assert referrer_domain("www.example.com/path") == "example.com"


# ---------------------------------------------------------- the fast skip is sound


ascii_text = st.text(
    st.sampled_from(list("abcxyzABCXYZ0123456789 .-_,/:@+=()[]%\x00")), max_size=60
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(ascii_text, st.text(max_size=40)), st.booleans())
def test_fast_skip_is_equivalent_to_the_full_path(s: str, ids: bool) -> None:
    """Whenever the view is skipped, the full path (view, percent-decoding, decoding of
    encoded runs) gives the same spans; so skipping never misses anything."""
    fast = scrub._spans(s, ids)
    full = scrub._merge(scrub._view_spans(s, ids, 0))
    if s.isascii() and scrub._NEEDS_VIEW_RE.search(s) is None:
        assert fast == full
        assert scrub.detection_view(s).text == s
    else:
        assert fast == full  # the same code path: a sanity check


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_scrubbed_text_has_nothing_left(s: str) -> None:
    once = scrub_identifiers(s)
    assert scrub_identifiers(once) == once


# ------------------------------------------- red team, round 2: other joints, escapes

_JOINED = [
    ("card 4111*1111*1111*1111", "card <card>"),
    ("card 4111+1111+1111+1111", "card <card>"),
    ("card 4111:1111:1111:1111", "card <card>"),
    ("card 4111|1111|1111|1111", "card <card>"),
    ("card 4111~1111~1111~1111", "card <card>"),
    ("card 4111x1111x1111x1111", "card <card>"),
    ("card 4111 - 1111 - 1111 - 1111", "card <card>"),
    ("host 192x0x2x55", "host <ip>"),
    ("host 192*0*2*55", "host <ip>"),
    ("host 192|0|2|55", "host <ip>"),
    ("host 192~0~2~55", "host <ip>"),
    ("host 192:0:2:55", "host <ip>"),
    ("host 192 . 0 . 2 . 55", "host <ip>"),
    ("call 555x010x9999", "call <phone>"),
    ("call 555*010*9999", "call <phone>"),
    ("call 555:010:9999", "call <phone>"),
]


@pytest.mark.parametrize(("value", "expected"), _JOINED)
def test_digit_groups_with_other_joints(value: str, expected: str) -> None:
    assert scrub_text(value) == expected
    assert identifier_reasons(value)


@pytest.mark.parametrize(
    "value",
    [
        "at 10:15:00",  # a time has three groups
        "at 10:15",
        "screen 1920x1080",
        "ratio 16:9",
        "score 3 - 1",
        "step 2 of 4",
        "3x4 grid",
    ],
)
def test_times_sizes_and_ratios_stay(value: str) -> None:
    assert scrub_text(value) == value
    assert identifier_reasons(value) == []


def test_colon_ipv4_needs_the_whole_group() -> None:
    # Five groups: not an address read as one (a MAC-like run is a long number instead).
    assert "<ip>" not in scrub_text("10:15:00:12:34")
    assert scrub_text("192:0:2:55") == "<ip>"


_ESCAPED_EMAILS = [
    '"jane.doe"@example.com',
    '"jane doe"@example.com',
    "%22jane.doe%22%40example.com",
    "jane.doe@ example.com",
    "jane.doe @example.com",
    "jane.doe @ example.com",
    "jane.doe\\u0040example.com",
    "jane.doe\\x40example.com",
    "jane.doe=40example.com",
    "jane.doe&#64;example.com",
    "jane.doe&#x40;example.com",
    "jane.doe&commat;example.com",
    "jane.doe%26%2364%3Bexample.com",
    "jane.doe%C0%80@example.com",
    "jane%C0%80.doe@example.com",
    "jane.doe\x00@example.com",
]


@pytest.mark.parametrize("value", _ESCAPED_EMAILS)
def test_quoted_spaced_and_escaped_emails(value: str) -> None:
    out = scrub_identifiers(f"from {value} today")
    assert "<email>" in out and "jane" not in out and "doe" not in out, out
    assert identifier_reasons(value) == ["an email address"]


@pytest.mark.parametrize(
    "value",
    [
        '"jane.doe"@example.com',
        "jane.doe @example.com",
        "jane.doe%26%2364%3Bexample.com",
        "jane.doe%C0%80@example.com",
    ],
)
def test_escaped_emails_in_url_paths(value: str) -> None:
    out = url_template(f"https://shop.example.com/u/{value}")
    assert "example.com" not in out.removeprefix("shop.example.com"), out


@pytest.mark.parametrize(
    "value",
    [
        "a=40&b=2",
        "price=40",
        "q=40+items",
        "Tom &amp; Jerry",
        "x &lt; 3",
        "C:\\x\\y",
        'say "hi" @ noon',
    ],
)
def test_benign_escapes_stay(value: str) -> None:
    assert scrub_text(value) == value
    assert identifier_reasons(value) == []


def _release_record(value: str) -> dict[str, object]:
    return {
        "kind": "aggregate", "schema_version": 1, "pipeline": "web_activity",
        "pipeline_version": 1, "output": "default",
        "window_start": "2026-11-30T10:00:00Z", "window_end": "2026-11-30T11:00:00Z",
        "dims": {"type": "page_view", "url": value}, "metrics": {"events": 30, "users": 12},
        "k": 10, "rollup_level": 0, "noise": None, "release_id": "0" * 32,
    }  # fmt: skip


@pytest.mark.parametrize("value", [v for v, _ in _JOINED] + _ESCAPED_EMAILS)
def test_audit_fails_a_release_with_the_round_2_cases(value: str) -> None:
    from anonstream.audit import audit_records

    report = audit_records([_release_record(value)])
    assert any(f.rule == "identifier" for f in report.findings), value
    assert "jane.doe" not in report.render() + report.to_json()


_LOCALS = st.from_regex(r"[a-z]{3,8}\.[a-z]{3,8}", fullmatch=True)
_AT_FORMS = [
    '"{l}"@{d}', "{l} @{d}", "{l}@ {d}", "{l}\\u0040{d}", "{l}\\x40{d}", "{l}=40{d}",
    "{l}&#64;{d}", "{l}&#x40;{d}", "{l}&commat;{d}", "{l}%26%2364%3B{d}", "{l}%C0%80@{d}",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_LOCALS, st.sampled_from(_AT_FORMS), st.sampled_from(["example.com", "example.org"]))
def test_escaped_at_forms_never_survive(local: str, form: str, domain: str) -> None:
    value = form.format(l=local, d=domain)
    out = scrub_identifiers(f"note {value} end")
    assert local not in out and local.split(".")[0] not in out, out
    assert identifier_reasons(f"note {value} end") == ["an email address"]


def test_hex_host_label_with_a_combining_mark_is_an_id() -> None:
    # Found by the disguise property: NFKC composes "a" + U+0301 into "á", not hex.
    assert referrer_domain("https://0000a\u030100000a00000.example.org/") == ":hash.example.org"
    assert (
        url_template("https://m\u00fcnchen-shop.example.org/x") == "m\u00fcnchen-shop.example.org/x"
    )


# ------------------------------------------------------- ids cut into hex groups

_SPLIT_IDS = [
    "8f3a2b91.c4d7e6a5",
    "8f3a-2b91-c4d7-e6a5",
    "8F3A2B91:C4D7E6A5",
    "8f3a2b91 c4d7e6a5",
    "8f3a2b91_c4d7e6a5",
]


@pytest.mark.parametrize("value", _SPLIT_IDS)
def test_split_hex_ids_are_one_id(value: str) -> None:
    assert scrub_identifiers(f"visitor {value} seen") == "visitor <id> seen"
    assert identifier_reasons(value, tokens=True)
    assert url_template(f"https://shop.example.com/u/{value}") == "shop.example.com/u/:id"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://8f3a2b91.c4d7e6a5.example.com/a", ":id.example.com/a"),
        ("https://www.example.com/u/8f3a2b91/c4d7e6a5", "www.example.com/u/:id/:id"),
        ("https://www.example.com/page/8f3a2b91/c4d7e6a5/x", "www.example.com/page/:id/:id/x"),
        ("https://www.example.com/u/8f3a2b91%2Ec4d7e6a5", "www.example.com/u/:id"),
    ],
)
def test_split_hex_ids_over_labels_and_segments(url: str, expected: str) -> None:
    assert url_template(url) == expected
    assert identifier_reasons(expected.replace(":id", "x")) == []


def test_split_hex_id_host_in_referrer() -> None:
    assert referrer_domain("https://8f3a2b91.c4d7e6a5.example.com/") == ":id.example.com"


@pytest.mark.parametrize(
    "value",
    ["dead beef", "cafe-babe-dead-beef", "v 8f3a2b91.c4d7e6a5z", "page 1234 of 5678"],
)
def test_short_or_wordy_hex_groups_stay(value: str) -> None:
    assert scrub_identifiers(value) == value
    assert identifier_reasons(value, tokens=True) == []


@pytest.mark.parametrize(
    "value", [*_SPLIT_IDS, "shop.example.com/u/8f3a2b91/c4d7e6a5", "8f3a2b91.c4d7e6a5.example.com"]
)
def test_audit_fails_a_release_with_a_split_id(value: str) -> None:
    from anonstream.audit import audit_records

    report = audit_records([_release_record(value)])
    assert any(f.rule == "identifier" for f in report.findings), value


@settings(max_examples=300, deadline=None)
@given(
    st.text("0123456789abcdefABCDEF", min_size=16, max_size=24),
    st.sampled_from([4, 8]),
    st.sampled_from([".", "-", ":", " ", "_", "/"]),
)
def test_split_hex_ids_never_survive(vid: str, width: int, sep: str) -> None:
    assume(any(c.isdigit() for c in vid) and any(c.isalpha() for c in vid))
    assume(len(vid) % width == 0)
    split = sep.join(vid[i : i + width] for i in range(0, len(vid), width))
    assert scrub_identifiers(f"id {split} end") == "id <id> end"
    assert identifier_reasons(split, tokens=True)
    out = url_template(f"https://shop.example.com/u/{split}/x")
    groups = [vid[i : i + width] for i in range(0, len(vid), width)]
    # A path piece that is a short plain word stays a page name ("/u/AAAA"): at most one.
    kept = [g for g in groups if f"/{g}/" in out]
    assert len(kept) <= 1 and not any(not g.isalpha() and not g.isdigit() for g in kept), out


# ------------------------------------------- addresses cut over URL path segments


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://www.example.com/u/amFuZS5kb2VAZXhh/bXBsZS5jb20",
            "www.example.com/u/:email/:email",
        ),
        ("https://www.example.com/jane.doe/@/example.com", "www.example.com/:email/:email/:email"),
        ("https://www.example.com/jane.doe@/example.com", "www.example.com/:email/:email"),
        ("https://www.example.com/u/@jane/posts", "www.example.com/u/:handle/posts"),
        ("https://www.example.com/a/b/c.html", "www.example.com/a/b/c.html"),
    ],
)
def test_addresses_cut_over_path_segments(url: str, expected: str) -> None:
    assert url_template(url) == expected


@pytest.mark.parametrize(
    "value",
    [
        "www.example.com/u/amFuZS5kb2VAZXhh/bXBsZS5jb20",
        "www.example.com/jane.doe/@/example.com",
        "www.example.com/jane.doe@/example.com",
    ],
)
def test_audit_sees_addresses_cut_over_path_segments(value: str) -> None:
    from anonstream.audit import audit_records

    assert identifier_reasons(value) == ["an email address"]
    report = audit_records([_release_record(value)])
    assert any(f.rule == "identifier" for f in report.findings), value


@pytest.mark.parametrize(
    "value", ["shop.example.com/u/:email/orders/:num", "x.com/blog/2026-review/post", "a/b/c.html"]
)
def test_paths_without_addresses_pass_the_audit(value: str) -> None:
    assert identifier_reasons(value, tokens=True) == []
