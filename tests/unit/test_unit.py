"""The privacy unit (core/unit.py) and the bounded caches (core/cache.py).

The per-event entry (policy.py's path) and the batched entry (columns.py's path) must
pick the same person for every event, including emails in disguise: case, surrounding
whitespace, zero-width characters, combining accents and percent escapes. Only case and
surrounding whitespace are normalized (one person, one pseudonym); the others are other
strings, hence other units, on both paths alike.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.cache import BoundedCache, cached
from anonstream.core.keys import MasterSecret, Pseudonymizer
from anonstream.core.unit import PrivacyUnit, normalize, present

SECRET = MasterSecret(b"unit-test-secret-0123456789abcdef", "test")
DAY = 86_400_000
T0 = 1_796_040_000_000 - 1_796_040_000_000 % DAY
FIELDS = ("user_email", "visitor_id")
BASE_EMAILS = ["jane.doe@example.com", "Ann@X.example", "bee@y.net"]  # each has an e


def _disguise(email: str, how: str) -> str:
    if how == "upper":
        return email.upper()
    if how == "title":
        return email.title()
    if how == "padded":
        return f" \t{email}\n"
    if how == "zero_width":
        return email.replace("@", "\u200b@")
    if how == "combining":
        return unicodedata.normalize("NFD", email.replace("e", "\u00e9"))
    if how == "precomposed":
        return email.replace("e", "\u00e9")
    if how == "percent":
        return email.replace("@", "%40")
    return email


DISGUISES = ["plain", "upper", "title", "padded", "zero_width", "combining", "precomposed",
             "percent"]  # fmt: skip

unit_values = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "\t\n", "\u3000"]),  # blank: no person
    st.builds(_disguise, st.sampled_from(BASE_EMAILS), st.sampled_from(DISGUISES)),
    st.text(max_size=12),
)
events = st.fixed_dictionaries({"user_email": unit_values, "visitor_id": unit_values})


def _unit() -> PrivacyUnit:
    return PrivacyUnit(FIELDS, Pseudonymizer(SECRET, "web_activity", DAY))


def _batched(unit: PrivacyUnit, evs: list[dict[str, Any]], ts: list[int], one: bool) -> list[Any]:
    return unit.of_columns(
        lambda name: [ev.get(name) for ev in evs], np.array(ts, dtype=np.int64), one
    )


@settings(max_examples=200, deadline=None)
@given(
    evs=st.lists(events, min_size=1, max_size=30),
    offsets=st.lists(st.integers(-DAY, 2 * DAY), min_size=30, max_size=30),
    one_period=st.booleans(),
    warm=st.booleans(),
)
def test_per_event_and_batched_entries_agree(
    evs: list[dict[str, Any]], offsets: list[int], one_period: bool, warm: bool
) -> None:
    ts = [T0 + (o if not one_period else o % DAY) for o in offsets[: len(evs)]]
    per_event = _unit()
    expected = [per_event.of_event(ev, t) for ev, t in zip(evs, ts, strict=True)]
    batched = per_event if warm else _unit()  # warm: the cache filled by the other entry
    assert _batched(batched, evs, ts, one_period) == expected
    assert _batched(batched, evs, ts, not one_period) == expected  # and again, cached
    # The rule itself: first present field wins, normalized, keyed by the event's period.
    keyed = Pseudonymizer(SECRET, "web_activity", DAY)
    for ev, t, got in zip(evs, ts, expected, strict=True):
        name = next((f for f in FIELDS if present(ev[f])), None)
        if name is None:
            assert got is None
        else:
            assert got == keyed.pseudonym(name, normalize(name, ev[name]), t)


@given(email=st.sampled_from(BASE_EMAILS), how=st.sampled_from(DISGUISES))
def test_only_case_and_surrounding_space_are_one_person(email: str, how: str) -> None:
    u = _unit()
    plain = u.of_event({"user_email": email}, T0)
    disguised = u.of_event({"user_email": _disguise(email, how)}, T0)
    same = how in ("plain", "upper", "title", "padded")
    assert (disguised == plain) is same
    # A visitor id is case-sensitive: only emails are normalized.
    assert u.of_event({"visitor_id": "Ab"}, T0) != u.of_event({"visitor_id": "ab"}, T0)


def test_blank_values_are_absent_and_the_next_field_decides() -> None:
    u = _unit()
    vid = u.of_event({"visitor_id": "v-1"}, T0)
    for blank in (None, "", " ", "\t\n", 7):
        assert u.of_event({"user_email": blank, "visitor_id": "v-1"}, T0) == vid
        assert u.of_event({"user_email": blank}, T0) is None
        assert u.pseudonym("user_email", blank, T0) is None


def test_the_pseudonym_cache_is_bounded_and_survives_emptying(monkeypatch: Any) -> None:
    import anonstream.core.unit as unit_module

    monkeypatch.setattr(unit_module, "PSEUDONYMS_PER_PERIOD", 4)
    small = _unit()
    keyed = Pseudonymizer(SECRET, "web_activity", DAY)
    values = [{"visitor_id": f"v{i}"} for i in range(50)]
    expected = [keyed.pseudonym("visitor_id", f"v{i}", T0) for i in range(50)]
    # Per event: never more than the limit in the cache, and every value right.
    assert [small.of_event(v, T0) for v in values] == expected
    assert all(len(c) <= 4 for c in small._caches.values())
    # A batch reserves room for itself first: it may hold one batch, then empties again.
    ts = [T0] * 50
    assert _batched(small, values, ts, True) == expected
    assert _batched(small, values[:3], ts[:3], True) == expected[:3]
    assert all(len(c) <= 4 for c in small._caches.values())


def test_bounded_cache_keeps_pinned_entries_and_its_limit() -> None:
    c: BoundedCache[Any, str] = BoundedCache(3, {None: "(none)"})
    c.put("a", "A")
    c.put("b", "B")
    assert dict(c) == {None: "(none)", "a": "A", "b": "B"}
    c.put("c", "C")  # would pass the limit: emptied first, pinned entry kept
    assert dict(c) == {None: "(none)", "c": "C"}
    c.make_room(3)
    assert dict(c) == {None: "(none)"}
    calls: list[str] = []

    def fn(v: str) -> str:
        calls.append(v)
        return v.upper()

    f = cached(fn, 2)
    assert [f(v) for v in "abab"] == ["A", "B", "A", "B"]
    assert calls == ["a", "b"]
    assert [f(v) for v in "cab"] == ["C", "A", "B"]  # past the limit: recomputed, same values
