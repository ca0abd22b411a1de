"""The shell every service runs in: its resources, its HTTP API and its command line.

A service supplies only what is its own — settings class, routers, workers (consumers,
schedulers) and migrations — and gets the same process shape as every other service:

``python -m <service> api``      the REST API (uvicorn), scaled by CPU
``python -m <service> worker``   the outbox relay and the service's workers, scaled by lag
``python -m <service> migrate``  Alembic migrations, run as their own step
``python -m <service> all``      API and workers in one process (the local stack)

:class:`Platform` holds the process's connections (database, Redis, Kafka producer) and
installs logging and tracing; :func:`create_api` builds a FastAPI app with problem+json
errors, JWT auth, per-company API limits, metrics, liveness and readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import typer
import uvicorn
from fastapi import APIRouter, FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from redis.asyncio import Redis

from esquadrao_common import migrations
from esquadrao_common.api_limits import ApiLimits, RedisLimitStore, install_api_limits
from esquadrao_common.auth import JwtConfig, install_auth
from esquadrao_common.db import Database
from esquadrao_common.errors import install_problem_handlers
from esquadrao_common.health import KafkaCheck, database_check, health_router, redis_check
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.logging import configure_logging
from esquadrao_common.metrics import install_http_metrics, metrics_router
from esquadrao_common.relay import OutboxRelay
from esquadrao_common.resilience.ratelimit import (
    FallbackRateLimiter,
    LocalTokenBucket,
    RedisTokenBucket,
)
from esquadrao_common.settings import MigrationSettings, ServiceSettings
from esquadrao_common.tracing import configure_tracing

log = logging.getLogger(__name__)

#: Paths that carry no business traffic: no request spans for probes and scrapes.
_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Worker(Protocol):
    """A long-running loop of a worker process (relay, consumer, scheduler)."""

    async def run(self) -> None:
        """Work until :meth:`stop` is called, then return."""

    async def stop(self) -> None:
        """Ask :meth:`run` to finish what it is doing and return."""


@dataclass
class Platform:
    """The connections of one service process, opened by :meth:`start`."""

    settings: ServiceSettings
    database: Database = field(init=False)
    redis: Redis = field(init=False)
    publisher: KafkaPublisher = field(init=False)
    kafka_check: KafkaCheck = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.database = Database(settings.database_url)
        self.redis = Redis.from_url(settings.redis_url)
        self.publisher = KafkaPublisher(
            settings.kafka_bootstrap,
            enable_idempotence=settings.kafka_enable_idempotence,
            client_id=settings.service_name,
        )
        self.kafka_check = KafkaCheck(settings.kafka_bootstrap)

    @staticmethod
    def observe(settings: ServiceSettings) -> None:
        """Install JSON logging and tracing (spans of HTTP, SQL, Redis and httpx calls)."""
        configure_logging(settings.service_name, settings.log_level, settings.log_format)
        configure_tracing(
            settings.service_name,
            otlp_endpoint=settings.otel_exporter_otlp_endpoint,
            console=settings.otel_console,
        )
        RedisInstrumentor().instrument()
        HTTPXClientInstrumentor().instrument()

    async def start(self) -> None:
        SQLAlchemyInstrumentor().instrument(engine=self.database.engine.sync_engine)
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.stop()
        await self.kafka_check.close()
        await self.redis.aclose()
        await self.database.dispose()

    def relay(self) -> OutboxRelay:
        """The relay of this service's outbox, publishing with this process's producer."""
        return OutboxRelay(self.database, self.publisher, service=self.settings.service_name)

    def api_limits(self) -> ApiLimits:
        """Per-company API limits shared by all replicas (in-process while Redis is down)."""
        limiter = FallbackRateLimiter(RedisTokenBucket(self.redis), LocalTokenBucket())
        return ApiLimits(limiter, RedisLimitStore(self.redis))


def create_api(
    platform: Platform,
    *,
    title: str,
    routers: Sequence[APIRouter],
    version: str = "0.1.0",
    description: str = "",
) -> FastAPI:
    """The FastAPI app of a service: its ``routers`` plus the platform's conventions.

    Errors are problem+json, ``/healthz`` is liveness, ``/readyz`` checks Postgres, Redis
    and the broker, ``/metrics`` is Prometheus, request spans continue an incoming
    ``traceparent``. The platform's connections open and close with the app.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.close()

    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=lifespan,
        telemetry={
            "auto_configure": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": lambda scope: scope.get("path") in _UNTRACED_PATHS,
        },
    )
    install_problem_handlers(app)
    install_http_metrics(app)
    install_auth(app, JwtConfig.from_settings(platform.settings))
    install_api_limits(app, platform.api_limits())
    app.include_router(
        health_router(
            {
                "database": database_check(platform.database),
                "redis": redis_check(platform.redis),
                "kafka": platform.kafka_check,
            }
        )
    )
    app.include_router(metrics_router())
    for router in routers:
        app.include_router(router)
    return app


