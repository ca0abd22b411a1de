"""Liveness and readiness endpoints, and the checks readiness runs.

``GET /healthz`` (liveness) answers 200 as long as the event loop runs: it does no I/O,
so a slow dependency never gets a healthy process restarted. ``GET /readyz`` (readiness)
runs every named check concurrently, each under its own timeout, and answers 200 when all
passed or 503 when any failed, so traffic only reaches an instance whose dependencies
answer. Both bodies are JSON::

    {"status": "ok", "checks": {"database": {"ok": true, "latency_ms": 1.3}}}
    {"status": "fail", "checks": {"redis": {"ok": false, "latency_ms": 2000.4,
                                             "error": "timed out after 2s"}}}

A check is an async callable taking no argument: it passes by returning and fails by
raising (the exception's message is reported). Factories here build the usual ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy import text

from esquadrao_common.db import Database
from esquadrao_common.logging import get_logger

Check = Callable[[], Awaitable[None]]

#: Seconds each readiness check may take before it counts as failed.
DEFAULT_CHECK_TIMEOUT = 2.0

_log = get_logger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``error`` says why it failed (None when ``ok``)."""

    ok: bool
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 3)}
        if self.error is not None:
            body["error"] = self.error
        return body


async def run_check(check: Check, check_timeout: float = DEFAULT_CHECK_TIMEOUT) -> CheckResult:
    """Run ``check``, cancelling it after ``check_timeout`` seconds; never raises for its
    failure."""
    started = time.perf_counter()
    error: str | None = None
    deadline = asyncio.timeout(check_timeout)
    try:
        async with deadline:
            await check()
    except TimeoutError as exc:
        error = f"timed out after {check_timeout:g}s" if deadline.expired() else _describe(exc)
    except Exception as exc:
        error = _describe(exc)
    latency_ms = (time.perf_counter() - started) * 1000
    return CheckResult(ok=error is None, latency_ms=latency_ms, error=error)


async def run_checks(
    checks: Mapping[str, Check], check_timeout: float = DEFAULT_CHECK_TIMEOUT
) -> dict[str, CheckResult]:
    """Run all ``checks`` concurrently, each with ``check_timeout``; results by check name."""
    names = list(checks)
    results = await asyncio.gather(*(run_check(checks[name], check_timeout) for name in names))
    return dict(zip(names, results, strict=True))


def _describe(error: BaseException) -> str:
    """``Type: message`` (some exceptions already start their message with their type)."""
    kind, message = type(error).__name__, str(error).strip()
    if not message:
        return kind
    return message if message.startswith(kind) else f"{kind}: {message}"


def health_router(
    checks: Mapping[str, Check], *, check_timeout: float = DEFAULT_CHECK_TIMEOUT
) -> APIRouter:
    """A router with ``GET /healthz`` (liveness) and ``GET /readyz`` (runs ``checks``, each
    under ``check_timeout`` seconds).

    With no checks, readiness is the same as liveness.
    """
    router = APIRouter()
    named_checks = dict(checks)

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results = await run_checks(named_checks, check_timeout)
        failed = {name: result for name, result in results.items() if not result.ok}
        for name, result in failed.items():
            _log.warning("readiness check failed", check=name, error=result.error)
        return JSONResponse(
            {
                "status": "fail" if failed else "ok",
                "checks": {name: result.as_dict() for name, result in results.items()},
            },
            status_code=503 if failed else 200,
        )

    return router


def database_check(database: Database) -> Check:
    """Passes when a pooled connection to ``database`` runs ``SELECT 1``."""

    async def check() -> None:
        async with database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return check


def redis_check(client: Redis) -> Check:
    """Passes when ``client``'s server answers ``PING``."""

    async def check() -> None:
        await client.ping()

    return check


class KafkaCheck:
    """Passes when the brokers at ``bootstrap`` answer a metadata request.

    One admin client is kept across checks (a probe every few seconds must not open a new
    connection each time): it is started on first use, replaced after a failure (a fresh
    client re-bootstraps, which a broker that moved or restarted may need), and closed by
    :meth:`close`, which the service calls on shutdown.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def __call__(self) -> None:
        async with self._lock:
            try:
                if self._admin is None:
                    self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
                    await self._admin.start()
                cluster = await self._admin.describe_cluster()
            except BaseException:
                self._discard()
                raise
        if not cluster.get("brokers"):
            raise RuntimeError(f"no broker listed in the metadata of {self.bootstrap}")

    def _discard(self) -> None:
        """Forget the current client and close it in the background.

        Not awaited here: this runs while the check is failing, possibly cancelled by its
        timeout, and closing must not make the probe wait any longer.
        """
        admin, self._admin = self._admin, None
        if admin is None:
            return
        task = asyncio.get_running_loop().create_task(_close_quietly(admin))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the admin client (and wait for clients discarded after failures)."""
        async with self._lock:
            admin, self._admin = self._admin, None
            if admin is not None:
                await _close_quietly(admin)
        if self._closing:
            await asyncio.gather(*self._closing)


async def _close_quietly(admin: AIOKafkaAdminClient) -> None:
    """Close ``admin``; a failure to close a client being dropped is only logged."""
    try:
        await admin.close()
    except Exception as exc:
        _log.warning("kafka admin client close failed", error=_describe(exc))


def kafka_check(bootstrap: str) -> KafkaCheck:
    """A :class:`KafkaCheck` of ``bootstrap``; keep it to :meth:`KafkaCheck.close` it."""
    return KafkaCheck(bootstrap)
