"""Circuit breaker: stop calling a dependency that keeps failing, then probe it carefully.

States (:class:`CircuitState`):

- ``closed``: calls go through; ``failure_threshold`` consecutive failures open it.
- ``open``: calls are refused for ``reset_timeout`` seconds. :meth:`CircuitBreaker.trip`
  opens it at once, for signals that need no counting (an account ban, a quality-rating
  drop).
- ``half_open``: after the timeout, ``half_open_max_calls`` probe calls go through; the
  first probe success closes the breaker, a probe failure opens it again with the timeout
  multiplied by ``backoff`` (up to ``max_reset_timeout``).

The breaker lives in one process and one event loop (not thread-safe); a service that must
keep it across restarts or share it between replicas persists :meth:`CircuitBreaker.snapshot`
and calls :meth:`~CircuitBreaker.trip` on start-up itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

logger = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called as ``on_state_change(old, new, reason)`` after every state change.
StateChangeCallback = Callable[[CircuitState, CircuitState, str], None]


class CircuitOpenError(Exception):
    """The breaker refused the call; try again in ``retry_after`` seconds at the earliest."""

    def __init__(self, name: str, retry_after: float, reason: str | None) -> None:
        super().__init__(f"circuit {name!r} is open (retry in {retry_after:.1f}s): {reason}")
        self.name = name
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True)
class BreakerSnapshot:
    """A breaker's state, for status endpoints and metrics."""

    name: str
    state: CircuitState
    consecutive_failures: int
    #: When the breaker last opened (wall clock, UTC); None while it has never opened since
    #: it was last closed.
    opened_at: datetime | None
    #: The most recent failure recorded (``TypeName: message``), None if none since closing.
    last_failure: str | None
    #: Why the breaker entered its current state; None before the first change.
    reason: str | None
    #: Seconds until a call may go through (0 when closed or probing is possible).
    retry_after: float
    #: The open period in force (grows with failed probes, back to the base on closing).
    reset_timeout: float