async def run_workers(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    """Run ``workers`` until ``stop`` is set or one of them fails, then stop them all.

    A worker that returns or raises on its own stops the others too: a worker process
    with a dead loop must exit (and be restarted) rather than look healthy.
    """
    tasks = [asyncio.create_task(worker.run(), name=type(worker).__name__) for worker in workers]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        for worker in workers:
            await worker.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("worker %s failed: %r", task.get_name(), result)
            raise result
    if not stop.is_set():
        raise RuntimeError("a worker returned before it was asked to stop")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


class _ApiServer(uvicorn.Server):
    """uvicorn, minus its own signal handling: the program's handlers stop the API and
    the workers together (uvicorn's would re-raise SIGTERM after serving and end the
    process before the workers have shut down)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


SettingsFactory = Callable[[], ServiceSettings]
ApiFactory = Callable[[Platform], FastAPI]
WorkersFactory = Callable[[Platform], Sequence[Worker]]


@dataclass(frozen=True)
class ServiceProgram:
    """The command line of one service (``python -m <service> ...``).

    ``build_workers`` returns the service's own workers; the outbox relay is always added.
    """

    name: str
    settings: SettingsFactory
    build_api: ApiFactory
    build_workers: WorkersFactory
    migrations: Path

    def _uvicorn(self, app: FastAPI, settings: ServiceSettings) -> _ApiServer:
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        return _ApiServer(config)

    async def serve_api(self) -> None:
        settings = self.settings()
        Platform.observe(settings)
        server = self._uvicorn(self.build_api(Platform(settings)), settings)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        await serving

    async def serve_workers(self) -> None:
        settings = self.settings()
        Platform.observe(settings)
        platform = Platform(settings)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await platform.start()
        try:
            await run_workers([platform.relay(), *self.build_workers(platform)], stop)
        finally:
            await platform.close()

    async def serve_all(self) -> None:
        """API and workers in one process; SIGINT/SIGTERM stop both."""
        settings = self.settings()
        Platform.observe(settings)
        worker_platform = Platform(settings)
        server = self._uvicorn(self.build_api(Platform(settings)), settings)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await worker_platform.start()
        try:
            api = asyncio.create_task(server.serve())
            workers = asyncio.create_task(
                run_workers([worker_platform.relay(), *self.build_workers(worker_platform)], stop)
            )
            stopping = asyncio.create_task(stop.wait())
            done, _pending = await asyncio.wait(
                [api, workers, stopping], return_when=asyncio.FIRST_COMPLETED
            )
            stopping.cancel()
            stop.set()
            server.should_exit = True
            await asyncio.gather(api, workers, return_exceptions=True)
            for task in done - {stopping}:
                with contextlib.suppress(asyncio.CancelledError):
                    task.result()
        finally:
            await worker_platform.close()

    def migrate(self) -> None:
        """Apply the migrations; needs only ``DATABASE_URL`` (see :class:`MigrationSettings`)."""
        settings = MigrationSettings()
        configure_logging(self.name, settings.log_level, settings.log_format)
        migrations.upgrade(self.migrations, settings.database_url)

    def cli(self) -> typer.Typer:
        app = typer.Typer(
            name=self.name,
            help=f"Esquadrão {self.name} service.",
            no_args_is_help=True,
            add_completion=False,
        )
        app.command("api", help="Serve the REST API.")(lambda: asyncio.run(self.serve_api()))
        app.command("worker", help="Run the outbox relay and the consumers.")(
            lambda: asyncio.run(self.serve_workers())
        )
        app.command("migrate", help="Apply the database migrations.")(self.migrate)
        app.command("all", help="API and workers in one process (local development).")(
            lambda: asyncio.run(self.serve_all())
        )
        return app
