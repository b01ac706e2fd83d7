"""Count and time windows: running totals equal a recount."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilience._windows import CountWindow, TimeWindow


@given(st.integers(1, 20), st.lists(st.tuples(st.booleans(), st.booleans()), max_size=200))
def test_count_window_totals_match_the_last_n_calls(
    size: int, calls: list[tuple[bool, bool]]
) -> None:
    """calls/failures/slow equal a recount of the last `size` calls."""
    w = CountWindow(size)
    for failure, slow in calls:
        w.record(failure, slow, 0.0)
    last = calls[-size:] if calls else []
    assert w.calls == len(last)
    assert w.failures == sum(f for f, _ in last)
    assert w.slow == sum(s for _, s in last)


def test_count_window_clear_forgets_everything() -> None:
    """clear() empties the window."""
    w = CountWindow(3)
    w.record(True, True, 0.0)
    w.clear()
    assert (w.calls, w.failures, w.slow) == (0, 0, 0)


@given(
    st.floats(1.0, 30.0),
    st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans(), st.booleans()), max_size=100),
)
def test_time_window_counts_only_recent_buckets(
    duration: float, steps: list[tuple[float, bool, bool]]
) -> None:
    """Totals equal a recount of the calls in the buckets the window covers."""
    w = TimeWindow(duration)
    width = w._width
    now = 0.0
    log: list[tuple[int, bool, bool]] = []
    for dt, failure, slow in steps:
        now += dt
        w.record(failure, slow, now)
        log.append((int(now // width), failure, slow))
    end = int(now // width)
    kept = [(f, s) for e, f, s in log if e > end - w._n]
    assert w.calls == len(kept)
    assert w.failures == sum(f for f, _ in kept)
    assert w.slow == sum(s for _, s in kept)


def test_time_window_expires_on_refresh() -> None:
    """Calls older than the window disappear when it is read later."""
    w = TimeWindow(10.0)
    w.record(True, False, 1.0)
    w.refresh(5.0)
    assert w.failures == 1
    w.refresh(11.5)
    assert (w.calls, w.failures) == (0, 0)


def test_long_time_windows_use_at_most_600_buckets() -> None:
    """A one-hour window has 600 buckets of 6 s."""
    w = TimeWindow(3600.0)
    assert w._n == 600 and w._width == 6.0
