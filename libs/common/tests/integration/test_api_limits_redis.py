"""Per-company API limits on a real Redis: overrides shared by replicas (and how stale a
replica's cache may be), and buckets shared by replicas through RedisTokenBucket."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio
from esquadrao_common.api_limits import (
    ApiLimitKind,
    ApiLimits,
    RedisLimitStore,
    api_limits_router,
    install_api_limits,
    rate_limited,
)
from esquadrao_common.auth import JwtConfig, Role, install_auth, mint_token
from esquadrao_common.errors import install_problem_handlers
from esquadrao_common.resilience.ratelimit import Limit, RedisTokenBucket
from fastapi import Depends, FastAPI

pytestmark = pytest.mark.integration

SECRET = "integration-test-secret-of-32-bytes!"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> str:
    return f"test-api-limits-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def company() -> str:
    return f"company-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_client(
    redis_url: str, prefix: str
) -> AsyncIterator[Callable[[], redis.asyncio.Redis]]:
    """Clients with their own connection pools, as separate replicas have; the test's keys
    are deleted afterwards."""
    clients: list[redis.asyncio.Redis] = []

    def make() -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(redis_url)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        cleaner = redis.asyncio.Redis.from_url(redis_url)
        keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleaner.delete(*keys)
        await cleaner.aclose()
        for client in clients:
            await client.aclose()


async def test_an_override_set_by_one_replica_is_read_by_another(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str, company: str
) -> None:
    writer = RedisLimitStore(make_client(), prefix=prefix)
    reader = RedisLimitStore(make_client(), prefix=prefix)

    await writer.set(company, ApiLimitKind.WHATSAPP, Limit(rate=2.5, burst=7))

    assert await reader.get(company, ApiLimitKind.WHATSAPP) == Limit(rate=2.5, burst=7)
    assert await reader.get(company, ApiLimitKind.CONTACT) is None
    assert await reader.get("another-company", ApiLimitKind.WHATSAPP) is None


async def test_the_override_is_a_hash_field_per_kind_holding_json(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str, company: str
) -> None:
    client = make_client()
    store = RedisLimitStore(client, prefix=prefix)

    await store.set(company, ApiLimitKind.CAMPAIGN, Limit(rate=0.5, burst=3))

    stored = await client.hgetall(f"{prefix}:{company}")
    assert list(stored) == [b"campaign"]
    assert json.loads(stored[b"campaign"]) == {"rate": 0.5, "burst": 3}


async def test_another_replica_sees_changes_within_its_cache_time(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str, company: str
) -> None:
    clock = FakeClock()
    writer = RedisLimitStore(make_client(), prefix=prefix)
    reader = RedisLimitStore(make_client(), prefix=prefix, cache_seconds=5.0, clock=clock)
    assert await reader.get(company, ApiLimitKind.CONTACT) is None  # now cached

    await writer.set(company, ApiLimitKind.CONTACT, Limit(rate=9, burst=9))
    clock.now += 4.9
    stale = await reader.get(company, ApiLimitKind.CONTACT)
    clock.now += 0.1
    fresh = await reader.get(company, ApiLimitKind.CONTACT)

    assert stale is None
    assert fresh == Limit(rate=9, burst=9)

    assert await writer.delete(company, ApiLimitKind.CONTACT) is True
    assert await writer.delete(company, ApiLimitKind.CONTACT) is False
    clock.now += 5.0
    assert await reader.get(company, ApiLimitKind.CONTACT) is None


async def test_the_replica_that_changes_a_limit_sees_it_at_once(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str, company: str
) -> None:
    store = RedisLimitStore(make_client(), prefix=prefix, clock=FakeClock())
    assert await store.get(company, ApiLimitKind.GLOBAL) is None  # now cached

    await store.set(company, ApiLimitKind.GLOBAL, Limit(rate=1, burst=2))
    after_set = await store.get(company, ApiLimitKind.GLOBAL)
    await store.delete(company, ApiLimitKind.GLOBAL)

    assert after_set == Limit(rate=1, burst=2)
    assert await store.get(company, ApiLimitKind.GLOBAL) is None


async def test_an_unreadable_stored_override_is_ignored(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str, company: str
) -> None:
    client = make_client()
    key = f"{prefix}:{company}"
    await client.hset(
        key,
        mapping={
            "whatsapp": "not json",
            "contact": json.dumps({"rate": 0, "burst": 5}),
            "sms": json.dumps({"rate": 1, "burst": 1}),
            "campaign": json.dumps({"rate": 3, "burst": 4}),
        },
    )
    store = RedisLimitStore(client, prefix=prefix)

    assert await store.get(company, ApiLimitKind.WHATSAPP) is None
    assert await store.get(company, ApiLimitKind.CONTACT) is None
    assert await store.get(company, ApiLimitKind.CAMPAIGN) == Limit(rate=3, burst=4)


@dataclass
class Replica:
    client: httpx.AsyncClient

    async def call(
        self, method: str, path: str, company: str, role: Role, json: object = None
    ) -> httpx.Response:
        token = mint_token(
            company_id=company, user="ana", role=role, ttl_seconds=600, secret=SECRET
        )
        headers = {"Authorization": f"Bearer {token}"}
        return await self.client.request(method, path, headers=headers, json=json)


@pytest.fixture
async def make_replica(
    make_client: Callable[[], redis.asyncio.Redis], prefix: str
) -> AsyncIterator[Callable[[], Awaitable[Replica]]]:
    """An app with the production wiring (Redis buckets, Redis overrides), one Redis client
    per replica."""
    clients: list[httpx.AsyncClient] = []

    async def make() -> Replica:
        redis_client = make_client()
        limits = ApiLimits(
            RedisTokenBucket(redis_client, prefix=f"{prefix}-buckets"),
            RedisLimitStore(redis_client, prefix=f"{prefix}-overrides"),
        )
        app = FastAPI()
        install_problem_handlers(app)
        install_auth(app, JwtConfig(secret=SECRET))
        install_api_limits(app, limits)

        @app.post("/contacts", dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))])
        async def create_contact() -> dict[str, bool]:
            return {"created": True}

        app.include_router(api_limits_router())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        clients.append(client)
        return Replica(client)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


async def test_replicas_share_the_companys_override_and_bucket(
    make_replica: Callable[[], Awaitable[Replica]], company: str
) -> None:
    first, second = await make_replica(), await make_replica()
    put = await first.call(
        "PUT", "/admin/api-limits/contact", company, Role.ADMIN, json={"rate": 0.01, "burst": 3}
    )
    assert put.status_code == 200

    statuses = [
        (await replica.call("POST", "/contacts", company, Role.AGENT)).status_code
        for replica in (first, second, first)
    ]
    refused = await second.call("POST", "/contacts", company, Role.AGENT)
    other_company = await second.call("POST", "/contacts", f"{company}-other", Role.AGENT)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["limit_kind"] == "contact"
    assert 1 <= int(refused.headers["retry-after"]) <= 100  # one token at 0.01/s
    assert other_company.status_code == 200
    assert other_company.headers["ratelimit-limit"] == "100"  # the default contact burst
