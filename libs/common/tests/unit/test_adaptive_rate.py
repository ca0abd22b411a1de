"""AIMD rates: halving on throttle once per cooldown, additive climb back, bounds, per key."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from esquadrao_common.resilience.ratelimit import (
    AdaptiveRate,
    AdaptiveRateLimiter,
    Decision,
    Limit,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

CEILING = Limit(rate=80, burst=40)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, **kwargs: float) -> AdaptiveRate:
    settings: dict[str, float] = {
        "floor": 5,
        "cooldown": 2,
        "increase_step": 10,
        "increase_interval": 1,
    }
    settings.update(kwargs)
    return AdaptiveRate(CEILING, clock=clock, **settings)


def test_starts_at_the_ceiling() -> None:
    rate = make(FakeClock())
    assert rate.rate == 80
    assert rate.limit == CEILING


def test_throttle_multiplies_the_rate_by_the_decrease_factor() -> None:
    clock = FakeClock()
    halving = make(clock)
    assert halving.on_throttle()
    assert halving.rate == 40

    quartering = make(clock, decrease_factor=0.25)
    quartering.on_throttle()
    assert quartering.rate == 20


def test_a_burst_of_throttles_within_the_cooldown_decreases_once() -> None:
    clock = FakeClock()
    rate = make(clock)

    lowered = [rate.on_throttle() for _ in range(10)]
    clock.now = 1.9
    lowered.append(rate.on_throttle())

    assert lowered == [True] + [False] * 10
    assert rate.rate == 40

    clock.now = 2.0
    assert rate.on_throttle()
    assert rate.rate == 20


def test_never_drops_below_the_floor() -> None:
    clock = FakeClock()
    rate = make(clock)
    for _ in range(10):
        rate.on_throttle()
        clock.now += 2
    assert rate.rate == 5


def test_successes_add_one_step_per_interval_up_to_the_ceiling() -> None:
    clock = FakeClock()
    rate = make(clock)
    rate.on_throttle()  # 40 at t=0

    clock.now = 0.5
    assert not rate.on_success()
    assert rate.rate == 40

    clock.now = 1.0
    assert rate.on_success()
    assert not rate.on_success()  # one step per interval, however many successes
    assert rate.rate == 50

    for _ in range(10):
        clock.now += 1
        rate.on_success()
    assert rate.rate == 80


def test_climbs_only_from_the_last_change() -> None:
    clock = FakeClock()
    rate = make(clock)
    rate.on_throttle()
    clock.now = 10  # idle: no successes in between
    rate.on_success()
    assert rate.rate == 50  # one step, not ten


def test_limit_scales_the_burst_with_the_rate_keeping_at_least_one() -> None:
    clock = FakeClock()
    rate = make(clock, floor=1)
    rate.on_throttle()
    assert rate.limit == Limit(rate=40, burst=20)

    for _ in range(10):
        clock.now += 2
        rate.on_throttle()
    assert rate.limit == Limit(rate=1, burst=1)


def test_defaults_derive_from_the_ceiling() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(CEILING, clock=clock)
    assert rate.floor == 8
    assert rate.increase_step == 4


@pytest.mark.parametrize(
    ("setting", "build"),
    [
        ("floor", lambda: AdaptiveRate(CEILING, floor=0)),
        ("floor", lambda: AdaptiveRate(CEILING, floor=81)),
        ("decrease_factor", lambda: AdaptiveRate(CEILING, decrease_factor=1)),
        ("decrease_factor", lambda: AdaptiveRate(CEILING, decrease_factor=0)),
        ("cooldown", lambda: AdaptiveRate(CEILING, cooldown=-1)),
        ("increase_step", lambda: AdaptiveRate(CEILING, increase_step=0)),
        ("increase_interval", lambda: AdaptiveRate(CEILING, increase_interval=0)),
    ],
)
def test_invalid_settings_are_value_errors(setting: str, build: Callable[[], AdaptiveRate]) -> None:
    with pytest.raises(ValueError, match=setting):
        build()


@given(
    events=st.lists(
        st.one_of(
            st.just("throttle"),
            st.just("success"),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=100,
    )
)
def test_rate_stays_between_floor_and_ceiling(events: list[str | float]) -> None:
    clock = FakeClock()
    rate = make(clock)
    for event in events:
        if event == "throttle":
            rate.on_throttle()
        elif event == "success":
            rate.on_success()
        else:
            assert isinstance(event, float)
            clock.now += event
        assert 5 <= rate.rate <= 80
        assert 1 <= rate.limit.burst <= 40


class RecordingLimiter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Limit, float]] = []

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        self.calls.append((key, limit, cost))
        return Decision(allowed=True, remaining=0, retry_after=0)


async def test_limiter_acquires_each_key_with_its_own_adaptive_limit() -> None:
    clock = FakeClock()
    inner = RecordingLimiter()
    limiter = AdaptiveRateLimiter(
        inner, CEILING, floor=5, increase_step=10, increase_interval=1, cooldown=2, clock=clock
    )

    assert limiter.on_throttle("slow")
    assert not limiter.on_throttle("slow")
    await limiter.acquire("slow", cost=2)
    await limiter.acquire("fast")

    assert inner.calls == [
        ("slow", Limit(rate=40, burst=20), 2),
        ("fast", CEILING, 1.0),
    ]
    assert limiter.current_rate("slow") == 40
    assert limiter.current_rate("fast") == 80


async def test_limiter_forgets_a_key_once_it_is_back_at_the_ceiling() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(
        RecordingLimiter(), CEILING, increase_step=40, increase_interval=1, cooldown=5, clock=clock
    )
    limiter.on_throttle("k")
    assert len(limiter) == 1
    clock.now = 1
    assert limiter.on_success("k")
    assert limiter.current_rate("k") == 80

    clock.now = 3  # back at the ceiling, but still within the cooldown: state kept
    assert len(limiter) == 1
    assert not limiter.on_throttle("k")

    clock.now = 5
    assert not limiter.on_success("k")
    assert len(limiter) == 0
    assert limiter.on_throttle("k")
    assert limiter.current_rate("k") == 40


def test_limiter_success_on_an_unthrottled_key_changes_nothing() -> None:
    limiter = AdaptiveRateLimiter(RecordingLimiter(), CEILING)
    assert not limiter.on_success("k")
    assert limiter.current_rate("k") == 80
    assert len(limiter) == 0


def test_limiter_validates_settings_up_front() -> None:
    with pytest.raises(ValueError, match="decrease_factor"):
        AdaptiveRateLimiter(RecordingLimiter(), CEILING, decrease_factor=2)
