"""Retry delays: exponential backoff with full jitter.

Attempt ``n`` (from 0) waits a uniform random time in ``[0, min(cap, base * 2**n)]``
("full jitter"): clients that failed together spread their retries over the whole window
instead of retrying in lockstep, which keeps a recovering dependency from being knocked
over again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class Uniform(Protocol):
    """A source of uniform random floats: the ``random`` module or a ``random.Random``."""

    def uniform(self, a: float, b: float, /) -> float: ...


def _check_window(base: float, cap: float) -> None:
    if base <= 0:
        raise ValueError(f"base must be positive, got {base}")
    if cap < 0:
        raise ValueError(f"cap must not be negative, got {cap}")


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)``, without overflowing for large attempts."""
    if attempt < 0:
        raise ValueError(f"attempt must not be negative, got {attempt}")
    _check_window(base, cap)
    try:
        return min(cap, base * 2.0**attempt)
    except OverflowError:
        return cap


def full_jitter(attempt: int, base: float, cap: float, rng: Uniform = random) -> float:
    """A delay for retry ``attempt`` (0 for the first retry), uniform in
    ``[0, min(cap, base * 2**attempt)]``."""
    return rng.uniform(0.0, backoff_ceiling(attempt, base, cap))


@dataclass(frozen=True)
class Backoff:
    """Full-jitter delays starting around ``base`` seconds, never above ``cap``; at most
    ``max_retries`` of them (None: unbounded). ``rng`` is injectable for tests."""

    base: float = 0.1
    cap: float = 30.0
    max_retries: int | None = 5
    rng: Uniform = field(default=random, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_window(self.base, self.cap)
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {self.max_retries}")

    def delay(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (from 0)."""
        return full_jitter(attempt, self.base, self.cap, self.rng)

    def delays(self) -> Iterator[float]:
        """The delays of successive retries: ``max_retries`` of them, or endless."""
        attempt = 0
        while self.max_retries is None or attempt < self.max_retries:
            yield self.delay(attempt)
            attempt += 1


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Await ``fn()`` until it returns, sleeping a :class:`Backoff` delay after each failure
    that matches ``retry_on``; at most ``1 + backoff.max_retries`` calls. Errors not matching
    ``retry_on`` propagate at once; after the last retry its error propagates."""
    delays = backoff.delays()
    while True:
        try:
            return await fn()
        except retry_on:
            delay = next(delays, None)
            if delay is None:
                raise
            await sleep(delay)
