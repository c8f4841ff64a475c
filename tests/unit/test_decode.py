"""Decoding raw bytes against input contract v1: good events pass, bad ones become data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.contract import CONTRACTS, SERVICE_USAGE, WEB_ACTIVITY, Contract
from anonstream.core.decode import (
    _BAD,
    BAD_TIMESTAMP,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FUTURE_MS,
    FUTURE_TIMESTAMP,
    INTERNAL_ERROR,
    MISSING_FIELD,
    NOT_JSON,
    NOT_OBJECT,
    REASONS,
    TOO_DEEP,
    WRONG_TYPE,
    Decoded,
    Decoder,
    Rejection,
    TimestampCache,
    parse_ts,
    plain_heads_ms,
)
from anonstream.synthetic import (
    DEFAULT_START_MS,
    MAX_MESSAGE_BYTES,
    TOPIC_USAGE,
    TOPIC_WEB,
    EventGenerator,
    Workload,
    bad_messages,
)

NOW = DEFAULT_START_MS + 86_400_000  # the injected clock: a day after the generator's start
T0 = 1_796_040_001_123  # 2026-11-30T12:00:01.123Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONTRACT_OF_TOPIC = {TOPIC_WEB: WEB_ACTIVITY, TOPIC_USAGE: SERVICE_USAGE}


def decoder(contract: Contract, now: int = NOW, **kw: Any) -> Decoder:
    return Decoder(contract, clock_ms=lambda: now, **kw)


def web_event(**changes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "0b7f4a3e-5c1d-4e8a-9f2b-6d3c8e1a2b4c",
        "ts": T0,
        "type": "page_view",
        "visitor_id": "5f0c3a9e7b2d4c1f8a6e0b9d3c7f2a1e",
        "url": "https://www.example.com/pricing",
        "duration_ms": 5400,
    }
    ev.update(changes)
    return ev


def usage_event(**changes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "7c2e9d41-0a3b-4f6c-8e5d-1b9a7c3f2e60",
        "ts": T0,
        "type": "message_scanned",
        "service": "email_filtering",
        "user_email": "alice.abernathy@northwind.example.com",
        "quantity": 3,
        "bytes": 120_400,
    }
    ev.update(changes)
    return ev


def decode(contract: Contract, ev: dict[str, Any], **kw: Any) -> Decoded | Rejection:
    return decoder(contract, **kw).decode(orjson.dumps(ev))


def exact_ms(text: str) -> int:
    """Reference conversion in integer arithmetic (no float rounding)."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


# ----------------------------------------------------------------------- rejections ---


@pytest.mark.parametrize("topic", [TOPIC_WEB, TOPIC_USAGE])
def test_every_bad_message_is_rejected_with_its_reason(topic: str) -> None:
    dec = decoder(CONTRACT_OF_TOPIC[topic])
    cases = bad_messages(topic)
    # Every reason a message can earn by itself (internal_error is the engine's own fault).
    assert {reason for reason, _ in cases} == set(REASONS) - {INTERNAL_ERROR}
    for reason, payload in cases:
        out = dec.decode(payload)
        assert isinstance(out, Rejection), (reason, payload[:80])
        assert out.reason == reason, (reason, out, payload[:80])


@pytest.mark.parametrize("topic", [TOPIC_WEB, TOPIC_USAGE])
def test_rejections_name_the_field(topic: str) -> None:
    """missing_field, wrong_type and timestamp rejections say which field; never a value."""
    counter = "duration_ms" if topic == TOPIC_WEB else "quantity"
    expected_fields = {
        MISSING_FIELD: {"event_id", "ts"},
        WRONG_TYPE: {"ts", counter},
        BAD_TIMESTAMP: {"ts"},
        FUTURE_TIMESTAMP: {"ts"},
    }
    seen: dict[str, set[str | None]] = {}
    dec = decoder(CONTRACT_OF_TOPIC[topic])
    for reason, payload in bad_messages(topic):
        out = dec.decode(payload)
        assert isinstance(out, Rejection)
        seen.setdefault(reason, set()).add(out.field)
        if out.field is None:
            assert out.describe() == reason
        else:
            assert out.describe() == f"{reason}:{out.field}"
    for reason, fields in expected_fields.items():
        assert seen[reason] == fields, reason
    for reason in ("not_json", "not_object", "oversized", "not_utf8"):
        assert seen[reason] == {None}