def describe_error(error: BaseException | None) -> str:
    """``TypeName: message`` for a failure, ``failure`` when there is no exception."""
    if error is None:
        return "failure"
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class CircuitBreaker:
    """A circuit breaker around one dependency (see the module docstring for the states).

    Every call let through by :meth:`allow` must be reported exactly once: with
    :meth:`record_success`, :meth:`record_failure`, or :meth:`release` when it ended without
    telling anything about the dependency (cancelled, or an error that is the caller's own).
    :meth:`guard` does that for a block of code. Outcomes are attributed to the current
    state: a failure reported while half-open counts as the probe's.

    ``clock`` (monotonic seconds) times the open period; ``wall_clock`` (epoch seconds) only
    dates :attr:`BreakerSnapshot.opened_at`. ``on_state_change`` is called after each
    change; an exception from it is logged, never propagated.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        backoff: float = 1.0,
        max_reset_timeout: float | None = None,
        on_state_change: StateChangeCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be positive, got {reset_timeout}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be at least 1, got {half_open_max_calls}")
        if backoff < 1:
            raise ValueError(f"backoff must be at least 1, got {backoff}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.backoff = backoff
        self.max_reset_timeout = reset_timeout if max_reset_timeout is None else max_reset_timeout
        if self.max_reset_timeout < reset_timeout:
            raise ValueError("max_reset_timeout must not be below reset_timeout")
        self._on_state_change = on_state_change
        self._clock = clock
        self._wall_clock = wall_clock
        self._state = CircuitState.CLOSED
        self._reset_timeout = reset_timeout
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._opened_at_wall: float | None = None
        self._open_for = reset_timeout
        self._probes_in_flight = 0
        self._last_failure: str | None = None
        self._reason: str | None = None

    @property
    def state(self) -> CircuitState:
        """The current state; an open breaker past its timeout reads (and becomes) half-open."""
        self._refresh()
        return self._state

    @property
    def reset_timeout(self) -> float:
        """The open period applied at the next opening caused by failures."""
        return self._reset_timeout

    def allow(self) -> bool:
        """Whether a call may go through now; a True while half-open takes a probe slot."""
        self._refresh()
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.HALF_OPEN and (
            self._probes_in_flight < self.half_open_max_calls
        ):
            self._probes_in_flight += 1
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until :meth:`allow` may say True: the rest of the open period; while all
        probes are in flight, the open period that follows if they fail."""
        self._refresh()
        if self._state is CircuitState.OPEN and self._opened_at is not None:
            return max(0.0, self._opened_at + self._open_for - self._clock())
        if self._state is CircuitState.HALF_OPEN and (
            self._probes_in_flight >= self.half_open_max_calls
        ):
            return self._next_reset_timeout()
        return 0.0

    def record_success(self) -> None:
        """The call succeeded: closes a half-open breaker; ignored while open (a late answer
        to a call made before opening does not prove the dependency healthy)."""
        self._refresh()
        if self._state is CircuitState.CLOSED:
            self._consecutive_failures = 0
        elif self._state is CircuitState.HALF_OPEN:
            self._close("probe succeeded")

    def record_failure(self, error: BaseException | None = None) -> None:
        """The call failed: may open a closed breaker, reopens a half-open one."""
        self._refresh()
        self._consecutive_failures += 1
        self._last_failure = describe_error(error)
        if self._state is CircuitState.HALF_OPEN:
            self._reset_timeout = self._next_reset_timeout()
            self._open(f"probe failed: {self._last_failure}", self._reset_timeout)
        elif (
            self._state is CircuitState.CLOSED
            and self._consecutive_failures >= self.failure_threshold
        ):
            self._open(
                f"{self._consecutive_failures} consecutive failures, last: {self._last_failure}",
                self._reset_timeout,
            )

    def release(self) -> None:
        """The call ended without an outcome for the dependency: frees its probe slot."""
        if self._state is CircuitState.HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def trip(self, reason: str, *, reset_timeout: float | None = None) -> None:
        """Open now, whatever the state, for ``reset_timeout`` seconds (default: the current
        timeout; an override applies to this opening only). An open breaker restarts its
        open period."""
        if reset_timeout is not None and reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be positive, got {reset_timeout}")
        self._open(reason, self._reset_timeout if reset_timeout is None else reset_timeout)

    def reset(self, reason: str = "manual reset") -> None:
        """Close now, forgetting failures and restoring the base reset timeout."""
        self._close(reason)

    @asynccontextmanager
    async def guard(
        self, failure_on: tuple[type[BaseException], ...] = (Exception,)
    ) -> AsyncIterator[None]:
        """``async with breaker.guard():`` runs the block if :meth:`allow`, else raises
        :class:`CircuitOpenError`. A normal exit records a success; an exception matching
        ``failure_on`` records a failure; any other (cancellation) releases the call. The
        exception propagates either way."""
        if not self.allow():
            raise CircuitOpenError(self.name, self.retry_after(), self._reason)
        try:
            yield
        except failure_on as error:
            self.record_failure(error)
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        opened_at = (
            None
            if self._opened_at_wall is None
            else datetime.fromtimestamp(self._opened_at_wall, UTC)
        )
        return BreakerSnapshot(
            name=self.name,
            state=state,
            consecutive_failures=self._consecutive_failures,
            opened_at=opened_at,
            last_failure=self._last_failure,
            reason=self._reason,
            retry_after=self.retry_after(),
            reset_timeout=self._reset_timeout,
        )

    def _next_reset_timeout(self) -> float:
        return min(self.max_reset_timeout, self._reset_timeout * self.backoff)

    def _refresh(self) -> None:
        if (
            self._state is CircuitState.OPEN
            and self._opened_at is not None
            and self._clock() - self._opened_at >= self._open_for
        ):
            self._probes_in_flight = 0
            self._change(CircuitState.HALF_OPEN, "reset timeout elapsed")

    def _open(self, reason: str, open_for: float) -> None:
        self._opened_at = self._clock()
        self._opened_at_wall = self._wall_clock()
        self._open_for = open_for
        self._probes_in_flight = 0
        self._change(CircuitState.OPEN, reason)

    def _close(self, reason: str) -> None:
        self._consecutive_failures = 0
        self._opened_at = None
        self._opened_at_wall = None
        self._last_failure = None
        self._probes_in_flight = 0
        self._reset_timeout = self.base_reset_timeout
        self._change(CircuitState.CLOSED, reason)

    def _change(self, new: CircuitState, reason: str) -> None:
        old = self._state
        self._state = new
        self._reason = reason
        if old is new:
            return
        if new is CircuitState.OPEN:
            logger.warning("circuit %r opened: %s", self.name, reason)
        else:
            logger.info("circuit %r %s: %s", self.name, new, reason)
        if self._on_state_change is not None:
            try:
                self._on_state_change(old, new, reason)
            except Exception:
                logger.exception("circuit %r: on_state_change callback failed", self.name)
