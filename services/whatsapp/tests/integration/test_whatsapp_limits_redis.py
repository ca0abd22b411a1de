"""Session send limits in a real Redis, as replicas use them: two limiters (separate clients)
share a session's bucket and its pair limits, and a limiter whose Redis is down still
limits on its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
from esquadrao_devstack.process import free_port
from whatsapp.adapters.limits import (
    CLOUD,
    LIFTED,
    SIM,
    RefusedBy,
    SessionLimiter,
    shared_rate_limiter,
)

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = "+5511900000001", "+5511900000002", "+5511900000003"

MakeReplica = Callable[[], SessionLimiter]


@pytest.fixture
def session_id() -> str:
    return f"test-limits-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(redis_url: str, session_id: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client for inspecting Redis; deletes the session's buckets afterwards (buckets
    that barely refill would otherwise live for hours)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"whatsapp:*:{session_id}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def make_replica(redis_url: str) -> AsyncIterator[MakeReplica]:
    """Session limiters on separate Redis clients (separate connection pools), as
    replicas have."""
    clients: list[redis.asyncio.Redis] = []

    def make() -> SessionLimiter:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        clients.append(client)
        return SessionLimiter(shared_rate_limiter(client))

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


async def test_replicas_share_the_session_burst_exactly(
    make_replica: MakeReplica, session_id: str, client: redis.asyncio.Redis
) -> None:
    replicas = [make_replica(), make_replica()]
    for replica in replicas:
        replica.configure(session_id, LIFTED, {"rate": 1e-3, "burst": 20})  # no refill

    decisions = await asyncio.gather(
        *(replica.acquire(session_id, f"+55119{n:08d}") for replica in replicas for n in range(25))
    )

    assert sum(d.allowed for d in decisions) == 20
    refused = [d for d in decisions if not d.allowed]
    assert {d.refused_by for d in refused} == {RefusedBy.SESSION_RATE}
    assert await client.exists(f"whatsapp:rate:{session_id}")


async def test_replicas_together_get_what_the_bucket_refills_on_the_redis_clock(
    make_replica: MakeReplica, session_id: str, client: redis.asyncio.Redis
) -> None:
    """Granted sends add up to the bucket's arithmetic, on the Redis server's clock.

    The script starts a bucket full (``burst``) at the server time of its first acquire,
    refills ``rate`` per second of server time between acquires (capped at ``burst``) and
    stamps the state with the server time of the last one, in microseconds. So if nothing
    was capped, granted = burst + rate × (last − first) − tokens left, exactly. Capping
    needs a gap of more than 1 / rate (here 0.2 s) between two acquires while the two
    replicas ask continuously, which nothing here waits for.
    """
    rate, burst = 5.0, 5.0
    replicas = [make_replica(), make_replica()]
    for replica in replicas:
        replica.configure(session_id, LIFTED, {"rate": rate, "burst": burst})
    bucket = f"whatsapp:rate:{session_id}"
    granted = [0, 0]
    assert (await replicas[0].acquire(session_id, ALICE)).allowed
    granted[0] += 1
    first_us = int(await client.hget(bucket, "ts") or b"0")

    async def hammer(index: int, until: float) -> None:
        while time.monotonic() < until:
            if (await replicas[index].acquire(session_id, ALICE)).allowed:
                granted[index] += 1

    until = time.monotonic() + 1.2
    await asyncio.gather(hammer(0, until), hammer(1, until))

    tokens, last_us = await client.hmget(bucket, ["tokens", "ts"])
    assert tokens is not None and last_us is not None
    elapsed = (int(last_us) - first_us) / 1e6
    refilled = burst + rate * elapsed - float(tokens)
    assert sum(granted) == pytest.approx(refilled, abs=1e-6)
    assert sum(granted) > burst  # refilled tokens were granted too


async def test_replicas_share_the_pair_limit(
    make_replica: MakeReplica, session_id: str, client: redis.asyncio.Redis
) -> None:
    first, second = make_replica(), make_replica()
    overrides = {"pair_burst": 2, "pair_interval": 3600}
    for replica in (first, second):
        replica.configure(session_id, CLOUD, overrides)

    assert [(await first.acquire(session_id, ALICE)).allowed for _ in range(2)] == [True, True]
    refused = await second.acquire(session_id, ALICE)

    assert refused.refused_by is RefusedBy.PAIR
    assert refused.retry_after == pytest.approx(3600, rel=1e-3)
    assert (await second.acquire(session_id, BOB)).allowed
    assert await client.exists(f"whatsapp:pair:{session_id}:{ALICE}")


async def test_limits_still_hold_in_the_process_when_redis_is_down(session_id: str) -> None:
    unreachable = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_timeout=1, socket_connect_timeout=1
    )
    fallback = shared_rate_limiter(unreachable)
    limiter = SessionLimiter(fallback)
    limiter.configure(session_id, SIM)  # burst 5; 3 to a recipient
    try:
        to_alice = [await limiter.acquire(session_id, ALICE) for _ in range(4)]
        to_others = [await limiter.acquire(session_id, r) for r in (BOB, CAROL)]
    finally:
        await unreachable.aclose()

    assert fallback.degraded
    assert [d.allowed for d in to_alice] == [True, True, True, False]
    assert to_alice[3].refused_by is RefusedBy.PAIR  # it spent the 4th session token
    assert [d.allowed for d in to_others] == [True, False]
    assert to_others[1].refused_by is RefusedBy.SESSION_RATE
