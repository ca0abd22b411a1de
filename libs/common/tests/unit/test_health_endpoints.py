"""/healthz and /readyz with fake checks: pass, fail, hang, and run concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from esquadrao_common.health import Check, health_router
from fastapi import FastAPI

pytestmark = pytest.mark.unit


async def passing() -> None:
    return None


async def failing() -> None:
    raise ConnectionRefusedError("connection refused by 127.0.0.1:6379")


async def get(checks: Mapping[str, Check], path: str, **options: Any) -> httpx.Response:
    app = FastAPI()
    app.include_router(health_router(checks, **options))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get(path)


async def test_liveness_answers_without_running_any_check() -> None:
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1
        raise AssertionError("liveness must not run readiness checks")

    response = await get({"database": counted}, "/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert calls == 0


async def test_ready_when_every_check_passes() -> None:
    response = await get({"database": passing, "redis": passing}, "/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis"}
    for result in body["checks"].values():
        assert result["ok"] is True
        assert result["latency_ms"] >= 0
        assert "error" not in result


async def test_one_failing_check_makes_it_unready_with_its_message() -> None:
    response = await get({"database": passing, "redis": failing}, "/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["redis"]["error"] == (
        "ConnectionRefusedError: connection refused by 127.0.0.1:6379"
    )


async def test_a_hanging_check_is_cancelled_at_its_timeout() -> None:
    cancelled = asyncio.Event()

    async def hanging() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    response = await get({"kafka": hanging, "database": passing}, "/readyz", check_timeout=0.05)

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["kafka"] == {
        "ok": False,
        "latency_ms": body["checks"]["kafka"]["latency_ms"],
        "error": "timed out after 0.05s",
    }
    assert body["checks"]["database"]["ok"] is True
    assert cancelled.is_set()


async def test_a_check_raising_its_own_timeout_reports_it_as_such() -> None:
    async def driver_timeout() -> None:
        raise TimeoutError("driver gave up waiting for the pool")

    response = await get({"database": driver_timeout}, "/readyz", check_timeout=60)

    assert response.status_code == 503
    assert response.json()["checks"]["database"]["error"] == (
        "TimeoutError: driver gave up waiting for the pool"
    )


async def test_an_exception_without_message_is_reported_by_its_type() -> None:
    async def bare() -> None:
        raise ConnectionResetError

    response = await get({"redis": bare}, "/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["error"] == "ConnectionResetError"


async def test_checks_run_concurrently() -> None:
    """Each check waits for the other to have started: run one after the other, the first
    would wait until its timeout and readiness would fail."""
    first_started, second_started = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        first_started.set()
        await second_started.wait()

    async def second() -> None:
        second_started.set()
        await first_started.wait()

    response = await get({"first": first, "second": second}, "/readyz", check_timeout=5)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_without_checks_ready_means_alive() -> None:
    response = await get({}, "/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}
