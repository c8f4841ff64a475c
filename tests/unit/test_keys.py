"""Secret loading, keyed pseudonyms with per-period keys, and keyed event-id hashes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonstream.core.keys import (
    MIN_SECRET_BYTES,
    ROTATION_MS,
    SECRET_ENV,
    SECRET_FILE_ENV,
    EventHasher,
    MasterSecret,
    Pseudonymizer,
    SecretError,
    load_secret,
)

SECRET = "k3y-0f-the-d4y-5f1e0c9a8b7d6e5f4a3b2c1d"  # 40 bytes, easy to spot in text
OTHER = "an-entirely-different-secret-value-42"
DAY = ROTATION_MS["daily"]
T0 = 1_796_040_001_123  # 2026-11-30T12:00:01.123Z


def secret(value: str = SECRET) -> MasterSecret:
    return load_secret({SECRET_ENV: value})


def assert_hidden(text: str, value: str = SECRET) -> None:
    assert value not in text
    assert value.encode().hex() not in text
    assert repr(value.encode()) not in text
    assert value[:16] not in text  # not even a prefix


# ------------------------------------------------------------------------ load_secret ---


def test_secret_from_env() -> None:
    s = load_secret({SECRET_ENV: SECRET})
    assert s.value == SECRET.encode()
    assert s.source == f"env {SECRET_ENV}"
    assert not s.throwaway


def test_secret_from_env_is_stripped() -> None:
    assert load_secret({SECRET_ENV: f"  {SECRET}\n"}).value == SECRET.encode()


def test_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(SECRET.encode() + b"\n")  # as written by `openssl rand -hex 32 > f`
    s = load_secret({SECRET_FILE_ENV: str(f)})
    assert s.value == SECRET.encode()
    assert s.source == f"file {f}"
    assert not s.throwaway


def test_secret_from_binary_file(tmp_path: Path) -> None:
    raw = bytes(range(33, 65)) + b"\x00\xff"  # random bytes; whitespace at the ends is stripped
    f = tmp_path / "secret.bin"
    f.write_bytes(raw)
    assert load_secret({SECRET_FILE_ENV: str(f)}).value == raw


def test_env_and_file_give_the_same_secret(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(SECRET, encoding="utf-8")
    a = load_secret({SECRET_FILE_ENV: str(f)})
    b = load_secret({SECRET_ENV: SECRET})
    assert a.fingerprint() == b.fingerprint()
    assert Pseudonymizer(a, "p", DAY).pseudonym("t", "v", T0) == Pseudonymizer(
        b, "p", DAY
    ).pseudonym("t", "v", T0)


def test_both_set_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(OTHER, encoding="utf-8")
    with pytest.raises(SecretError) as info:
        load_secret({SECRET_ENV: SECRET, SECRET_FILE_ENV: str(f)})
    msg = str(info.value)
    assert SECRET_ENV in msg and SECRET_FILE_ENV in msg
    assert_hidden(msg)
    assert_hidden(msg, OTHER)


def test_missing_secret_is_an_error() -> None:
    with pytest.raises(SecretError) as info:
        load_secret({})
    msg = str(info.value)
    assert SECRET_ENV in msg
    assert SECRET_FILE_ENV in msg
    assert str(MIN_SECRET_BYTES) in msg


def test_missing_secret_message_has_no_secret_from_the_environment() -> None:
    env = {"ANONSTREAM_SECRETS": SECRET, "OTHER_SECRET": OTHER, SECRET_ENV: ""}
    with pytest.raises(SecretError) as info:
        load_secret(env)
    msg = str(info.value)
    assert SECRET_ENV in msg
    assert_hidden(msg)
    assert_hidden(msg, OTHER)


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert load_secret().value == SECRET.encode()
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(SecretError):
        load_secret()
    assert SECRET_ENV not in os.environ


@pytest.mark.parametrize("value", ["tiny1", "x" * (MIN_SECRET_BYTES - 1), " " * 40])
def test_too_short_secret_is_an_error(value: str) -> None:
    with pytest.raises(SecretError) as info:
        load_secret({SECRET_ENV: value})
    msg = str(info.value)
    assert str(MIN_SECRET_BYTES) in msg
    if value.strip():
        assert value not in msg


def test_too_short_secret_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("tiny-secret\n", encoding="utf-8")
    with pytest.raises(SecretError) as info:
        load_secret({SECRET_FILE_ENV: str(f)})
    assert "tiny-secret" not in str(info.value)
    assert str(f) in str(info.value)


def test_exactly_min_length_is_accepted() -> None:
    assert len(load_secret({SECRET_ENV: "x" * MIN_SECRET_BYTES}).value) == MIN_SECRET_BYTES


def test_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    with pytest.raises(SecretError) as info:
        load_secret({SECRET_FILE_ENV: str(missing)})
    assert str(missing) in str(info.value)
    assert SECRET_FILE_ENV in str(info.value)


def test_throwaway_only_when_allowed() -> None:
    with pytest.raises(SecretError):
        load_secret({})
    s = load_secret({}, allow_throwaway=True)
    assert s.throwaway
    assert len(s.value) >= MIN_SECRET_BYTES
    assert "throwaway" in s.source
    assert load_secret({}, allow_throwaway=True).value != s.value  # random each time


def test_throwaway_is_not_used_when_a_secret_is_set() -> None:
    s = load_secret({SECRET_ENV: SECRET}, allow_throwaway=True)
    assert not s.throwaway
    assert s.value == SECRET.encode()


def test_throwaway_does_not_hide_a_bad_secret() -> None:
    with pytest.raises(SecretError):
        load_secret({SECRET_ENV: "short"}, allow_throwaway=True)


# ------------------------------------------------------------------ secret is hidden ---


def test_repr_and_str_hide_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    s = secret()
    for text in (repr(s), str(s), f"{s}", f"{s!r}", "%s" % (s,), repr([s]), repr({"k": s})):  # noqa: UP031
        assert_hidden(text)
        assert "MasterSecret" in text
    assert f"env {SECRET_ENV}" in repr(s)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("anonstream.test").info("loaded %s / %r", s, s)
    assert_hidden(caplog.text)


def test_repr_of_throwaway_hides_the_secret() -> None:
    s = load_secret({}, allow_throwaway=True)
    assert s.value.hex() not in repr(s)
    assert repr(s.value) not in repr(s)


def test_fingerprint_is_short_and_not_the_secret() -> None:
    a, b = secret(), secret(OTHER)
    fp = a.fingerprint()
    assert len(fp) == 12
    assert fp == secret().fingerprint()
    assert fp != b.fingerprint()
    assert fp not in SECRET.encode().hex()


def test_derive_is_separated_by_purpose() -> None:
    s = secret()
    assert s.derive("a") != s.derive("b")
    assert s.derive("a") == secret().derive("a")
    assert s.derive("a") != secret(OTHER).derive("a")
    assert SECRET.encode() not in s.derive("a")


# ------------------------------------------------------------------------ pseudonyms ---


def pseudo(
    s: MasterSecret | None = None, pipeline: str = "web_activity", rotation: str = "daily"
) -> Pseudonymizer:
    return Pseudonymizer(s or secret(), pipeline, ROTATION_MS[rotation])


def test_pseudonym_is_stable_within_key_and_period() -> None:
    p = pseudo()
    a = p.pseudonym("user_email", "jane.doe@example.com", T0)
    assert p.pseudonym("user_email", "jane.doe@example.com", T0) == a
    # Another instance (a restarted worker) with the same secret: same pseudonym.
    assert pseudo().pseudonym("user_email", "jane.doe@example.com", T0) == a
    # Anywhere in the same (UTC) day.
    day_start = T0 - T0 % DAY
    for ts in (day_start, day_start + 1, T0 + 3_600_000, day_start + DAY - 1):
        assert p.pseudonym("user_email", "jane.doe@example.com", ts) == a
    assert 0 <= a < 2**64


def test_pseudonym_differs_between_values() -> None:
    p = pseudo()
    values = [f"user{i}@example.com" for i in range(2000)]
    assert len({p.pseudonym("user_email", v, T0) for v in values}) == len(values)


def test_pseudonym_changes_with_the_key() -> None:
    a = pseudo(secret()).pseudonym("user_email", "jane.doe@example.com", T0)
    b = pseudo(secret(OTHER)).pseudonym("user_email", "jane.doe@example.com", T0)
    assert a != b


def test_pseudonym_changes_with_the_pipeline() -> None:
    a = pseudo(pipeline="web_activity").pseudonym("user_email", "jane@example.com", T0)
    b = pseudo(pipeline="service_usage").pseudonym("user_email", "jane@example.com", T0)
    assert a != b


def test_pseudonym_changes_with_the_period() -> None:
    p = pseudo()
    day_start = T0 - T0 % DAY
    today = p.pseudonym("user_email", "jane.doe@example.com", day_start + DAY - 1)
    tomorrow = p.pseudonym("user_email", "jane.doe@example.com", day_start + DAY)
    yesterday = p.pseudonym("user_email", "jane.doe@example.com", day_start - 1)
    assert len({today, tomorrow, yesterday}) == 3
    assert p.period_of(day_start + DAY) == p.period_of(day_start) + 1
    assert p.period_key(p.period_of(T0)) != p.period_key(p.period_of(T0) + 1)


def test_hourly_rotation_changes_every_hour() -> None:
    p = pseudo(rotation="hourly")
    hour = ROTATION_MS["hourly"]
    start = T0 - T0 % hour
    a = p.pseudonym("visitor_id", "v-1", start)
    assert p.pseudonym("visitor_id", "v-1", start + hour - 1) == a
    assert p.pseudonym("visitor_id", "v-1", start + hour) != a


def test_pseudonym_is_domain_separated_by_tag() -> None:
    p = pseudo()
    v = "3c17aaf75e39a197a463c91d04047b94"
    assert p.pseudonym("visitor_id", v, T0) != p.pseudonym("user_email", v, T0)
    # The separator between tag and value: ("ab", "c") and ("a", "bc") are different inputs.
    assert p.pseudonym("ab", "c", T0) != p.pseudonym("a", "bc", T0)


def test_pseudonym_survives_cache_eviction() -> None:
    small = Pseudonymizer(secret(), "web_activity", DAY, cache_size=4)
    big = pseudo()
    values = [f"v{i}" for i in range(50)]
    first = [small.pseudonym("visitor_id", v, T0) for v in values]
    again = [small.pseudonym("visitor_id", v, T0) for v in values]
    assert first == again == [big.pseudonym("visitor_id", v, T0) for v in values]


def test_period_keys_survive_eviction() -> None:
    p = pseudo(rotation="hourly")
    hour = ROTATION_MS["hourly"]
    firsts = [p.pseudonym("visitor_id", "v", T0 + i * hour) for i in range(200)]
    assert len(set(firsts)) == 200
    assert [p.pseudonym("visitor_id", "v", T0 + i * hour) for i in range(200)] == firsts


def test_pseudonym_hex_matches_int() -> None:
    p = pseudo()
    h = p.pseudonym_hex("user_email", "a@example.com", T0)
    assert len(h) == 16
    assert int(h, 16) == p.pseudonym("user_email", "a@example.com", T0)


def test_pseudonym_does_not_reveal_the_value() -> None:
    p = pseudo()
    value = "jane.doe@example.com"
    h = p.pseudonym_hex("user_email", value, T0)
    assert value not in h
    assert value.encode().hex()[:16] != h


# ---------------------------------------------------------------------- event hashes ---


def test_event_hasher_is_stable() -> None:
    h = EventHasher(secret(), "web_activity")
    eid = "0b7f4a3e-5c1d-4e8a-9f2b-6d3c8e1a2b4c"
    assert h(eid) == h(eid) == EventHasher(secret(), "web_activity")(eid)
    assert 0 <= h(eid) < 2**64


def test_event_hasher_is_keyed() -> None:
    eid = "0b7f4a3e-5c1d-4e8a-9f2b-6d3c8e1a2b4c"
    assert EventHasher(secret(), "web_activity")(eid) != EventHasher(secret(OTHER), "web_activity")(
        eid
    )
    assert EventHasher(secret(), "web_activity")(eid) != EventHasher(secret(), "service_usage")(eid)


def test_event_hasher_differs_between_ids_and_from_pseudonyms() -> None:
    s = secret()
    h = EventHasher(s, "web_activity")
    ids = [f"event-{i}" for i in range(5000)]
    assert len({h(i) for i in ids}) == len(ids)
    # The event-id key is not the pseudonym key.
    p = Pseudonymizer(s, "web_activity", DAY)
    assert h("x") != p.pseudonym("", "x", T0)


@given(st.lists(st.text(max_size=40), max_size=30))
def test_event_hasher_batch_equals_one_by_one(ids: list[str]) -> None:
    h = EventHasher(secret(), "web_activity")
    assert h.many(ids).tolist() == [h(i) for i in ids]


@given(st.text(max_size=30), st.integers(0, 5))
def test_pseudonym_is_keyed_blake2b_of_tag_and_value_under_the_period_key(
    value: str, day: int
) -> None:
    p = Pseudonymizer(secret(), "web_activity", DAY)
    ts = T0 + day * DAY
    expected = hashlib.blake2b(
        ("user_email\x00" + value).encode(), key=p.period_key(ts // DAY), digest_size=8
    ).digest()
    assert p.pseudonym("user_email", value, ts) == int.from_bytes(expected, "little")
    assert p.uncached("user_email", value, ts // DAY) == int.from_bytes(expected, "little")
    assert p.many("user_email", [value, "x"], ts // DAY)[0] == int.from_bytes(expected, "little")
