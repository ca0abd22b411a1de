"""Full-jitter backoff: the delay window, its cap, its distribution, and the retry helper."""

from __future__ import annotations

import random
import statistics

import pytest
from esquadrao_common.resilience.backoff import Backoff, backoff_ceiling, full_jitter, retry
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


class Boom(Exception):
    pass


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FailingThenOk:
    """Raises ``error`` for the first ``failures`` calls, then returns ``"ok"``."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or Boom()
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_ceiling_doubles_per_attempt_until_the_cap() -> None:
    assert [backoff_ceiling(n, 0.5, 5) for n in range(6)] == [0.5, 1, 2, 4, 5, 5]


@pytest.mark.parametrize("attempt", [1023, 1024, 10_000, 10**9])
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    assert backoff_ceiling(attempt, 0.1, 30) == 30
    assert 0 <= full_jitter(attempt, 0.1, 30) <= 30


@given(
    attempt=st.integers(min_value=0, max_value=2000),
    base=st.floats(min_value=1e-3, max_value=10),
    cap=st.floats(min_value=0, max_value=1000),
    seed=st.integers(),
)
def test_full_jitter_stays_within_zero_and_the_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = full_jitter(attempt, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt, 1000))


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 0.1), (3, 0.8), (20, 10.0)])
def test_full_jitter_mean_is_half_the_ceiling_and_spans_the_window(
    attempt: int, ceiling: float
) -> None:
    rng = random.Random(20240601)
    samples = [full_jitter(attempt, 0.1, 10, rng) for _ in range(20_000)]

    assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.03)
    assert min(samples) < ceiling * 0.01
    assert max(samples) > ceiling * 0.99
    assert max(samples) <= ceiling


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(-1, 1, 1), (0, 0, 1), (0, -1, 1), (0, 1, -1)]
)
def test_invalid_arguments_are_value_errors(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        full_jitter(attempt, base, cap)


def test_backoff_delays_yields_max_retries_delays_in_growing_windows() -> None:
    backoff = Backoff(base=1, cap=6, max_retries=4, rng=random.Random(7))
    delays = list(backoff.delays())

    assert len(delays) == 4
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(6, 2**attempt)


def test_backoff_delays_are_those_of_full_jitter_with_the_same_rng() -> None:
    backoff = Backoff(base=1, cap=6, max_retries=3, rng=random.Random(7))
    reference = random.Random(7)
    assert list(backoff.delays()) == [full_jitter(n, 1, 6, reference) for n in range(3)]


def test_backoff_without_max_retries_is_endless() -> None:
    delays = Backoff(base=0.01, cap=1, max_retries=None).delays()
    assert len([next(delays) for _ in range(1000)]) == 1000


def test_backoff_delay_is_capped() -> None:
    backoff = Backoff(base=1, cap=2, rng=random.Random(1))
    assert all(0 <= backoff.delay(50) <= 2 for _ in range(100))


def test_backoff_rejects_invalid_settings() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0)
    with pytest.raises(ValueError, match="max_retries"):
        Backoff(max_retries=-1)


async def test_retry_returns_the_first_success_after_sleeping_between_attempts() -> None:
    fn = FailingThenOk(failures=2)
    sleep = FakeSleep()
    backoff = Backoff(base=1, cap=10, max_retries=5, rng=random.Random(3))

    assert await retry(fn, backoff=backoff, sleep=sleep) == "ok"

    assert fn.calls == 3
    reference = random.Random(3)
    assert sleep.delays == [full_jitter(n, 1, 10, reference) for n in range(2)]


async def test_retry_reraises_the_last_error_after_max_retries() -> None:
    errors = [Boom(f"attempt {n}") for n in range(4)]
    calls = 0

    async def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    sleep = FakeSleep()
    with pytest.raises(Boom) as caught:
        await retry(always_fails, backoff=Backoff(max_retries=3), sleep=sleep)

    assert caught.value is errors[3]
    assert calls == 4
    assert len(sleep.delays) == 3


async def test_retry_with_zero_retries_calls_once() -> None:
    fn = FailingThenOk(failures=1)
    with pytest.raises(Boom):
        await retry(fn, backoff=Backoff(max_retries=0), sleep=FakeSleep())
    assert fn.calls == 1


async def test_retry_does_not_retry_errors_outside_retry_on() -> None:
    fn = FailingThenOk(failures=1, error=ValueError("bad input"))
    sleep = FakeSleep()

    with pytest.raises(ValueError):
        await retry(fn, backoff=Backoff(), retry_on=(Boom,), sleep=sleep)

    assert fn.calls == 1
    assert sleep.delays == []


async def test_retry_uses_asyncio_sleep_by_default() -> None:
    fn = FailingThenOk(failures=2)
    assert await retry(fn, backoff=Backoff(base=0.001, cap=0.001)) == "ok"
    assert fn.calls == 3