@pytest.mark.parametrize(
    ("ev", "field"),
    [
        (usage_event(type=None), "type"),
        (usage_event(ts=None), "ts"),
        ({k: v for k, v in usage_event().items() if k != "type"}, "type"),
    ],
)
def test_missing_required_field(ev: dict[str, Any], field: str) -> None:
    assert decode(SERVICE_USAGE, ev) == Rejection(MISSING_FIELD, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": -1}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"bytes": "120400"}, "bytes"),
        ({"user_email": 42}, "user_email"),
        ({"user_email": ["a@example.com"]}, "user_email"),
        ({"type": {"name": "x"}}, "type"),
        ({"ts": 1.7e12}, "ts"),
        ({"ts": True}, "ts"),
        ({"ts": {"iso": "2026-11-30T12:00:01Z"}}, "ts"),
        ({"billing": "4000123412341234"}, "billing"),
        ({"billing": {"card_number": 4000123412341234}}, "billing.card_number"),
        ({"billing": {"name": ["Jane", "Doe"]}}, "billing.name"),
    ],
)
def test_wrong_type_names_the_field(changes: dict[str, Any], field: str) -> None:
    out = decode(SERVICE_USAGE, usage_event(**changes))
    assert out == Rejection(WRONG_TYPE, field)


def test_rejection_never_carries_the_value() -> None:
    email = "jane.doe@example.com"
    out = decode(SERVICE_USAGE, usage_event(user_email=[email]))
    assert isinstance(out, Rejection)
    assert email not in repr(out) and email not in out.describe()


def test_null_optional_fields_are_accepted() -> None:
    out = decode(WEB_ACTIVITY, web_event(ip=None, user_email=None, duration_ms=None))
    assert isinstance(out, Decoded)


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"{'a': 1}", b"NaN", b'{"a":1}x'])
def test_not_json(raw: bytes) -> None:
    assert decoder(WEB_ACTIVITY).decode(raw) == Rejection(NOT_JSON)


@pytest.mark.parametrize("raw", [b"42", b"null", b'"event"', b"[]", b"true"])
def test_not_object(raw: bytes) -> None:
    assert decoder(WEB_ACTIVITY).decode(raw) == Rejection(NOT_OBJECT)


def test_size_limit_is_inclusive_and_configurable() -> None:
    raw = orjson.dumps(web_event())
    assert isinstance(decoder(WEB_ACTIVITY, max_bytes=len(raw)).decode(raw), Decoded)
    assert decoder(WEB_ACTIVITY, max_bytes=len(raw) - 1).decode(raw).reason == "oversized"  # type: ignore[union-attr]
    assert DEFAULT_MAX_BYTES == MAX_MESSAGE_BYTES


def test_deep_unknown_field_is_too_deep_but_shallow_is_fine() -> None:
    ok = decode(WEB_ACTIVITY, web_event(junk=[[1, 2], {"a": 3}]))
    assert isinstance(ok, Decoded) and ok.unknown_fields == 1
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    assert decode(WEB_ACTIVITY, web_event(junk=deep)) == Rejection(TOO_DEEP)


# ------------------------------------------------------------------------ timestamps ---


