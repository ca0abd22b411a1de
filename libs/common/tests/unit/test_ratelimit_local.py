"""In-process token buckets: burst, refill, retry_after, costs, sweeping of idle buckets."""

from __future__ import annotations

import pytest
from esquadrao_common.resilience.ratelimit import Limit, LocalTokenBucket
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_limit_rejects_non_positive_rate_and_burst_below_one() -> None:
    with pytest.raises(ValueError, match="rate"):
        Limit(rate=0, burst=5)
    with pytest.raises(ValueError, match="burst"):
        Limit(rate=1, burst=0.5)


async def test_new_bucket_grants_exactly_the_burst() -> None:
    bucket = LocalTokenBucket(FakeClock())
    limit = Limit(rate=1, burst=5)

    decisions = [await bucket.acquire("k", limit) for _ in range(6)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.retry_after == 0 for d in decisions[:5])


async def test_refill_is_rate_times_elapsed_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(clock)
    limit = Limit(rate=2, burst=10)
    for _ in range(10):
        assert (await bucket.acquire("k", limit)).allowed

    clock.advance(1.5)  # 3 tokens
    granted = [(await bucket.acquire("k", limit)).allowed for _ in range(4)]
    assert granted == [True, True, True, False]

    clock.advance(3600)
    decision = await bucket.acquire("k", limit)
    assert decision.allowed
    assert decision.remaining == 9  # capped at the burst before taking one


async def test_retry_after_is_the_exact_time_to_the_missing_tokens() -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(clock)
    limit = Limit(rate=4, burst=2)
    await bucket.acquire("k", limit, cost=2)

    refused = await bucket.acquire("k", limit, cost=2)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.5)

    clock.advance(0.3)
    refused = await bucket.acquire("k", limit, cost=2)
    assert not refused.allowed
    assert refused.remaining == pytest.approx(1.2)
    assert refused.retry_after == pytest.approx(0.2)

    clock.advance(0.2)
    assert (await bucket.acquire("k", limit, cost=2)).allowed


async def test_fractional_costs_are_taken_as_they_are() -> None:
    bucket = LocalTokenBucket(FakeClock())
    limit = Limit(rate=1, burst=1)
    assert (await bucket.acquire("k", limit, cost=0.25)).remaining == pytest.approx(0.75)
    assert (await bucket.acquire("k", limit, cost=0.75)).allowed
    assert not (await bucket.acquire("k", limit, cost=0.25)).allowed


@pytest.mark.parametrize("cost", [5.01, 0, -1])
async def test_cost_outside_zero_to_burst_is_a_value_error(cost: float) -> None:
    bucket = LocalTokenBucket(FakeClock())
    with pytest.raises(ValueError, match="cost"):
        await bucket.acquire("k", Limit(rate=1, burst=5), cost=cost)


async def test_cost_equal_to_burst_is_granted_on_a_full_bucket() -> None:
    bucket = LocalTokenBucket(FakeClock())
    assert (await bucket.acquire("k", Limit(rate=1, burst=5), cost=5)).allowed


async def test_keys_have_separate_buckets() -> None:
    bucket = LocalTokenBucket(FakeClock())
    limit = Limit(rate=1, burst=1)
    assert (await bucket.acquire("a", limit)).allowed
    assert not (await bucket.acquire("a", limit)).allowed
    assert (await bucket.acquire("b", limit)).allowed


async def test_a_smaller_limit_caps_the_saved_tokens_at_its_burst() -> None:
    bucket = LocalTokenBucket(FakeClock())
    await bucket.acquire("k", Limit(rate=10, burst=10))

    decision = await bucket.acquire("k", Limit(rate=1, burst=2))

    assert decision.allowed
    assert decision.remaining == 1


async def test_full_buckets_are_swept_once_the_table_doubles() -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(clock, sweep_at=4)
    limit = Limit(rate=1, burst=2)
    for key in ("a", "b", "c", "d"):
        await bucket.acquire(key, limit)
    await bucket.acquire("d", limit)  # "d" is empty; the others refill within a second
    clock.advance(1.5)

    await bucket.acquire("e", limit)

    assert len(bucket) == 2  # "d" (not yet full) and "e"
    # "d" kept its state: 1.5 tokens refilled, not a fresh bucket's 2.
    assert (await bucket.acquire("d", limit)).remaining == pytest.approx(0.5)


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=2), st.floats(min_value=0.01, max_value=1)),
        max_size=80,
    ),
)
async def test_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, float]]
) -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(clock)
    limit = Limit(rate=rate, burst=burst)
    start = clock.now
    granted = 0.0
    for dt, cost_fraction in steps:
        clock.advance(dt)
        cost = cost_fraction * burst
        decision = await bucket.acquire("k", limit, cost=cost)
        if decision.allowed:
            granted += cost
        assert 0 <= decision.remaining <= burst
        assert granted <= burst + rate * (clock.now - start) + 1e-6


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    spent=st.floats(min_value=0.01, max_value=1),
    cost=st.floats(min_value=0.01, max_value=1),
)
async def test_waiting_retry_after_is_enough(
    rate: float, burst: int, spent: float, cost: float
) -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(clock)
    limit = Limit(rate=rate, burst=burst)
    await bucket.acquire("k", limit, cost=spent * burst)

    refused = await bucket.acquire("k", limit, cost=cost * burst)
    if refused.allowed:
        return
    assert refused.retry_after > 0
    clock.advance(refused.retry_after * (1 + 1e-9))
    assert (await bucket.acquire("k", limit, cost=cost * burst)).allowed
