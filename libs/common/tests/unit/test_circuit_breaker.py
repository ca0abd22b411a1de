"""Circuit breaker: opening, tripping, half-open probes, backoff, guard, callbacks, snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from esquadrao_common.resilience.breaker import (
    BreakerSnapshot,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
)

pytestmark = pytest.mark.unit

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
EPOCH = 1_700_000_000.0


class FakeClock:
    """Monotonic and wall clock at once (the wall clock is :data:`EPOCH` + now)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


Change = tuple[CircuitState, CircuitState, str]


def make(
    clock: FakeClock,
    changes: list[Change] | None = None,
    *,
    failure_threshold: int = 3,
    half_open_max_calls: int = 1,
    backoff: float = 1.0,
    max_reset_timeout: float | None = None,
) -> CircuitBreaker:
    """A breaker with a 10s reset timeout, recording its state changes into ``changes``."""

    def record(old: CircuitState, new: CircuitState, reason: str) -> None:
        if changes is not None:
            changes.append((old, new, reason))

    return CircuitBreaker(
        "whatsapp",
        failure_threshold=failure_threshold,
        reset_timeout=10,
        half_open_max_calls=half_open_max_calls,
        backoff=backoff,
        max_reset_timeout=max_reset_timeout,
        on_state_change=record,
        clock=clock,
        wall_clock=clock.wall,
    )


def open_by_failures(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure(TimeoutError("slow"))
    assert breaker.state is OPEN


def test_closed_allows_and_a_success_resets_the_failure_count() -> None:
    breaker = make(FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is CLOSED
    assert breaker.allow()
    assert breaker.snapshot().consecutive_failures == 2


def test_opens_after_threshold_consecutive_failures() -> None:
    changes: list[Change] = []
    breaker = make(FakeClock(), changes)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED

    breaker.record_failure(TimeoutError("slow"))

    assert breaker.state is OPEN
    assert not breaker.allow()
    assert changes == [(CLOSED, OPEN, "3 consecutive failures, last: TimeoutError: slow")]


def test_trip_opens_at_once_and_restarts_the_open_period() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)

    breaker.trip("account banned")
    assert breaker.state is OPEN
    assert not breaker.allow()
    clock.now = 8
    breaker.trip("quality rating dropped")
    clock.now = 17
    assert breaker.state is OPEN  # 9s into the second open period

    assert changes == [(CLOSED, OPEN, "account banned")]
    assert breaker.snapshot().reason == "quality rating dropped"


def test_trip_with_its_own_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.trip("banned for a day", reset_timeout=86_400)

    clock.now = 86_399
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(1)
    clock.now = 86_400
    assert breaker.allow()


def test_open_lets_a_single_probe_through_after_the_reset_timeout() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    open_by_failures(breaker)

    clock.now = 9.99
    assert not breaker.allow()
    clock.now = 10

    assert breaker.allow()
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()
    assert changes[-1] == (OPEN, HALF_OPEN, "reset timeout elapsed")


def test_half_open_max_calls_probes_go_through() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=3)
    open_by_failures(breaker)
    clock.now = 10

    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]


def test_probe_success_closes() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    open_by_failures(breaker)
    clock.now = 10
    assert breaker.allow()

    breaker.record_success()

    assert breaker.state is CLOSED
    assert breaker.allow()
    assert breaker.allow()
    assert changes[-1] == (HALF_OPEN, CLOSED, "probe succeeded")
    snapshot = breaker.snapshot()
    assert snapshot.consecutive_failures == 0
    assert snapshot.last_failure is None


def test_probe_failure_reopens_for_another_period() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    open_by_failures(breaker)
    clock.now = 10
    assert breaker.allow()

    breaker.record_failure(ConnectionError("reset"))

    assert breaker.state is OPEN
    assert changes[-1] == (HALF_OPEN, OPEN, "probe failed: ConnectionError: reset")
    clock.now = 19.9
    assert not breaker.allow()
    clock.now = 20
    assert breaker.allow()


def test_failed_probes_grow_the_reset_timeout_up_to_the_max_and_closing_restores_it() -> None:
    clock = FakeClock()
    breaker = make(clock, backoff=2, max_reset_timeout=25)
    open_by_failures(breaker)
    opened_for = []
    for _ in range(3):
        start = clock.now
        while not breaker.allow():
            clock.now += 1
        opened_for.append(clock.now - start)
        breaker.record_failure()
    assert opened_for == [10, 20, 25]
    assert breaker.reset_timeout == 25

    clock.now += 25
    assert breaker.allow()
    breaker.record_success()
    assert breaker.reset_timeout == 10


def test_late_success_while_open_does_not_close() -> None:
    breaker = make(FakeClock())
    breaker.trip("banned")
    breaker.record_success()
    assert breaker.state is OPEN