@pytest.mark.parametrize(
    "ts",
    [
        T0,
        "2026-11-30T12:00:01.123Z",
        "2026-11-30T13:00:01.123+01:00",
        "2026-11-30T07:00:01.123-05:00",
        "2026-11-30T17:30:01.123+05:30",
        "2026-11-30T12:00:01.123+00:00",
        "2026-11-30T12:00:01.123-00:00",
        "2026-11-30T12:00:01.123456Z",  # microseconds: truncated to the millisecond
        "2026-11-30 12:00:01.123Z",  # RFC 3339 allows a space for readability
    ],
)
def test_rfc3339_and_epoch_ms_are_the_same_instant(ts: int | str) -> None:
    assert parse_ts(ts) == T0
    out = decode(WEB_ACTIVITY, web_event(ts=ts))
    assert isinstance(out, Decoded)
    assert out.ts_ms == T0
    assert out.event["ts"] == ts  # the raw value is not rewritten


def test_whole_seconds_without_fraction() -> None:
    assert parse_ts("2026-11-30T12:00:01Z") == T0 - 123
    assert parse_ts("2026-11-30T13:00:01+01:00") == T0 - 123


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-30T12:00:01.123",  # naive: no offset
        "2026-11-30T12:00:01.123456",
        "2026-11-30 12:00:01.123",
        "2026-11-30T12:00:01",
        "2026-11-30",
        "2026-11-30T12:00Z",
        "30/11/2026 12:00:01 +00:00",
        "2026-13-45T99:61:00Z",
        "1796040001123",  # epoch ms as a string
        "",
        1_796_040_001,  # epoch seconds, not milliseconds
        0,
        -1,
    ],
)
def test_bad_timestamps_are_rejected(ts: int | str) -> None:
    assert parse_ts(ts) is None
    assert decode(WEB_ACTIVITY, web_event(ts=ts)) == Rejection(BAD_TIMESTAMP, "ts")


def test_future_timestamps_relative_to_the_injected_clock() -> None:
    now = T0
    limit = now + DEFAULT_MAX_FUTURE_MS
    assert isinstance(decode(WEB_ACTIVITY, web_event(ts=limit), now=now), Decoded)
    assert decode(WEB_ACTIVITY, web_event(ts=limit + 1), now=now) == Rejection(
        FUTURE_TIMESTAMP, "ts"
    )
    # The same event is fine once the clock has moved on.
    assert isinstance(decode(WEB_ACTIVITY, web_event(ts=limit + 1), now=now + 1), Decoded)
    # A tighter tolerance, with an RFC 3339 timestamp.
    dec = decoder(WEB_ACTIVITY, now=now, max_future_ms=60_000)
    near = dec.decode(orjson.dumps(web_event(ts="2026-11-30T12:01:01.123Z")))
    far = dec.decode(orjson.dumps(web_event(ts="2026-11-30T12:01:01.124Z")))
    assert isinstance(near, Decoded)
    assert far == Rejection(FUTURE_TIMESTAMP, "ts")


def test_the_clock_is_read_per_message() -> None:
    now = [T0 - DEFAULT_MAX_FUTURE_MS - 1]
    dec = Decoder(WEB_ACTIVITY, clock_ms=lambda: now[0])
    raw = orjson.dumps(web_event())
    assert dec.decode(raw) == Rejection(FUTURE_TIMESTAMP, "ts")
    now[0] += 1
    assert isinstance(dec.decode(raw), Decoded)


def test_old_timestamps_are_accepted() -> None:
    """Late data is not the decoder's business (windows handle lateness)."""
    out = decode(WEB_ACTIVITY, web_event(ts="2001-01-01T00:00:00Z"))
    assert isinstance(out, Decoded) and out.ts_ms == 978_307_200_000


def test_millisecond_precision_is_exact() -> None:
    """Regression: parse_ts computed int(dt.timestamp() * 1000); the float product can fall
    just below the integer and was truncated, so these parsed 1 ms early (...26.666Z gave
    1092738326665) and the RFC 3339 and epoch-ms forms of one instant disagreed.
    """
    texts = ["2004-08-17T10:25:26.666Z", "2038-09-08T13:38:42.542Z", "2039-07-06T01:24:33.693Z"]
    wrong = {t: (parse_ts(t), exact_ms(t)) for t in texts if parse_ts(t) != exact_ms(t)}
    assert not wrong, wrong


