"""Token-bucket rate limiting.

A :class:`Limit` is a steady ``rate`` (tokens per second) and a ``burst`` (bucket size).
A :class:`RateLimiter` answers, atomically per key, whether ``cost`` tokens can be taken
now and, if not, how long until they can.

Implementations:

- :class:`RedisTokenBucket`: one bucket per key in Redis, shared by every replica;
- :class:`LocalTokenBucket`: the same semantics inside one process;
- :class:`FallbackRateLimiter`: the Redis bucket, answered by a local one while Redis is
  unreachable;
- :class:`AdaptiveRateLimiter`: any limiter, with a per-key rate that backs off (AIMD) when
  the rate-limited dependency throttles us (:class:`AdaptiveRate`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio
import redis.exceptions


@dataclass(frozen=True)
class Limit:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")


@dataclass(frozen=True)
class Decision:
    """The answer for one acquire: whether it was granted, and when to try again."""

    allowed: bool
    #: Tokens left in the bucket after this decision.
    remaining: float
    #: Seconds until ``cost`` tokens will be available (0 when allowed).
    retry_after: float


class RateLimiter(Protocol):
    """Takes ``cost`` tokens from the bucket ``key`` shaped by ``limit``, or refuses."""

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision: ...


logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def _check_cost(limit: Limit, cost: float) -> None:
    """Refuse costs no bucket shaped by ``limit`` could ever grant (or that would add tokens)."""
    if cost <= 0:
        raise ValueError(f"cost must be positive, got {cost}")
    if cost > limit.burst:
        raise ValueError(f"cost {cost} exceeds burst {limit.burst}: it could never be granted")


# KEYS[1]: the bucket hash. ARGV: rate (tokens/s), burst, cost, TTL margin (ms).
# Returns {allowed (0/1), tokens left, retry_after seconds}; numbers travel as strings
# because Redis truncates Lua numbers in replies to integers.
# The timestamp is kept in whole microseconds of the server clock (TIME), formatted with
# %.0f: Lua's default number formatting keeps only 14 significant digits.
# An absent hash is a full bucket; the hash expires once it would be full again anyway.
# The TTL is capped at 1e12 ms (about 31 years) so that it still reaches PEXPIRE as an
# integer for absurdly slow rates.
_TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local margin_ms = tonumber(ARGV[4])
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts_us = tonumber(state[2])
if tokens == nil or ts_us == nil then
  tokens = burst
  ts_us = now_us
end
local elapsed = math.max(0, now_us - ts_us) / 1000000
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry_after = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.0f', now_us))
local ttl_ms = math.min(1e12, math.ceil((burst - tokens) / rate * 1000) + margin_ms)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry_after)}
"""


class RedisTokenBucket:
    """Token buckets in Redis, shared by every process that uses the same Redis and prefix.

    Each acquire is one Lua script run (atomic on the server), so concurrent callers in any
    number of replicas never take more than the bucket holds. Time comes from the Redis
    server's ``TIME`` inside the script, so replicas with skewed clocks agree.

    The bucket ``{prefix}:{key}`` is a hash ``tokens``, ``ts`` (microseconds) whose TTL is
    the time it needs to refill completely plus ``ttl_margin`` seconds: an expired bucket
    would have been full, so idle keys cost no memory. The hash keeps no limit: a key used
    with a new :class:`Limit` (an adaptive rate) continues from its current tokens, capped at
    the new burst.

    The script touches one key, so it also runs on Redis Cluster. Connection and timeout
    errors propagate (see :class:`FallbackRateLimiter`); give the client short
    ``socket_timeout`` / ``socket_connect_timeout`` so that a dead Redis fails fast.
    """

    def __init__(
        self, redis: redis.asyncio.Redis, prefix: str = "ratelimit", *, ttl_margin: float = 1.0
    ) -> None:
        self._prefix = prefix
        self._margin_ms = math.ceil(ttl_margin * 1000)
        self._script = redis.register_script(_TOKEN_BUCKET_LUA)

    def bucket_key(self, key: str) -> str:
        """The Redis key holding the bucket of ``key``."""
        return f"{self._prefix}:{key}"

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, or refuse; ``ValueError`` if
        ``cost`` is not in (0, burst], raised before Redis is called."""
        _check_cost(limit, cost)
        allowed, remaining, retry_after = await self._script(
            keys=[self.bucket_key(key)],
            args=[repr(limit.rate), repr(limit.burst), repr(cost), self._margin_ms],
        )
        return Decision(
            allowed=bool(int(allowed)), remaining=float(remaining), retry_after=float(retry_after)
        )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float
    limit: Limit

    def refill(self, now: float, limit: Limit) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(limit.burst, self.tokens + elapsed * limit.rate)
        self.updated_at = now
        self.limit = limit

    def full_at(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated_at)
        return self.tokens + elapsed * self.limit.rate >= self.limit.burst


class LocalTokenBucket:
    """Token buckets in this process, with the semantics of :class:`RedisTokenBucket`.

    Nothing awaits inside :meth:`acquire`, so it is atomic for the tasks of one event loop
    (it is not thread-safe). ``clock`` gives seconds and must not go backwards (tests pass a
    fake one). Full buckets are equivalent to absent ones, so they are swept out whenever
    the number of buckets has doubled since the last sweep (at least ``sweep_at`` of them):
    memory follows the keys in active use, at amortised constant cost.
    """

    def __init__(self, clock: Clock = time.monotonic, *, sweep_at: int = 1024) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._min_sweep_at = sweep_at
        self._sweep_at = sweep_at

    def __len__(self) -> int:
        """Buckets currently held (full ones may linger until the next sweep)."""
        return len(self._buckets)

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, or refuse; ``ValueError`` if
        ``cost`` is not in (0, burst]."""
        _check_cost(limit, cost)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[key] = _Bucket(limit.burst, now, limit)
        else:
            bucket.refill(now, limit)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return Decision(allowed=True, remaining=bucket.tokens, retry_after=0.0)
        return Decision(
            allowed=False, remaining=bucket.tokens, retry_after=(cost - bucket.tokens) / limit.rate
        )

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if not b.full_at(now)}
        self._sweep_at = max(self._min_sweep_at, 2 * len(self._buckets))


