"""The local stack: the broker, Postgres, Redis and the WhatsApp simulator the suite needs,
embedded or given.

Each server is either given by URL (``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``REDIS_URL``,
``WHATSAPP_SIMULATOR_URL``) and used as it is, or embedded: started as a supervised child
process with its files under ``<run_dir>/<component>/``. Either way the stack then
provisions what the services expect: every topic of the catalog on the broker and one
database per service on Postgres.

Asynchronous callers use :class:`LocalStack` (``async with LocalStack(...) as stack``);
synchronous ones (pytest session fixtures) use :class:`BackgroundStack`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from esquadrao_common.kafka.admin import ensure_topics
from esquadrao_common.kafka.catalog import Catalog

from esquadrao_devstack.process import gather_all
from esquadrao_devstack.servers import (
    EmbeddedServer,
    PostgresServer,
    RedisServer,
    SimulatorServer,
    TansuBroker,
)

#: Every service of the suite; each gets its own database, ``esquadrao_<service>``.
SERVICES: tuple[str, ...] = ("contacts", "campaigns", "whatsapp", "tickets", "notifications")


class Component(StrEnum):
    """An infrastructure server of the stack (also the name of its data directory)."""

    KAFKA = "kafka"
    POSTGRES = "postgres"
    REDIS = "redis"
    SIMULATOR = "wasim"


#: The servers every test session needs; the simulator is started only for the tests that
#: ask for it.
INFRASTRUCTURE: tuple[Component, ...] = (Component.KAFKA, Component.POSTGRES, Component.REDIS)


def libpq_url(url: str, *, database: str | None = None) -> str:
    """``url`` with the plain ``postgresql://`` scheme (no SQLAlchemy driver suffix, as
    libpq and asyncpg expect), on ``database`` when given."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    path = parts.path if database is None else f"/{database}"
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def _given(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None


@dataclass(frozen=True)
class StackConfig:
    """Which servers are given (used as they are) and the ports of the embedded ones.

    A ``None`` URL means "embed it"; a port of 0 means "any free port".
    ``service_database_urls`` maps a service to a database URL used for it instead of
    ``esquadrao_<service>`` on the Postgres server.
    """

    kafka_bootstrap: str | None = None
    postgres_url: str | None = None
    redis_url: str | None = None
    whatsapp_simulator_url: str | None = None
    service_database_urls: Mapping[str, str] = field(default_factory=dict)
    kafka_port: int = 0
    postgres_port: int = 0
    redis_port: int = 0
    simulator_port: int = 0

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        services: Iterable[str] = SERVICES,
        kafka_port: int = 0,
        postgres_port: int = 0,
        redis_port: int = 0,
        simulator_port: int = 0,
    ) -> StackConfig:
        """Read ``KAFKA_BOOTSTRAP``, ``DATABASE_URL`` (a server URL), ``REDIS_URL``,
        ``WHATSAPP_SIMULATOR_URL`` and, for each of ``services``, ``<SERVICE>_DATABASE_URL``
        (e.g. ``CONTACTS_DATABASE_URL``); unset or empty means embedded."""
        env = os.environ if environ is None else environ
        database_url = _given(env, "DATABASE_URL")
        service_urls = {
            service: url
            for service in services
            if (url := _given(env, f"{service.upper()}_DATABASE_URL")) is not None
        }
        return cls(
            kafka_bootstrap=_given(env, "KAFKA_BOOTSTRAP"),
            postgres_url=libpq_url(database_url) if database_url else None,
            redis_url=_given(env, "REDIS_URL"),
            whatsapp_simulator_url=_given(env, "WHATSAPP_SIMULATOR_URL"),
            service_database_urls=service_urls,
            kafka_port=kafka_port,
            postgres_port=postgres_port,
            redis_port=redis_port,
            simulator_port=simulator_port,
        )

    def given(self, component: Component) -> str | None:
        """The URL given for ``component``, or None when it is to be embedded."""
        return {
            Component.KAFKA: self.kafka_bootstrap,
            Component.POSTGRES: self.postgres_url,
            Component.REDIS: self.redis_url,
            Component.SIMULATOR: self.whatsapp_simulator_url,
        }[component]