def test_failures_while_open_do_not_extend_the_open_period() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_by_failures(breaker)
    clock.now = 9
    breaker.record_failure()
    clock.now = 10
    assert breaker.allow()


def test_release_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_by_failures(breaker)
    clock.now = 10
    assert breaker.allow()
    assert not breaker.allow()

    breaker.release()

    assert breaker.state is HALF_OPEN
    assert breaker.allow()


def test_manual_reset_closes_and_forgets() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    open_by_failures(breaker)

    breaker.reset()

    assert breaker.state is CLOSED
    assert breaker.allow()
    assert changes[-1] == (OPEN, CLOSED, "manual reset")
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED  # the count started again from zero


def test_callback_sees_every_change_in_order() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    open_by_failures(breaker)
    clock.now = 10
    breaker.allow()
    breaker.record_failure()
    clock.now = 20
    breaker.allow()
    breaker.record_success()

    assert [(old, new) for old, new, _ in changes] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_a_failing_callback_does_not_break_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    def explode(old: CircuitState, new: CircuitState, reason: str) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker("x", failure_threshold=1, on_state_change=explode)
    breaker.record_failure()

    assert breaker.state is OPEN
    assert "on_state_change callback failed" in caplog.text


def test_snapshot_reports_state_for_status_endpoints() -> None:
    clock = FakeClock()
    breaker = make(clock)
    clock.now = 100
    open_by_failures(breaker)
    clock.now = 104

    assert breaker.snapshot() == BreakerSnapshot(
        name="whatsapp",
        state=OPEN,
        consecutive_failures=3,
        opened_at=datetime.fromtimestamp(EPOCH + 100, UTC),
        last_failure="TimeoutError: slow",
        reason="3 consecutive failures, last: TimeoutError: slow",
        retry_after=6,
        reset_timeout=10,
    )


def test_snapshot_of_a_fresh_breaker() -> None:
    snapshot = make(FakeClock()).snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.opened_at is None
    assert snapshot.reason is None
    assert snapshot.retry_after == 0


def test_retry_after_while_the_probe_is_in_flight_is_the_next_open_period() -> None:
    clock = FakeClock()
    breaker = make(clock, backoff=3, max_reset_timeout=100)
    open_by_failures(breaker)
    clock.now = 10
    assert breaker.retry_after() == 0
    breaker.allow()
    assert breaker.retry_after() == 30


async def test_guard_records_success() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_by_failures(breaker)
    clock.now = 10

    async with breaker.guard():
        pass

    assert breaker.state is CLOSED


async def test_guard_records_failure_and_reraises() -> None:
    breaker = make(FakeClock(), failure_threshold=1)

    with pytest.raises(TimeoutError):
        async with breaker.guard():
            raise TimeoutError("slow")

    assert breaker.state is OPEN
    assert breaker.snapshot().last_failure == "TimeoutError: slow"


async def test_guard_raises_circuit_open_error_without_running_the_block() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.trip("banned")
    clock.now = 4
    ran = False

    with pytest.raises(CircuitOpenError) as caught:
        async with breaker.guard():
            ran = True

    assert not ran
    assert caught.value.retry_after == pytest.approx(6)
    assert caught.value.reason == "banned"
    assert caught.value.name == "whatsapp"


async def test_guard_counts_only_failure_on_errors() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_by_failures(breaker)
    clock.now = 10

    with pytest.raises(ValueError):
        async with breaker.guard(failure_on=(TimeoutError,)):
            raise ValueError("bad request: our fault, not the dependency's")

    assert breaker.state is HALF_OPEN  # released, neither closed nor reopened
    assert breaker.allow()


async def test_guard_releases_the_probe_when_cancelled() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_by_failures(breaker)
    clock.now = 10

    async def probe() -> None:
        async with breaker.guard():
            await asyncio.sleep(3600)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    assert not breaker.allow()  # the task holds the probe slot
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is HALF_OPEN
    assert breaker.allow()


@pytest.mark.parametrize(
    ("setting", "build"),
    [
        ("failure_threshold", lambda: CircuitBreaker("x", failure_threshold=0)),
        ("reset_timeout", lambda: CircuitBreaker("x", reset_timeout=0)),
        ("half_open_max_calls", lambda: CircuitBreaker("x", half_open_max_calls=0)),
        ("backoff", lambda: CircuitBreaker("x", backoff=0.5)),
        ("max_reset_timeout", lambda: CircuitBreaker("x", reset_timeout=10, max_reset_timeout=5)),
    ],
)
def test_invalid_settings_are_value_errors(
    setting: str, build: Callable[[], CircuitBreaker]
) -> None:
    with pytest.raises(ValueError, match=setting):
        build()


def test_trip_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="reset_timeout"):
        make(FakeClock()).trip("x", reset_timeout=0)
