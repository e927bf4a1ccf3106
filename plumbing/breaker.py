"""A circuit breaker per worker process, for a store that can stall.

A store that stops answering but keeps its connections open (a paused
process, a frozen VM, a network partition) makes every request wait out its
timeout, and the requests queued behind them wait too. With a breaker, a few
timeouts open it, and requests fail at once with nothing sent; after
reset_seconds one trial goes through, and a store that answers it closes the
breaker. fixed_cache/store.py (Valkey) and fixed_db/postgres.py (PostgreSQL)
each make one per worker process, after gunicorn forks, and each says why
its numbers are what they are.

    breaker = circuit_breaker("PostgreSQL", 3, 0.5, counts=lambda e: ...)
    guarded(breaker, operation, refused=NotApplied)  # operation(), or refused()

counts(error) says which failures show the store not answering; any other
error shows that it answered, and counts as a success, as pybreaker's
`exclude` does.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker

log = logging.getLogger(__name__)
T = TypeVar("T")


class OneTrialAtATime(pybreaker.CircuitBreakerListener):
    """pybreaker (1.4) lets every call through while half-open; a stalled store
    would then hold every thread that arrives during the trial. This lets the
    first call through and fails the others, as if still open, until the
    trial ends. pybreaker calls before_call and state_change under its lock."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.trial_under_way = False
        self.open_until = 0.0  # time.monotonic() when a trial may go through

    def before_call(self, breaker: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any):
        if breaker.current_state == pybreaker.STATE_HALF_OPEN:
            if self.trial_under_way:
                raise pybreaker.CircuitBreakerError("a trial call is under way")
            self.trial_under_way = True

    def state_change(self, breaker: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        self.trial_under_way = False
        if new.name == pybreaker.STATE_OPEN:
            self.open_until = time.monotonic() + breaker.reset_timeout
        log.warning("the %s server's circuit breaker is %s", self.store, new.name)


def circuit_breaker(
    store: str, fail_max: int, reset_seconds: float, counts: Callable[[BaseException], bool]
) -> pybreaker.CircuitBreaker:
    """A worker's breaker: fail_max failures in a row that counts() opens
    it for reset_seconds; store names the server in its log lines."""
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_seconds,
        exclude=[lambda error: not counts(error)],
        listeners=[OneTrialAtATime(store)],
        # The call that opens it raises its own error, which says whether
        # the write may have been applied, not CircuitBreakerError.
        throw_new_error_on_trip=False,
    )


def guarded(
    breaker: pybreaker.CircuitBreaker, operation: Callable[[], T], refused: Callable[[], Exception]
) -> T:
    """operation() through the breaker. Raises refused(), at once and with
    nothing sent, while the breaker is open or a trial is under way."""
    if breaker.fail_counter == 0 and breaker.current_state == pybreaker.STATE_CLOSED:
        # A healthy store, the usual case: the breaker has nothing to do
        # unless this fails, and going through it costs CPU on every request
        # (its lock and generators) that is not small beside a Valkey INCR.
        # A success here resets no count: one begun meanwhile by another
        # thread is reset by the next call that goes through the breaker.
        try:
            return operation()
        except Exception as error:
            if breaker.is_system_error(error):
                counted(breaker, error)
            raise
    try:
        # calling(), not call(): call() holds the breaker's lock while the
        # operation runs (pybreaker 1.4, CircuitBreaker.call), which would
        # let one request at a time per worker reach the store.
        with breaker.calling():
            return operation()
    except pybreaker.CircuitBreakerError as error:
        raise refused() from error


def counted(breaker: pybreaker.CircuitBreaker, failure: Exception) -> None:
    """Count a failure that happened outside the breaker, as if inside it
    (unless it is open by now: then there is nothing left to count)."""
    try:
        with breaker.calling():
            raise failure
    except pybreaker.CircuitBreakerError:
        pass
    except Exception as error:
        if error is not failure:
            raise


def refusing(breaker: pybreaker.CircuitBreaker) -> bool:
    """Whether the breaker would refuse a call now, without making one: open
    and not yet due for a trial, or half-open with a trial under way. For a
    caller that would otherwise wait before its first call (fixed_db, for a
    pooled connection that a stalled server cannot give)."""
    [listener] = [each for each in breaker.listeners if isinstance(each, OneTrialAtATime)]
    state = breaker.current_state
    if state == pybreaker.STATE_OPEN:
        return time.monotonic() < listener.open_until
    return state == pybreaker.STATE_HALF_OPEN and listener.trial_under_way
