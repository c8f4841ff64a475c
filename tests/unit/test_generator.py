"""Unit tests for the synthetic event generator (anonstream.synthetic)."""

from __future__ import annotations

import ipaddress
import itertools
import re
import statistics
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson
import pytest

from anonstream.synthetic import (
    DEFAULT_START_MS,
    MAX_MESSAGE_BYTES,
    REQUIRED_USAGE,
    REQUIRED_WEB,
    SERVICES_FOR_TYPE,
    TOPIC_USAGE,
    TOPIC_WEB,
    USAGE_TYPES,
    WEB_TYPES,
    EventGenerator,
    Workload,
    bad_messages,
    identifiers_of,
    luhn_valid,
)

DOC_NETS = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]
RESERVED_EMAIL = re.compile(r"^[a-z0-9._]+@([a-z0-9-]+\.)*example\.(com|org|net)$")
PHONE = re.compile(r"^\+1 \d{3}-555-01\d\d$")
REASONS = {
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_timestamp",
    "future_timestamp",
    "oversized",
    "not_utf8",
    "too_deep",
}


@pytest.fixture(scope="module")
def web() -> list[dict[str, Any]]:
    return list(EventGenerator(Workload()).web_events(20_000))


@pytest.fixture(scope="module")
def usage() -> list[dict[str, Any]]:
    return list(EventGenerator(Workload()).usage_events(10_000))


def ts_ms(ts: int | str) -> int:
    if isinstance(ts, int):
        return ts
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# ---------------------------------------------------------------------- determinism ---


def test_deterministic_for_a_seed() -> None:
    def run(seed: int) -> bytes:
        g = EventGenerator(Workload(seed=seed))
        return orjson.dumps(
            [list(g.web_events(300)), list(g.usage_events(300)), list(g.mixed(300))]
        )

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_encoded_matches_dict_events() -> None:
    a = list(EventGenerator(Workload(seed=3)).encoded_web_events(1000))
    b = [orjson.dumps(e) for e in EventGenerator(Workload(seed=3)).web_events(1000)]
    assert a == b


def test_workload_validation() -> None:
    with pytest.raises(ValueError):
        Workload(users=0)
    with pytest.raises(ValueError):
        Workload(events_per_second_of_event_time=0)


# ---------------------------------------------------------------------- contract ------


def check_common(ev: dict[str, Any]) -> None:
    assert isinstance(ev["event_id"], str) and ev["event_id"]
    assert isinstance(ev["ts"], int | str)
    if "customer_id" in ev:
        assert re.fullmatch(r"cust-\d{4}", ev["customer_id"])
    if "reseller_id" in ev:
        assert re.fullmatch(r"res-\d{3}", ev["reseller_id"])
        assert "customer_id" in ev


def test_web_events_follow_contract(web: list[dict[str, Any]]) -> None:
    for ev in web:
        missing = [f for f in REQUIRED_WEB if f not in ev]
        assert not missing, (missing, ev)
        check_common(ev)
        assert ev["type"] in WEB_TYPES
        assert re.fullmatch(r"[0-9a-f]{32}", ev["visitor_id"])
        assert ev["url"].startswith("https://www.example.com/")
        assert ev["user_agent"].startswith("Mozilla/5.0 (")
        if "duration_ms" in ev:
            assert ev["type"] == "page_view"
            assert isinstance(ev["duration_ms"], int) and 200 <= ev["duration_ms"] <= 600_000
        if "campaign_id" in ev:
            assert ev["type"] in ("email_open", "email_click")
            assert re.fullmatch(r"cmp-\d{4}-\d{2}-[a-z]", ev["campaign_id"])
        else:
            assert ev["type"] not in ("email_open", "email_click")
        if ev["type"] == "portal_login":
            assert "user_email" in ev
    assert len({ev["event_id"] for ev in web}) == len(web)
    types = Counter(ev["type"] for ev in web)
    assert set(types) == set(WEB_TYPES)
    assert types.most_common(1)[0][0] == "page_view"
    ipv6 = sum(":" in ev["ip"] for ev in web) / len(web)
    assert 0.10 < ipv6 < 0.20
    logged_in = sum("user_email" in ev for ev in web) / len(web)
    assert 0.3 < logged_in < 0.5
    assert 0.2 < sum("referrer" in ev for ev in web) / len(web) < 0.8


