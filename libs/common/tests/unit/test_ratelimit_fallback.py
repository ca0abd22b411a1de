"""FallbackRateLimiter: answering locally while the primary is unreachable, then recovering."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions
from esquadrao_common.resilience.ratelimit import (
    Decision,
    FallbackRateLimiter,
    Limit,
    LocalTokenBucket,
)

pytestmark = pytest.mark.unit

LIMIT = Limit(rate=1, burst=3)
FROM_PRIMARY = Decision(allowed=True, remaining=42, retry_after=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyPrimary:
    """Raises ``error`` while it is set, else answers :data:`FROM_PRIMARY`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return FROM_PRIMARY


def make(
    primary: FlakyPrimary, clock: FakeClock, retry_primary_after: float = 5.0
) -> FallbackRateLimiter:
    return FallbackRateLimiter(
        primary, LocalTokenBucket(clock), retry_primary_after=retry_primary_after, clock=clock
    )


async def test_answers_from_the_primary_while_it_works() -> None:
    limiter = make(FlakyPrimary(), FakeClock())

    assert await limiter.acquire("k", LIMIT) == FROM_PRIMARY
    assert not limiter.degraded


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("refused"),
        redis.exceptions.TimeoutError("slow"),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
async def test_unavailable_primary_is_answered_by_the_fallback(error: Exception) -> None:
    limiter = make(FlakyPrimary(error), FakeClock())

    decisions = [await limiter.acquire("k", LIMIT) for _ in range(4)]

    assert limiter.degraded
    assert [d.allowed for d in decisions] == [True, True, True, False]  # the local burst


async def test_warns_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    primary = FlakyPrimary(redis.exceptions.ConnectionError("refused"))
    clock = FakeClock()
    limiter = make(primary, clock, retry_primary_after=5)

    with caplog.at_level(logging.WARNING, logger="esquadrao_common.resilience.ratelimit"):
        for _ in range(3):
            await limiter.acquire("k", LIMIT)
            clock.now += 6  # every call retries the primary, which fails again

    assert primary.calls == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_skips_the_primary_until_retry_primary_after_then_recovers() -> None:
    primary = FlakyPrimary(redis.exceptions.ConnectionError("refused"))
    clock = FakeClock()
    limiter = make(primary, clock, retry_primary_after=5)
    await limiter.acquire("k", LIMIT)
    primary.error = None

    clock.now = 4.9
    await limiter.acquire("k", LIMIT)
    assert primary.calls == 1
    assert limiter.degraded

    clock.now = 5.0
    assert await limiter.acquire("k", LIMIT) == FROM_PRIMARY
    assert primary.calls == 2
    assert not limiter.degraded


async def test_other_errors_propagate() -> None:
    limiter = make(FlakyPrimary(redis.exceptions.ResponseError("WRONGTYPE")), FakeClock())

    with pytest.raises(redis.exceptions.ResponseError):
        await limiter.acquire("k", LIMIT)
    assert not limiter.degraded


async def test_cost_above_burst_is_a_value_error_even_while_degraded() -> None:
    clock = FakeClock()
    limiter = make(FlakyPrimary(redis.exceptions.ConnectionError("refused")), clock)
    await limiter.acquire("k", LIMIT)

    with pytest.raises(ValueError, match="burst"):
        await limiter.acquire("k", LIMIT, cost=4)