class LocalStack:
    """The servers of the suite for one run, embedded under ``run_dir`` where not given.

    ``components`` limits the stack to the servers a caller needs (``migrate`` needs only
    Postgres). After the servers answer, :meth:`start` creates the catalog's topics
    (``create_topics``) and a database for each of ``services`` (``create_databases``).
    ``durable=False`` trades crash safety of the embedded Postgres for speed (tests).
    """

    def __init__(
        self,
        run_dir: Path,
        config: StackConfig | None = None,
        *,
        components: Iterable[Component] = tuple(Component),
        services: Iterable[str] = SERVICES,
        create_topics: bool = True,
        create_databases: bool = True,
        durable: bool = True,
        catalog: Catalog | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.config = config if config is not None else StackConfig()
        self.components = frozenset(components)
        self.services = tuple(services)
        self.create_topics = create_topics
        self.create_databases = create_databases
        self.startup_timeout = startup_timeout
        self._catalog = catalog
        self.broker: TansuBroker | None = None
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.simulator: SimulatorServer | None = None
        if self._embeds(Component.KAFKA):
            self.broker = TansuBroker(self.run_dir / Component.KAFKA, self.config.kafka_port)
        if self._embeds(Component.POSTGRES):
            self.postgres = PostgresServer(
                self.run_dir / Component.POSTGRES, self.config.postgres_port, durable=durable
            )
        if self._embeds(Component.REDIS):
            self.redis = RedisServer(self.run_dir / Component.REDIS, self.config.redis_port)
        if self._embeds(Component.SIMULATOR):
            self.simulator = SimulatorServer(
                self.run_dir / Component.SIMULATOR, self.config.simulator_port
            )

    def _embeds(self, component: Component) -> bool:
        return component in self.components and self.config.given(component) is None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.load()
        return self._catalog

    @property
    def embedded(self) -> list[EmbeddedServer]:
        """The servers this stack runs itself (in component order)."""
        servers = (self.broker, self.postgres, self.redis, self.simulator)
        return [server for server in servers if server is not None]

    def _url(self, component: Component, server: EmbeddedServer | None) -> str:
        if component not in self.components:
            raise RuntimeError(f"this stack has no {component} server")
        if server is not None:
            return server.url
        given = self.config.given(component)
        assert given is not None
        return given

    @property
    def kafka_bootstrap(self) -> str:
        return self._url(Component.KAFKA, self.broker)

    @property
    def postgres_url(self) -> str:
        """The Postgres server URL (maintenance database), ``postgresql://`` scheme."""
        return self._url(Component.POSTGRES, self.postgres)

    @property
    def redis_url(self) -> str:
        return self._url(Component.REDIS, self.redis)

    @property
    def whatsapp_simulator_url(self) -> str:
        """The WhatsApp simulator's base URL (``http://host:port``)."""
        return self._url(Component.SIMULATOR, self.simulator)

    def database_url(self, service: str) -> str:
        """The database URL of ``service``: its override, else ``esquadrao_<service>``."""
        if service in self.config.service_database_urls:
            return self.config.service_database_urls[service]
        return libpq_url(self.postgres_url, database=f"esquadrao_{service}")

    async def start(self) -> None:
        """Start the embedded servers concurrently, then provision topics and databases.

        On failure everything started is stopped again before the error propagates.
        """
        try:
            await gather_all(server.start(self.startup_timeout) for server in self.embedded)
            provisioning = []
            if Component.KAFKA in self.components and self.create_topics:
                provisioning.append(self.ensure_topics())
            if Component.POSTGRES in self.components and self.create_databases:
                provisioning.append(self.ensure_databases())
            await gather_all(provisioning)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every embedded server (concurrently); safe to call more than once."""
        await gather_all(server.stop() for server in self.embedded)

    async def ensure_topics(self) -> list[str]:
        """Create the catalog's missing topics (replication factor 1); return their names."""
        return await ensure_topics(
            self.kafka_bootstrap, self.catalog.all_topics(), replication_factor=1
        )

    async def ensure_databases(self) -> list[str]:
        """Create the missing ``esquadrao_<service>`` databases; return their names.

        Services with their own ``<SERVICE>_DATABASE_URL`` are left alone.
        """
        wanted = [
            f"esquadrao_{service}"
            for service in self.services
            if service not in self.config.service_database_urls
        ]
        created = []
        connection = await asyncpg.connect(self.postgres_url)
        try:
            existing = {
                row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")
            }
            for name in wanted:
                if name in existing:
                    continue
                try:
                    await connection.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
                except asyncpg.DuplicateDatabaseError:
                    pass  # created concurrently by another supervisor
        finally:
            await connection.close()
        return created

    def exited(self) -> list[EmbeddedServer]:
        """Embedded servers whose process has exited since they started."""
        return [server for server in self.embedded if server.returncode is not None]

    async def restart_broker(self) -> None:
        """Restart the embedded broker on its port and recreate the catalog's topics.

        The broker keeps topics in memory only, so everything connected to it must
        reconnect and resume from scratch afterwards.
        """
        if self.broker is None:
            raise RuntimeError("the broker is not embedded in this stack")
        await self.broker.restart(self.startup_timeout)
        if self.create_topics:
            await self.ensure_topics()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class BackgroundStack:
    """A :class:`LocalStack` run on an event loop of its own, for synchronous callers.

    The loop's thread starts and stops every child process, and lives from :meth:`start`
    to :meth:`stop`, which keeps the children's parent-death signal tied to the stack's
    lifetime rather than to whatever thread happened to call :meth:`start`.
    """

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalStack:
        if self._loop is not None:
            raise RuntimeError("the stack is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="esquadrao-stack", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.stack.start(), loop).result()
        except BaseException:
            self._close_loop()
            raise
        return self.stack

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stack.stop(), self._loop).result()
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