def test_usage_events_follow_contract(usage: list[dict[str, Any]]) -> None:
    for ev in usage:
        missing = [f for f in REQUIRED_USAGE if f not in ev]
        assert not missing, (missing, ev)
        check_common(ev)
        assert ev["type"] in USAGE_TYPES
        assert ev["service"] in SERVICES_FOR_TYPE[ev["type"]]
        for field in ("quantity", "bytes"):
            assert type(ev[field]) is int and ev[field] >= 0
        if "billing" in ev:
            assert set(ev["billing"]) == {"card_number", "account_number", "name"}
    assert len({ev["event_id"] for ev in usage}) == len(usage)
    types = Counter(ev["type"] for ev in usage)
    assert set(types) == set(USAGE_TYPES)
    assert types.most_common(1)[0][0] == "message_scanned"
    services = {ev["service"] for ev in usage}
    assert services == {"email_filtering", "archiving", "encryption", "continuity", "portal"}
    assert 0 < sum("billing" in ev for ev in usage) / len(usage) < 0.1


def test_every_generated_field_is_one_its_contract_lists() -> None:
    """The generator takes its topics from the input contract and writes only the fields
    (and billing sub-fields) that contract lists: a field the pipelines would drop as
    unknown would make the demo and the benchmarks measure the wrong thing."""
    from anonstream.core.contract import SERVICE_USAGE, WEB_ACTIVITY
    from anonstream.synthetic import CONTRACT_OF_TOPIC

    assert {
        WEB_ACTIVITY.topic: WEB_ACTIVITY,
        SERVICE_USAGE.topic: SERVICE_USAGE,
    } == CONTRACT_OF_TOPIC
    seen: dict[str, set[str]] = {TOPIC_WEB: set(), TOPIC_USAGE: set()}
    for topic, ev in EventGenerator(Workload(seed=3)).mixed(20_000):
        contract = CONTRACT_OF_TOPIC[topic]
        assert set(ev) <= set(contract.names), (topic, set(ev) - set(contract.names))
        seen[topic].update(ev)
        if "billing" in ev:
            billing = contract.field("billing")
            assert billing is not None
            assert set(ev["billing"]) <= {c.name for c in billing.children}
    for topic, contract in CONTRACT_OF_TOPIC.items():
        assert {f.name for f in contract.fields if f.required} <= seen[topic]
        assert set(REQUIRED_WEB if topic == TOPIC_WEB else REQUIRED_USAGE) <= set(contract.names)


def test_mixed_is_mostly_web() -> None:
    pairs = list(EventGenerator(Workload()).mixed(5000))
    topics = Counter(topic for topic, _ in pairs)
    assert set(topics) == {TOPIC_WEB, TOPIC_USAGE}
    assert 0.65 < topics[TOPIC_WEB] / len(pairs) < 0.75
    for topic, ev in pairs:
        assert ev["type"] in (WEB_TYPES if topic == TOPIC_WEB else USAGE_TYPES)
    # one event-time axis shared by both kinds: mostly in order
    times = [ts_ms(ev["ts"]) for _, ev in pairs]
    in_order = sum(a <= b for a, b in itertools.pairwise(times))
    assert in_order / len(times) > 0.7


# ---------------------------------------------------------------------- timestamps ----


def test_both_timestamp_forms(web: list[dict[str, Any]]) -> None:
    forms = Counter(type(ev["ts"]).__name__ for ev in web)
    assert forms["int"] > 0.3 * len(web) and forms["str"] > 0.3 * len(web)
    strings = [ev["ts"] for ev in web if isinstance(ev["ts"], str)]
    assert any(s.endswith("Z") for s in strings)
    assert any(re.search(r"[+-]\d\d:\d\d$", s) for s in strings)
    for s in strings:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)", s), s