#: Errors that mean "Redis is unreachable" rather than "the request was wrong".
#: ``OSError`` covers refused connections and socket timeouts raised outside redis-py.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


class FallbackRateLimiter:
    """``primary`` (Redis) while it answers; ``fallback`` (in-process) while it cannot.

    When ``primary`` raises one of :data:`UNAVAILABLE_ERRORS`, the call is answered by
    ``fallback``, a warning is logged (once per outage) and :attr:`degraded` becomes true;
    for the next ``retry_primary_after`` seconds every call goes straight to ``fallback``,
    then the next call tries ``primary`` again. The first success clears :attr:`degraded`.
    Other errors (``ValueError`` for a cost above the burst) propagate.

    While degraded each replica enforces the limit alone, so the fleet as a whole may allow
    up to (number of replicas) × the limit. That is the price of keeping traffic flowing;
    limits that must hold globally even when Redis is down should not use this class.
    """

    def __init__(
        self,
        primary: RateLimiter,
        fallback: RateLimiter,
        retry_primary_after: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_primary_after = retry_primary_after
        self._clock = clock
        self._degraded = False
        self._primary_retry_at = 0.0

    @property
    def degraded(self) -> bool:
        """True from a failed call to ``primary`` until the next successful one."""
        return self._degraded

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        if self._degraded and self._clock() < self._primary_retry_at:
            return await self._fallback.acquire(key, limit, cost)
        try:
            decision = await self._primary.acquire(key, limit, cost)
        except UNAVAILABLE_ERRORS as error:
            if not self._degraded:
                logger.warning(
                    "rate limiter primary unavailable, enforcing limits in this process only "
                    "(retrying the primary every %.1fs): %r",
                    self._retry_primary_after,
                    error,
                )
            self._degraded = True
            self._primary_retry_at = self._clock() + self._retry_primary_after
            return await self._fallback.acquire(key, limit, cost)
        if self._degraded:
            logger.info("rate limiter primary available again")
            self._degraded = False
        return decision


class AdaptiveRate:
    """A rate that backs off when the dependency throttles us: additive increase,
    multiplicative decrease (AIMD), between ``floor`` and the configured rate (``ceiling``).

    - :meth:`on_throttle` multiplies the rate by ``decrease_factor``, at most once per
      ``cooldown`` seconds: the requests already in flight when the dependency started
      throttling all fail together, and that is one signal, not many.
    - :meth:`on_success` adds ``increase_step`` (default: a twentieth of the ceiling) at
      most once per ``increase_interval`` seconds, counted from the last change; so the rate
      climbs back only while calls keep succeeding, never above the ceiling.
    - :attr:`limit` is the :class:`Limit` to acquire with now: the current rate, and the
      ceiling's burst scaled by the same ratio (at least 1), so a throttled key cannot
      spend a full burst saved up at the old rate.

    ``floor`` defaults to a tenth of the ceiling. ``clock`` gives seconds (monotonic).
    """

    def __init__(
        self,
        ceiling: Limit,
        *,
        floor: float | None = None,
        decrease_factor: float = 0.5,
        cooldown: float = 2.0,
        increase_step: float | None = None,
        increase_interval: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self.floor = ceiling.rate / 10 if floor is None else floor
        self.decrease_factor = decrease_factor
        self.cooldown = cooldown
        self.increase_step = ceiling.rate / 20 if increase_step is None else increase_step
        self.increase_interval = increase_interval
        if not 0 < self.floor <= ceiling.rate:
            raise ValueError(f"floor must be in (0, {ceiling.rate}], got {self.floor}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        if cooldown < 0:
            raise ValueError(f"cooldown must not be negative, got {cooldown}")
        if self.increase_step <= 0:
            raise ValueError(f"increase_step must be positive, got {self.increase_step}")
        if increase_interval <= 0:
            raise ValueError(f"increase_interval must be positive, got {increase_interval}")
        self._clock = clock
        self._rate = ceiling.rate
        self._last_decrease: float | None = None
        self._last_change = clock()

    @property
    def rate(self) -> float:
        """The current rate, tokens per second."""
        return self._rate

    @property
    def limit(self) -> Limit:
        """The limit to acquire with now."""
        burst = max(1.0, self.ceiling.burst * self._rate / self.ceiling.rate)
        return Limit(rate=self._rate, burst=burst)

    @property
    def settled(self) -> bool:
        """At the ceiling and out of the cooldown: behaves exactly like a fresh instance."""
        return self._rate >= self.ceiling.rate and not self._cooling_down(self._clock())

    def on_throttle(self) -> bool:
        """The dependency throttled a call; returns whether the rate was lowered (False
        within the cooldown of the previous decrease)."""
        now = self._clock()
        if self._cooling_down(now):
            return False
        self._rate = max(self.floor, self._rate * self.decrease_factor)
        self._last_decrease = now
        self._last_change = now
        return True

    def on_success(self) -> bool:
        """A call succeeded; returns whether the rate was raised."""
        now = self._clock()
        if self._rate >= self.ceiling.rate or now - self._last_change < self.increase_interval:
            return False
        self._rate = min(self.ceiling.rate, self._rate + self.increase_step)
        self._last_change = now
        return True

    def _cooling_down(self, now: float) -> bool:
        return self._last_decrease is not None and now - self._last_decrease < self.cooldown


class AdaptiveRateLimiter:
    """``limiter`` with one :class:`AdaptiveRate` per key, starting at ``base``.

    The adaptive state lives in this process even when the bucket is in Redis: it reacts to
    the throttle signals this process saw, from the calls it made, and needs no round trip
    per signal. Replicas throttled together back off together; the bucket they draw from
    stays shared, so the fleet never exceeds ``base``. A key's state exists only while its
    rate is below ``base`` (or within the cooldown): keys never throttled cost nothing.

    The keyword arguments configure each key's :class:`AdaptiveRate`.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        base: Limit,
        *,
        floor: float | None = None,
        decrease_factor: float = 0.5,
        cooldown: float = 2.0,
        increase_step: float | None = None,
        increase_interval: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._base = base
        self._rates: dict[str, AdaptiveRate] = {}

        def new_rate() -> AdaptiveRate:
            return AdaptiveRate(
                base,
                floor=floor,
                decrease_factor=decrease_factor,
                cooldown=cooldown,
                increase_step=increase_step,
                increase_interval=increase_interval,
                clock=clock,
            )

        self._new_rate = new_rate
        new_rate()  # validate the settings now rather than at the first throttle

    def __len__(self) -> int:
        """Keys currently holding adaptive state (throttled, or recovering)."""
        return len(self._rates)

    def limit(self, key: str) -> Limit:
        """The limit ``key`` is acquired with now."""
        rate = self._rates.get(key)
        return self._base if rate is None else rate.limit

    def current_rate(self, key: str) -> float:
        """``key``'s current rate, tokens per second."""
        return self.limit(key).rate

    async def acquire(self, key: str, cost: float = 1.0) -> Decision:
        return await self._limiter.acquire(key, self.limit(key), cost)

    def on_throttle(self, key: str) -> bool:
        """The dependency throttled a call for ``key``; returns whether its rate was lowered."""
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = self._new_rate()
        return rate.on_throttle()

    def on_success(self, key: str) -> bool:
        """A call for ``key`` succeeded; returns whether its rate was raised."""
        rate = self._rates.get(key)
        if rate is None:
            return False
        raised = rate.on_success()
        if rate.settled:
            del self._rates[key]
        return raised