def test_lowercase_z_is_rfc3339() -> None:
    """RFC 3339 section 5.6: "T" and "Z" may be lower case.

    Regression: "...z" was rejected as bad_timestamp (datetime.fromisoformat in Python 3.11
    does not accept a lowercase "z"), while a lowercase "t" was accepted.
    """
    assert parse_ts("2026-11-30t12:00:01.123Z") == T0
    assert parse_ts("2026-11-30T12:00:01.123z") == T0


# -------------------------------------------------------------------- unknown fields ---


def test_unknown_fields_are_counted() -> None:
    out = decode(WEB_ACTIVITY, web_event(session_token="abc", fingerprint={"canvas": 1}, n=3))
    assert isinstance(out, Decoded)
    assert out.unknown_fields == 3


def test_unknown_billing_children_are_counted() -> None:
    billing = {"card_number": "4000123412341234", "cvv": "123", "expiry": "12/30"}
    out = decode(SERVICE_USAGE, usage_event(billing=billing, device="x"))
    assert isinstance(out, Decoded)
    assert out.unknown_fields == 3  # cvv, expiry and the top-level device


def test_known_fields_are_not_counted() -> None:
    billing = {"card_number": "4000123412341234", "account_number": "1", "name": "Jane Doe"}
    out = decode(SERVICE_USAGE, usage_event(billing=billing, ip="203.0.113.7", phone=None))
    assert isinstance(out, Decoded)
    assert out.unknown_fields == 0


def test_fields_of_the_other_contract_are_unknown() -> None:
    out = decode(WEB_ACTIVITY, web_event(service="archiving", quantity=1))
    assert isinstance(out, Decoded)
    assert out.unknown_fields == 2


# --------------------------------------------------------------------- good events ---


@pytest.mark.parametrize("contract_name", ["web_activity", "service_usage"])
def test_generated_events_all_decode(contract_name: str) -> None:
    contract = CONTRACTS[contract_name]
    gen = EventGenerator(Workload(seed=11))
    events = list(
        gen.web_events(4000) if contract_name == "web_activity" else gen.usage_events(4000)
    )
    dec = decoder(contract)
    for ev in events:
        out = dec.decode(orjson.dumps(ev))
        assert isinstance(out, Decoded), (out, ev)
        assert out.unknown_fields == 0
        assert out.event == ev
        ts = ev["ts"]
        assert out.ts_ms == (ts if isinstance(ts, int) else exact_ms(ts))


def test_generated_mixed_stream_decodes_per_topic() -> None:
    decoders = {t: decoder(c) for t, c in CONTRACT_OF_TOPIC.items()}
    for topic, ev in EventGenerator(Workload(seed=5)).mixed(2000):
        assert isinstance(decoders[topic].decode(orjson.dumps(ev)), Decoded)


def test_validate_accepts_already_parsed_objects() -> None:
    out = decoder(WEB_ACTIVITY).validate(web_event())
    assert isinstance(out, Decoded) and out.ts_ms == T0


_digits = st.text("0123456789", min_size=1, max_size=4)
_rfc3339_like = st.builds(
    lambda y, mo, d, sep, h, mi, se, frac, tz, junk: (
        f"{y}-{mo}-{d}{sep}{h}:{mi}:{se}{frac}{tz}{junk}"
    ),
    st.sampled_from(["2026", "1970", "0001", "9999", "2000", "20x6"]),
    st.sampled_from(["11", "02", "13", "1"]),
    st.sampled_from(["30", "29", "31", "01", "00"]),
    st.sampled_from(["T", "t", " ", "_"]),
    st.sampled_from(["00", "12", "23", "24", "9"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "5"]),
    st.one_of(st.just(""), st.builds(lambda ds: "." + ds, st.text("0123456789", max_size=11))),
    st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", "+0530",
                     "+05:30:15", "+05:30:15.5", "+05", "UTC"]),
    st.one_of(st.just(""), st.text(max_size=3), _digits),
)  # fmt: skip


