"""Token buckets for the simulated limits: messages per second of a number and messages
from one number to one recipient (the pair rate limit)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; full when created."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> bool:
        """Take one token if there is one; False (and nothing taken) otherwise."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def full_at(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (so it can be forgotten)."""
        return self.tokens + (now - self.updated) * self.rate >= self.capacity


class BucketSet:
    """Buckets by key, created on first use with the capacity and rate asked then.

    A bucket whose capacity or rate changed (knobs changed) starts over, full. Full
    buckets are forgotten now and then, so memory follows the keys in recent use.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000):
        self._clock = clock
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._sweep_every = sweep_every
        self._takes = 0

    def take(self, key: tuple[str, ...], capacity: float, rate: float) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != capacity or bucket.rate != rate:
            bucket = self._buckets[key] = TokenBucket(capacity, rate, now)
        self._takes += 1
        if self._takes >= self._sweep_every:
            self._takes = 0
            self._buckets = {k: b for k, b in self._buckets.items() if not b.full_at(now)}
            self._buckets[key] = bucket
        return bucket.take(now)

    def clear(self) -> None:
        self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
