"""Silence as Kafka shows it (anonstream.runtime.quiet), response by response."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.runtime.quiet import FetchState, Silence

K = ("raw", 0)


def test_silence_runs_from_the_first_response_reached_to_the_second_to_last() -> None:
    s = Silence()
    assert s.update(K, FetchState(0, 10, 1_000)) is None  # ten records unread
    assert s.update(K, FetchState(10, 10, 1_000)) == (1_000, 1_000)  # read: nothing proven
    assert s.update(K, FetchState(10, 10, 1_400)) == (1_000, 1_000)
    assert s.update(K, FetchState(10, 10, 1_900)) == (1_000, 1_400)
    assert s.update(K, FetchState(10, 10, 1_900)) == (1_000, 1_400)  # the same response
    assert s.update(K, FetchState(10, 10, 9_000)) == (1_000, 1_900)  # processed late


def test_a_write_or_a_step_back_ends_the_silence() -> None:
    s = Silence()
    s.update(K, FetchState(10, 10, 1_000))
    s.update(K, FetchState(10, 10, 2_000))
    s.update(K, FetchState(10, 10, 3_000))
    # Written and read between two looks: the high watermark moved, a new silence starts.
    assert s.update(K, FetchState(12, 12, 4_000)) == (4_000, 4_000)
    s.update(K, FetchState(12, 12, 5_000))
    assert s.update(K, FetchState(3, 12, 6_000)) is None  # seeked back: data unread
    assert s.update(K, FetchState(12, 12, 7_000)) == (7_000, 7_000)


def test_nothing_known_is_not_silence() -> None:
    s = Silence()
    assert s.update(K, FetchState(None, 10, 1_000)) is None  # position being reset
    assert s.update(K, FetchState(0, None, None)) is None  # no fetch response yet
    assert s.update(K, FetchState(0, 0, None)) is None


def test_an_open_transaction_is_not_silence() -> None:
    """Read committed: the position stops at the last stable offset, below the high
    watermark while a transaction is open; its records are data on their way."""
    s = Silence()
    for t in range(0, 10_000, 500):
        assert s.update(K, FetchState(7, 12, t)) is None


@settings(deadline=None, max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 3_000)),
        min_size=1,
        max_size=30,
    )
)
def test_silence_is_never_longer_than_the_responses_prove(
    looks: list[tuple[int, int, int]],
) -> None:
    """Whatever the order and spacing of looks: the span starts at a response showing the
    same high watermark reached, ends at an earlier one than the latest, and only looks
    in which the position had reached that same high watermark count."""
    s = Silence()
    t = 0
    run: list[int] = []  # times of the current run of looks at the same reached end
    last_hw: int | None = None
    for pos, hw, dt in looks:
        t += dt
        got = s.update(K, FetchState(pos, hw, t))
        if pos < hw:
            assert got is None
            run, last_hw = [], None
            continue
        if hw != last_hw:
            run, last_hw = [], hw
        if not run or t > run[-1]:
            run.append(t)
        assert got is not None
        since, until = got
        assert since == run[0]
        assert until == (run[-2] if len(run) > 1 else run[0])