def test_event_time_axis() -> None:
    wl = Workload(events_per_second_of_event_time=50.0)
    events = list(EventGenerator(wl).web_events(5000))
    times = [ts_ms(ev["ts"]) for ev in events]
    for i, t in enumerate(times):
        expected = wl.start_ms + i * 20  # 50 events per second
        assert abs(t - expected) <= 2000
        assert t >= DEFAULT_START_MS
    assert times[0] - DEFAULT_START_MS < 2001
    in_order = sum(a <= b for a, b in itertools.pairwise(times))
    assert in_order / len(times) > 0.7


# ---------------------------------------------------------------------- shape ---------


def test_web_event_size(web: list[dict[str, Any]]) -> None:
    mean = statistics.mean(len(orjson.dumps(ev)) for ev in web)
    assert 350 <= mean <= 450, mean


def test_zipf_heavy_users(web: list[dict[str, Any]]) -> None:
    per_user = Counter(ev["visitor_id"] for ev in web)
    top = sum(n for _, n in per_user.most_common(10))  # top 1% of 1000 users
    assert top / len(web) > 0.25
    assert len(per_user) > 500  # ... and a long tail


def test_zipf_pages(web: list[dict[str, Any]]) -> None:
    pages = Counter(ev["url"].split("?")[0] for ev in web if ev["type"] == "page_view")
    top = pages.most_common(1)[0]
    assert top[0] == "https://www.example.com/"
    assert top[1] > 5 * statistics.median(pages.values())


def test_user_agents_parse() -> None:
    ua_parser = pytest.importorskip("ua_parser")
    g = EventGenerator(Workload(users=3000))
    families, oses = set(), set()
    for ua in set(g.population.user_agent):
        parsed = ua_parser.parse(ua)
        assert parsed.user_agent is not None and parsed.os is not None
        families.add(parsed.user_agent.family)
        oses.add(parsed.os.family)
    assert families == {"Chrome", "Firefox", "Safari", "Edge", "Mobile Safari", "Chrome Mobile"}
    assert oses == {"Windows", "Mac OS X", "Linux", "iOS", "Android"}


# ---------------------------------------------------------------------- fake data -----


def test_only_reserved_or_fictitious_values() -> None:
    pop = EventGenerator(Workload(users=2000)).population
    assert len(set(pop.email)) == len(pop.email)
    for email in pop.email:
        assert RESERVED_EMAIL.match(email), email
    for ip in (*pop.ipv4, *pop.ipv6):
        addr = ipaddress.ip_address(ip)
        assert any(addr in net for net in DOC_NETS), ip
        assert str(addr) == ip
    for phone in pop.phone:
        assert PHONE.match(phone), phone
    for card in pop.card_number:
        assert len(card) == 16 and card.startswith("4000") and luhn_valid(card)


def test_urls_carry_identifiers(web: list[dict[str, Any]]) -> None:
    urls = [ev["url"] for ev in web]
    assert any("/users/" in u and "@" in u for u in urls)
    assert any(re.search(r"/orders/\d+$", u) for u in urls)
    assert any(re.search(r"/invoices/[0-9a-f-]{36}$", u) for u in urls)
    assert any("email=" in u and "%40" in u and "utm_source=newsletter" in u for u in urls)
    assert any(re.search(r"\?session=[0-9a-f]{32}$", u) for u in urls)
    refs = [ev["referrer"] for ev in web if "referrer" in ev]
    assert any(r.startswith("https://www.google.com/search?q=") for r in refs)


# ---------------------------------------------------------------------- identifiers ---


