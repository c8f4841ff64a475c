"""Malformed raw messages, each breaking exactly one rule of the input contract, with the
reason the decoder should give."""

from __future__ import annotations

from typing import Any, Final

import orjson

from anonstream.synthetic.kinds import MAX_MESSAGE_BYTES, TOPIC_USAGE, TOPIC_WEB
from anonstream.synthetic.vocabulary import SITE, UA_TEMPLATES

BASE_WEB: Final[dict[str, Any]] = {
    "event_id": "0b7f4a3e-5c1d-4e8a-9f2b-6d3c8e1a2b4c",
    "ts": "2026-11-30T12:00:01.123Z",
    "type": "page_view",
    "customer_id": "cust-0042",
    "reseller_id": "res-007",
    "visitor_id": "5f0c3a9e7b2d4c1f8a6e0b9d3c7f2a1e",
    "ip": "198.51.100.23",
    "user_agent": UA_TEMPLATES[0][0].replace("{v}", "131"),
    "url": SITE + "/pricing",
    "duration_ms": 5400,
}
BASE_USAGE: Final[dict[str, Any]] = {
    "event_id": "7c2e9d41-0a3b-4f6c-8e5d-1b9a7c3f2e60",
    "ts": 1_796_040_001_123,
    "type": "message_scanned",
    "service": "email_filtering",
    "customer_id": "cust-0042",
    "user_email": "alice.abernathy@northwind.example.com",
    "quantity": 3,
    "bytes": 120_400,
}


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    return orjson.dumps({**base, **changes})


def bad_messages(topic: str = TOPIC_USAGE) -> list[tuple[str, bytes]]:
    """``(expected_reason, payload)`` pairs of malformed raw messages for ``topic``.

    Each payload is otherwise a valid event of ``topic`` (:data:`TOPIC_USAGE` by default,
    or :data:`TOPIC_WEB`), so exactly one rule is broken and decoding it against that
    topic's contract should yield the reason.  Reasons: not_json, not_object,
    missing_field (event_id, ts), wrong_type (ts as a list; a negative or string
    ``quantity`` for usage, ``duration_ms`` for web), bad_timestamp (year 1, year 2100),
    future_timestamp (year 2099), oversized (> :data:`MAX_MESSAGE_BYTES`), not_utf8,
    too_deep (junk nested 200 levels).
    """
    if topic not in (TOPIC_WEB, TOPIC_USAGE):
        raise ValueError(f"unknown topic {topic!r}")
    is_web = topic == TOPIC_WEB
    base = BASE_WEB if is_web else BASE_USAGE
    counter = "duration_ms" if is_web else "quantity"
    good = orjson.dumps(base)
    pad = "x" * (MAX_MESSAGE_BYTES + 1024)
    deep = "[" * 200 + "]" * 200
    not_utf8 = good.replace(b'"customer_id":"cust-0042"', b'"customer_id":"cust-\xff\xfe42"')
    assert not_utf8 != good
    return [
        ("not_json", b"this is not json"),
        ("not_json", good[: len(good) // 2]),
        ("not_object", b'[{"event_id": "a"}, 2, 3]'),
        ("missing_field", orjson.dumps({k: v for k, v in base.items() if k != "event_id"})),
        ("missing_field", orjson.dumps({k: v for k, v in base.items() if k != "ts"})),
        ("wrong_type", _with(base, ts=["2026-11-30T12:00:01Z"])),
        ("wrong_type", _with(base, **{counter: -5})),
        ("wrong_type", _with(base, **{counter: "7"})),
        ("bad_timestamp", _with(base, ts="2026-13-45T99:61:00Z")),
        ("bad_timestamp", _with(base, ts="last tuesday")),
        ("bad_timestamp", _with(base, ts="0001-01-01T00:00:00+01:00")),  # year 0 in UTC
        ("bad_timestamp", _with(base, ts="2100-01-01T00:00:00Z")),  # past the range
        ("bad_timestamp", _with(base, ts=4_102_444_800_000)),
        ("future_timestamp", _with(base, ts="2099-01-01T00:00:00Z")),
        ("future_timestamp", _with(base, ts=4_070_908_800_000)),  # 2099-01-01
        ("oversized", _with(base, user_agent="Mozilla/5.0 " + pad)),
        ("not_utf8", not_utf8),
        ("too_deep", good[:-1] + b',"junk":' + deep.encode() + b"}"),
    ]
