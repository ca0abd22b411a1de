"""Redis token buckets against a real Redis: atomicity across clients, refill on the server's
clock, key isolation, TTLs, and falling back to a local bucket when Redis is unreachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
from esquadrao_common.resilience.ratelimit import (
    FallbackRateLimiter,
    Limit,
    LocalTokenBucket,
    RedisTokenBucket,
)

pytestmark = pytest.mark.integration

NO_REFILL = 1e-6  # tokens per second: nothing refills during a test

MakeBucket = Callable[[], Awaitable[RedisTokenBucket]]


@pytest.fixture
def prefix() -> str:
    return f"test-ratelimit-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client for inspecting Redis; deletes the test's buckets afterwards (buckets that
    barely refill would otherwise live for years)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def make_bucket(
    redis_url: str, prefix: str, client: redis.asyncio.Redis
) -> AsyncIterator[MakeBucket]:
    """Buckets on separate Redis clients (separate connection pools), as replicas have."""
    clients: list[redis.asyncio.Redis] = []

    async def make() -> RedisTokenBucket:
        client = redis.asyncio.Redis.from_url(redis_url)
        clients.append(client)
        return RedisTokenBucket(client, prefix=prefix)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


async def test_concurrent_acquirers_on_many_clients_get_exactly_the_burst(
    make_bucket: MakeBucket,
) -> None:
    buckets = [await make_bucket() for _ in range(8)]
    limit = Limit(rate=NO_REFILL, burst=37)

    decisions = await asyncio.gather(
        *(bucket.acquire("shared", limit) for bucket in buckets for _ in range(25))
    )

    assert sum(d.allowed for d in decisions) == 37
    assert sorted(round(d.remaining) for d in decisions if d.allowed) == list(range(37))
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


async def test_fractional_costs_add_up_exactly_under_concurrency(
    make_bucket: MakeBucket,
) -> None:
    buckets = [await make_bucket() for _ in range(4)]
    limit = Limit(rate=NO_REFILL, burst=10)

    decisions = await asyncio.gather(
        *(bucket.acquire("k", limit, cost=0.25) for bucket in buckets for _ in range(20))
    )

    assert sum(d.allowed for d in decisions) == 40


async def test_refill_follows_elapsed_time(make_bucket: MakeBucket) -> None:
    bucket = await make_bucket()
    limit = Limit(rate=20, burst=10)
    drained = [(await bucket.acquire("k", limit)).allowed for _ in range(10)]
    assert all(drained)
    refused = await bucket.acquire("k", limit)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1 / 20

    await asyncio.sleep(0.25)  # about 5 tokens
    granted = 0
    while (await bucket.acquire("k", limit)).allowed:
        granted += 1

    assert 3 <= granted <= 10


async def test_a_refused_acquire_takes_nothing(make_bucket: MakeBucket) -> None:
    bucket = await make_bucket()
    limit = Limit(rate=NO_REFILL, burst=5)
    await bucket.acquire("k", limit, cost=3)

    refused = await bucket.acquire("k", limit, cost=3)
    assert not refused.allowed
    assert refused.remaining == pytest.approx(2, abs=1e-3)
    assert refused.retry_after == pytest.approx(1 / NO_REFILL, rel=1e-3)

    assert (await bucket.acquire("k", limit, cost=2)).allowed


async def test_state_is_stamped_in_microseconds_of_the_redis_server_clock(
    make_bucket: MakeBucket, client: redis.asyncio.Redis
) -> None:
    bucket = await make_bucket()
    await bucket.acquire("k", Limit(rate=1, burst=5))

    stamped = await client.hget(bucket.bucket_key("k"), "ts")
    assert stamped is not None
    stamped_us = int(stamped)
    seconds, micros = await client.time()

    assert 0 <= seconds * 1_000_000 + micros - stamped_us < 5_000_000


async def test_keys_are_isolated(make_bucket: MakeBucket) -> None:
    bucket = await make_bucket()
    limit = Limit(rate=NO_REFILL, burst=2)
    for _ in range(2):
        await bucket.acquire("a", limit)

    assert not (await bucket.acquire("a", limit)).allowed
    assert (await bucket.acquire("b", limit)).remaining == pytest.approx(1)


async def test_prefixes_are_isolated(client: redis.asyncio.Redis, prefix: str) -> None:
    first = RedisTokenBucket(client, prefix=prefix)
    second = RedisTokenBucket(client, prefix=f"{prefix}:other")
    limit = Limit(rate=NO_REFILL, burst=1)

    assert (await first.acquire("k", limit)).allowed
    assert (await second.acquire("k", limit)).allowed
    assert not (await first.acquire("k", limit)).allowed


async def test_ttl_is_the_time_to_refill_plus_the_margin(
    make_bucket: MakeBucket, client: redis.asyncio.Redis
) -> None:
    bucket = await make_bucket()
    limit = Limit(rate=2, burst=20)
    for _ in range(10):
        await bucket.acquire("k", limit)  # 10 missing at 2/s: full in 5s

    ttl_ms = await client.pttl(bucket.bucket_key("k"))

    assert 5_000 < ttl_ms <= 6_000  # plus the default 1s margin


async def test_a_new_limit_continues_from_the_saved_tokens(make_bucket: MakeBucket) -> None:
    bucket = await make_bucket()
    await bucket.acquire("k", Limit(rate=NO_REFILL, burst=10), cost=3)  # 7 left

    smaller = await bucket.acquire("k", Limit(rate=NO_REFILL, burst=4))
    assert smaller.remaining == pytest.approx(3, abs=1e-3)  # capped at 4, then one taken

    larger = await bucket.acquire("k", Limit(rate=NO_REFILL, burst=100))
    assert larger.remaining == pytest.approx(2, abs=1e-3)  # a larger burst adds nothing


async def test_cost_above_burst_fails_before_reaching_redis() -> None:
    unreachable = redis.asyncio.Redis.from_url("redis://127.0.0.1:1")
    try:
        with pytest.raises(ValueError, match="burst"):
            await RedisTokenBucket(unreachable).acquire("k", Limit(rate=1, burst=2), cost=3)
    finally:
        await unreachable.aclose()


async def test_fallback_answers_locally_when_redis_is_unreachable() -> None:
    unreachable = redis.asyncio.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    limiter = FallbackRateLimiter(RedisTokenBucket(unreachable), LocalTokenBucket())
    limit = Limit(rate=NO_REFILL, burst=3)
    try:
        decisions = [await limiter.acquire("k", limit) for _ in range(4)]
    finally:
        await unreachable.aclose()

    assert limiter.degraded
    assert [d.allowed for d in decisions] == [True, True, True, False]


async def test_fallback_uses_redis_while_it_answers(
    make_bucket: MakeBucket, client: redis.asyncio.Redis
) -> None:
    primary = await make_bucket()
    limiter = FallbackRateLimiter(primary, LocalTokenBucket())

    await limiter.acquire("k", Limit(rate=NO_REFILL, burst=3))

    assert not limiter.degraded
    tokens = await client.hget(primary.bucket_key("k"), "tokens")
    assert tokens is not None
    assert float(tokens) == pytest.approx(2, abs=1e-3)