def test_identifiers_of_web_event() -> None:
    ev = {
        "event_id": "e1",
        "ts": 1,
        "type": "page_view",
        "visitor_id": "ab" * 16,
        "user_email": "alice.abernathy@northwind.example.com",
        "ip": "198.51.100.7",
        "user_agent": "Mozilla/5.0",
        "url": "https://www.example.com/account?email=bruno.dunmore%40x.example.org&session=abc123",
        "referrer": "https://www.google.com/search?q=carla+castellano+email",
    }
    ids = identifiers_of(ev)
    assert {
        "ab" * 16,
        "alice.abernathy@northwind.example.com",
        "alice.abernathy",
        "198.51.100.7",
        "bruno.dunmore@x.example.org",
        "bruno.dunmore%40x.example.org",
        "bruno.dunmore",
        "abc123",
        "carla+castellano",
        "carla castellano",
    } <= ids
    assert "e1" not in ids and "page_view" not in ids


def test_identifiers_of_usage_event_with_billing(usage: list[dict[str, Any]]) -> None:
    ev = next(e for e in usage if "billing" in e)
    ids = identifiers_of(ev)
    assert ev["user_email"] in ids and ev["user_email"].split("@")[0] in ids
    assert {ev["billing"]["card_number"], ev["billing"]["account_number"]} <= ids
    assert ev["billing"]["name"] in ids
    for field in ("user_name", "phone", "address", "ip"):
        if field in ev:
            assert ev[field] in ids


def test_identifiers_appear_verbatim(
    web: list[dict[str, Any]], usage: list[dict[str, Any]]
) -> None:
    found_in_url = 0
    for ev in [*web[:3000], *usage[:2000]]:
        text = orjson.dumps(ev).decode()
        ids = identifiers_of(ev)
        assert ev.get("visitor_id", ev.get("user_email")) in ids
        assert ev["event_id"] not in ids
        haystack = (text + "\n" + unquote_plus(text)).lower()
        for ident in ids:
            assert ident.lower() in haystack, (ident, text)
        if "user_email" not in ev and any("@" in i for i in ids):
            found_in_url += 1
    assert found_in_url > 0  # e-mails hidden in URLs of anonymous visitors are found too


# ---------------------------------------------------------------------- bad input -----


@pytest.mark.parametrize("topic", [TOPIC_USAGE, TOPIC_WEB])
def test_bad_messages_cover_all_reasons(topic: str) -> None:
    bad = bad_messages(topic)
    assert {reason for reason, _ in bad} == REASONS
    assert all(isinstance(p, bytes) for _, p in bad)
    assert bad == bad_messages(topic)  # deterministic
    assert bad_messages() == bad_messages(TOPIC_USAGE)


@pytest.mark.parametrize("topic", [TOPIC_USAGE, TOPIC_WEB])
def test_bad_messages_break_what_they_claim(topic: str) -> None:
    counter = "quantity" if topic == TOPIC_USAGE else "duration_ms"
    for reason, payload in bad_messages(topic):
        if reason == "oversized":
            assert len(payload) > MAX_MESSAGE_BYTES
            continue
        assert len(payload) <= MAX_MESSAGE_BYTES, reason
        if reason == "not_utf8":
            with pytest.raises(UnicodeDecodeError):
                payload.decode("utf-8")
            continue
        payload.decode("utf-8")
        if reason == "not_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(payload)
            continue
        doc = orjson.loads(payload)
        if reason == "not_object":
            assert not isinstance(doc, dict)
            continue
        assert isinstance(doc, dict)
        if reason == "missing_field":
            assert "event_id" not in doc or "ts" not in doc
        elif reason == "wrong_type":
            value = doc[counter]
            assert isinstance(doc["ts"], list) or not (type(value) is int and value >= 0)
        elif reason == "bad_timestamp":
            # Not a date, or one out of [2000-01-01, 2100-01-01).
            try:
                ms = ts_ms(doc["ts"])
            except (ValueError, OverflowError):
                continue
            assert not 946_684_800_000 <= ms < 4_102_444_800_000, doc["ts"]
        elif reason == "future_timestamp":
            assert datetime.fromisoformat("2099-01-01T00:00:00+00:00").timestamp() * 1000 <= (
                ts_ms(doc["ts"])
            )
        elif reason == "too_deep":
            assert depth(doc) >= 200
