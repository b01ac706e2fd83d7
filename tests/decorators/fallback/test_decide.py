"""The decision after a failure, as a pure function: no cache, no clock, no loop."""

from __future__ import annotations

from resilience._decorators._fallback._decide import (
    MISSING,
    UNREAD,
    Rules,
    Step,
    after_failure,
    is_fresh,
    serve,
)

CACHE = Rules(ttl=60, fresh_ttl=None, default=MISSING, cache=True, source=False)


def test_an_error_that_does_not_trigger_is_raised() -> None:
    """Not triggered: raise, whatever is cached."""
    assert after_failure(CACHE, False, ("v", 0.0), 1.0) == (Step.RAISE, None)


def test_an_unread_cache_is_read() -> None:
    """Nothing read before the call: read (pending writes first), then serve."""
    assert after_failure(CACHE, True, UNREAD, 1.0) == (Step.READ, None)


def test_an_entry_read_before_the_call_is_served() -> None:
    """The read-through entry is served without a second read."""
    assert after_failure(CACHE, True, ("v", 0.0), 60.0) == (Step.SERVE, "v")


def test_an_entry_that_expired_during_the_call_is_not_served() -> None:
    """The age is taken at serving time."""
    assert after_failure(CACHE, True, ("v", 0.0), 60.5) == (Step.RAISE, None)


def test_a_miss_serves_the_default() -> None:
    """With a default, a miss serves it."""
    rules = Rules(ttl=60, fresh_ttl=None, default=None, cache=True, source=False)
    assert serve(rules, None, 0.0) == (Step.SERVE, None)


def test_a_callable_source_is_called() -> None:
    """No cache, a callable: call it."""
    rules = Rules(ttl=None, fresh_ttl=None, default=MISSING, cache=False, source=True)
    assert after_failure(rules, True, UNREAD, 0.0) == (Step.SOURCE, None)


def test_a_default_alone_is_served() -> None:
    """No cache, no callable: the default."""
    rules = Rules(ttl=None, fresh_ttl=None, default=[], cache=False, source=False)
    assert after_failure(rules, True, UNREAD, 0.0) == (Step.SERVE, [])


def test_no_ttl_serves_any_age() -> None:
    """ttl=None: no age limit."""
    rules = Rules(ttl=None, fresh_ttl=None, default=MISSING, cache=True, source=False)
    assert serve(rules, ("v", 0.0), 1e12) == (Step.SERVE, "v")


def test_fresh_is_within_fresh_ttl_and_a_clock_gone_back_is_fresh() -> None:
    """Fresh up to fresh_ttl; a negative age counts as fresh."""
    rules = Rules(ttl=60, fresh_ttl=10, default=MISSING, cache=True, source=False)
    assert is_fresh(rules, ("v", 100.0), 110.0)
    assert not is_fresh(rules, ("v", 100.0), 110.5)
    assert is_fresh(rules, ("v", 100.0), 50.0)
    assert not is_fresh(CACHE, ("v", 100.0), 100.0)