@settings(max_examples=500)
@given(st.lists(_rfc3339_like | st.text(max_size=40), min_size=1, max_size=20))
def test_timestamp_cache_agrees_with_parse_ts_whenever_it_answers(texts: list[str]) -> None:
    cache = TimestampCache(limit=8)  # small: the clearing path runs too
    for text in texts * 2:  # the second pass reads the caches
        got = cache(text)
        if got:
            assert got == parse_ts(text), text


@settings(max_examples=300)
@given(st.lists(_rfc3339_like | st.text(max_size=40), min_size=1, max_size=30))
def test_timestamp_cache_reads_a_whole_batch_as_parse_ts_reads_each(texts: list[str]) -> None:
    # Mixed lengths, non-ASCII and NUL characters in one batch, as the fast path sees them.
    cache = TimestampCache(limit=8)
    for batch in (texts, texts[::-1] + texts):
        for text, got in zip(batch, cache.many(batch).tolist(), strict=True):
            if got:
                assert got == parse_ts(text), text


def test_timestamp_cache_answers_the_usual_shapes() -> None:
    cache = TimestampCache()
    usual = ["2026-11-30T12:00:01.123Z", "2026-11-30T13:00:01.123+01:00", "2026-11-30t12:00:01z"]
    for text in [*usual, "2026-11-30T12:00:01Z", "2026-11-30 12:00:01.123456Z"]:
        assert cache(text) == parse_ts(text) != 0, text
    assert cache("2026-11-30T12:00:01") == 0  # no offset: the reference says no
    batch = [*usual, "2026-11-30T12:00:01Z\x00", "2026-11-30T12:00:01.12é+01:00", *usual]
    got = cache.many(batch).tolist()
    # (fromisoformat reads up to a trailing NUL: the reference takes the first of those.)
    assert got == [parse_ts(t) or 0 for t in batch] and got[4] == 0


_heads = st.builds(
    lambda y, mo, d, sep, h, mi, s: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}",
    st.integers(0, 9999).map(lambda y: f"{y:04d}") | st.sampled_from(["20x6", "١٢٣٤", "+202"]),
    st.integers(0, 13).map(lambda m: f"{m:02d}") | st.just("1a"),
    st.integers(0, 32).map(lambda d: f"{d:02d}"),
    st.sampled_from(["T", "t", " ", "_", "é"]),
    st.integers(0, 25).map(lambda h: f"{h:02d}"),
    st.integers(0, 61).map(lambda m: f"{m:02d}"),
    st.integers(0, 61).map(lambda s: f"{s:02d}"),
)


@settings(max_examples=300)
@given(st.lists(_heads | st.text(max_size=21), min_size=1, max_size=30))
def test_plain_heads_are_read_all_at_once_exactly_as_parse_ts_reads_them(heads: list[str]) -> None:
    got = plain_heads_ms(heads).tolist()
    for head, ms in zip(heads, got, strict=True):
        ref = parse_ts(head + "Z") if len(head) == 19 and head[10] in "Tt " else None
        if ms != _BAD:
            assert ms == ref, head
        elif ref is not None and head.isascii() and head[:4].isdigit():
            # Only hand-checked shapes are read: ISO forms fromisoformat also takes
            # (week dates, other separators) must not be answered here.
            assert not all(head[i].isdigit() for i in (0, 1, 2, 3, 5, 6, 8, 9)), head


def test_plain_heads_at_the_calendar_edges() -> None:
    heads = ["1900-02-29T00:00:00", "2000-02-29T12:00:00", "2024-02-29t23:59:59",
             "2023-02-29T00:00:00", "2100-02-29 00:00:00", "0001-01-01T00:00:00",
             "9999-12-31T23:59:59", "1970-01-01T00:00:00", "0000-01-01T00:00:00",
             "2026-04-31T00:00:00", "2026-12-31T24:00:00", "1969-12-31T23:59:59"]  # fmt: skip
    got = plain_heads_ms(heads).tolist()
    want = [_BAD if (ms := parse_ts(h + "Z")) is None else ms for h in heads]
    assert got == want
