"""Readiness checks against real Postgres, Redis and broker, and against a closed port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from esquadrao_common.db import Database
from esquadrao_common.health import (
    Check,
    KafkaCheck,
    database_check,
    health_router,
    kafka_check,
    redis_check,
)
from fastapi import FastAPI
from redis.asyncio import Redis

pytestmark = pytest.mark.integration

#: Nothing listens on port 1: connections to it are refused at once.
CLOSED_HOST = "127.0.0.1:1"

#: Generous, so that a failure below comes from the refused connection, not the timeout.
CHECK_TIMEOUT = 10.0


async def readyz(checks: Mapping[str, Check]) -> tuple[int, dict[str, Any]]:
    app = FastAPI()
    app.include_router(health_router(checks, check_timeout=CHECK_TIMEOUT))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/readyz")
    return response.status_code, response.json()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, pool_size=1)
    yield db
    await db.dispose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaCheck]:
    check = kafka_check(kafka_bootstrap)
    yield check
    await check.close()


async def test_ready_against_the_real_servers(
    database: Database, redis: Redis, kafka: KafkaCheck
) -> None:
    status, body = await readyz(
        {"database": database_check(database), "redis": redis_check(redis), "kafka": kafka}
    )

    assert status == 200, body
    assert body["status"] == "ok"
    assert {name: result["ok"] for name, result in body["checks"].items()} == {
        "database": True,
        "redis": True,
        "kafka": True,
    }


async def test_kafka_check_keeps_answering_across_probes_and_after_close(
    kafka: KafkaCheck,
) -> None:
    for _ in range(3):
        await kafka()
    await kafka.close()

    await kafka()


async def test_unready_when_every_server_is_unreachable() -> None:
    database = Database(f"postgresql://postgres@{CLOSED_HOST}/postgres", pool_size=1)
    redis = Redis.from_url(f"redis://{CLOSED_HOST}/0")
    kafka = KafkaCheck(CLOSED_HOST)
    try:
        status, body = await readyz(
            {"database": database_check(database), "redis": redis_check(redis), "kafka": kafka}
        )
    finally:
        await kafka.close()
        await redis.aclose()
        await database.dispose()

    assert status == 503
    assert body["status"] == "fail"
    assert set(body["checks"]) == {"database", "redis", "kafka"}
    for name, result in body["checks"].items():
        assert result["ok"] is False, name
        assert result["error"], name
        assert not result["error"].startswith("timed out"), (name, result["error"])


async def test_one_unreachable_server_fails_readiness_alone(
    database: Database, redis: Redis
) -> None:
    kafka = KafkaCheck(CLOSED_HOST)
    try:
        status, body = await readyz(
            {"database": database_check(database), "redis": redis_check(redis), "kafka": kafka}
        )
    finally:
        await kafka.close()

    assert status == 503
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["kafka"]["ok"] is False
    assert "KafkaConnectionError" in body["checks"]["kafka"]["error"]
