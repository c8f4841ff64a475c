"""Event-time windows and the watermark (anonstream.core.windows)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonstream.core.pipeline import WindowSpec
from anonstream.core.windows import NEG_INF, Watermark, window_starts, window_starts_array

MIN = 60_000
HOUR = 3_600_000
T0 = 1_700_006_400_000  # a day boundary (UTC)

SETTINGS = settings(deadline=None, max_examples=100)


@st.composite
def specs(draw: st.DrawFn) -> WindowSpec:
    step = draw(st.sampled_from([1, 7, 1000, MIN, 5 * MIN, HOUR]))
    n = draw(st.integers(1, 6))
    return WindowSpec(step * n, step, 0)


timestamps = st.integers(946_684_800_000, 4_102_444_800_000)  # 2000 .. 2100


def test_tumbling_window_starts() -> None:
    spec = WindowSpec(HOUR, HOUR, 0)
    assert window_starts(spec, T0) == [T0]
    assert window_starts(spec, T0 + 1) == [T0]
    assert window_starts(spec, T0 + HOUR - 1) == [T0]
    assert window_starts(spec, T0 + HOUR) == [T0 + HOUR]  # end is exclusive
    assert window_starts(spec, T0 - 1) == [T0 - HOUR]


def test_hopping_window_starts() -> None:
    spec = WindowSpec(HOUR, 15 * MIN, 0)
    assert spec.hopping
    q = 15 * MIN
    assert window_starts(spec, T0) == [T0 - 3 * q, T0 - 2 * q, T0 - q, T0]
    assert window_starts(spec, T0 + q - 1) == [T0 - 3 * q, T0 - 2 * q, T0 - q, T0]
    assert window_starts(spec, T0 + q) == [T0 - 2 * q, T0 - q, T0, T0 + q]
    assert not WindowSpec(HOUR, HOUR, 0).hopping


@SETTINGS
@given(specs(), timestamps)
def test_window_starts_contain_the_event(spec: WindowSpec, ts: int) -> None:
    starts = window_starts(spec, ts)
    assert len(starts) == spec.size_ms // spec.step_ms
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    for s in starts:
        assert s % spec.step_ms == 0
        assert s <= ts < s + spec.size_ms
    # ... and they are all the windows containing it: the neighbours do not.
    assert starts[0] - spec.step_ms + spec.size_ms <= ts
    assert starts[-1] + spec.step_ms > ts


@SETTINGS
@given(specs(), st.lists(timestamps, min_size=1, max_size=50))
def test_window_starts_array_agrees(spec: WindowSpec, ts: list[int]) -> None:
    arr = window_starts_array(spec, np.array(ts, dtype=np.int64))
    assert arr.dtype == np.int64
    assert arr.shape == (len(ts), spec.size_ms // spec.step_ms)
    for i, t in enumerate(ts):
        assert arr[i].tolist() == window_starts(spec, t)


def test_window_starts_array_empty() -> None:
    arr = window_starts_array(WindowSpec(HOUR, 15 * MIN, 0), np.empty(0, dtype=np.int64))
    assert arr.shape == (0, 4)


# -- Watermark -------------------------------------------------------------------------------


def test_watermark_is_min_over_partitions_minus_lateness() -> None:
    wm = Watermark(allowed_lateness_ms=2 * MIN)
    assert wm.current(0) == NEG_INF  # nothing seen yet
    wm.observe("a", T0 + 10 * MIN, now_ms=1)
    assert wm.current(1) == T0 + 8 * MIN
    wm.observe("b", T0 + 5 * MIN, now_ms=2)
    assert wm.current(2) == T0 + 3 * MIN  # the slowest partition holds it back
    wm.observe("b", T0 + 20 * MIN, now_ms=3)
    assert wm.current(3) == T0 + 8 * MIN  # now "a" is the slowest
    wm.observe("a", T0, now_ms=4)  # an older event never moves a partition back
    assert wm.current(4) == T0 + 8 * MIN


def test_registered_partition_holds_the_watermark_until_it_speaks() -> None:
    wm = Watermark(allowed_lateness_ms=0)
    wm.register(0, now_ms=0)
    wm.register(1, now_ms=0)
    wm.observe(0, T0, now_ms=1)
    assert wm.current(1) == NEG_INF
    wm.register(0, now_ms=5)  # registering again keeps what was seen
    assert wm.partitions[0].max_ts == T0
    wm.observe(1, T0 + HOUR, now_ms=6)
    assert wm.current(6) == T0
    wm.forget(0)
    assert wm.current(6) == T0 + HOUR


def test_without_idle_timeout_a_silent_partition_holds_forever() -> None:
    wm = Watermark(allowed_lateness_ms=0, idle_timeout_ms=0)
    wm.observe("slow", T0, now_ms=0)
    wm.observe("fast", T0 + HOUR, now_ms=0)
    wm.observe("fast", T0 + 5 * HOUR, now_ms=10**9)
    assert wm.current(10**9) == T0
    assert not wm.all_idle(10**12)


def test_idle_partition_stops_holding_the_watermark() -> None:
    idle = 1000
    wm = Watermark(allowed_lateness_ms=MIN, idle_timeout_ms=idle)
    wm.observe("slow", T0, now_ms=0)
    wm.observe("fast", T0 + HOUR, now_ms=0)
    assert wm.current(idle - 1) == T0 - MIN
    # Kafka showed "slow" silent for just under the timeout, then for the timeout.
    wm.silent("slow", 5, 5 + idle - 1)
    assert wm.current(10**9) == T0 - MIN
    wm.silent("slow", 5, 5 + idle)
    wm.observe("fast", T0 + 2 * HOUR, now_ms=idle - 1)
    assert wm.current(idle) == T0 + 2 * HOUR - MIN
    assert not wm.all_idle(idle)
    # When "slow" speaks again it counts again.
    wm.observe("slow", T0 + 10 * MIN, now_ms=idle + 1)
    assert wm.current(idle + 1) == T0 + 9 * MIN
    # A registered partition that never spoke holds everything back until shown silent.
    wm.register("new", now_ms=idle + 1)
    assert wm.current(10**9) < T0 - HOUR
    wm.silent("new", 0, idle)
    assert wm.current(10**9) == T0 + 9 * MIN


def test_the_clock_alone_never_makes_a_partition_idle() -> None:
    """However long the worker was away (a throttled output, a busy CPU), a partition is
    idle only on evidence of silence; unread data (observe with no event) ends it."""
    idle = 1000
    wm = Watermark(allowed_lateness_ms=0, idle_timeout_ms=idle)
    wm.register("never-fetched", now_ms=0)
    wm.observe("read", T0, now_ms=0)
    wm.silent("read", 0, 10)  # read to its end, then nothing more was learnt
    for now in (idle, 10 * idle, 10**12):
        assert not wm.all_idle(now)
        assert wm.current(now) == NEG_INF  # "never-fetched" holds it back
    wm.silent("read", 0, idle)
    wm.silent("never-fetched", 0, 5 * idle)
    assert wm.all_idle(0)  # the evidence decides, not the time it is judged at
    wm.observe("never-fetched", NEG_INF, now_ms=6 * idle)  # data found waiting
    assert not wm.all_idle(10**12)
    assert wm.current(10**12) == NEG_INF


def test_all_idle() -> None:
    idle = 500
    wm = Watermark(allowed_lateness_ms=0, idle_timeout_ms=idle)
    wm.observe(0, T0, now_ms=0)
    wm.observe(1, T0, now_ms=100)
    wm.silent(0, 0, idle)
    wm.silent(1, 100, idle + 99)
    assert not wm.all_idle(10**9)  # partition 1 not silent for long enough
    wm.silent(1, 100, idle + 100)
    assert wm.all_idle(10**9)
    # All idle: no partition holds anything, there is no watermark (close by all_idle).
    assert wm.current(10**9) == NEG_INF
    wm.observe(0, T0 + 1, now_ms=idle + 100)
    assert not wm.all_idle(10**9)
    assert wm.current(10**9) == T0 + 1


def test_silence_does_not_apply_to_partitions_another_worker_reports_on() -> None:
    """Scale-out: a raw partition read by another worker is idle on its owner's word."""
    wm = Watermark(allowed_lateness_ms=0, idle_timeout_ms=500)
    wm.register("held", now_ms=0, hold=True)
    wm.silent("held", 0, 10**6)
    assert not wm.all_idle(10**6)
    wm.observe("reported", T0, now_ms=0, report_ms=0)
    wm.silent("reported", 0, 10**6)
    wm.forget("held")
    assert wm.all_idle(500)  # the owner's last word is fresh and old enough
    assert not wm.all_idle(499)


@pytest.mark.parametrize("idle", [0, 1000])
def test_all_idle_false_without_timeout_or_true_when_empty(idle: int) -> None:
    wm = Watermark(allowed_lateness_ms=0, idle_timeout_ms=idle)
    # With no partition at all: idle only if a timeout is configured.
    assert wm.all_idle(10**6) is bool(idle)


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10 * HOUR)), min_size=1, max_size=40),
    st.integers(0, HOUR),
)
def test_watermark_is_monotone_and_a_min_of_maxima(
    events: list[tuple[int, int]], lateness: int
) -> None:
    wm = Watermark(allowed_lateness_ms=lateness)
    seen: dict[int, int] = {}
    last = NEG_INF
    for part, ts in events:
        new_partition = part not in seen
        wm.observe(part, T0 + ts, now_ms=0)
        seen[part] = max(seen.get(part, NEG_INF), T0 + ts)
        cur = wm.current(0)
        assert cur == min(seen.values()) - lateness
        if not new_partition:  # only a newly seen partition can pull it back
            assert cur >= last
        last = cur
