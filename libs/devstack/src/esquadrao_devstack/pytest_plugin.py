"""Pytest fixtures for the servers tests talk to.

Servers come from ``KAFKA_BOOTSTRAP``, ``DATABASE_URL`` and ``REDIS_URL`` when set; each
one not set is embedded: started once per test session (concurrently with the others, data
in a temporary directory) and stopped at its end. Either way the catalog's topics exist.

Fixtures: ``infra`` (all three URLs), ``kafka_bootstrap``, ``redis_url``, ``database_url``
(a fresh empty database per test) and ``kafka_topics`` (a factory of unique topics).

``whatsapp_simulator`` (its base URL) is the WhatsApp simulator: ``WHATSAPP_SIMULATOR_URL``
when set, else one embedded for the session — started only when a test asks for it. The
simulator is shared by the session's tests: they register their own numbers and sessions
and count by their own message ids, and never reset it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from esquadrao_devstack.stack import (
    INFRASTRUCTURE,
    BackgroundStack,
    Component,
    LocalStack,
    StackConfig,
    libpq_url,
)


@dataclass(frozen=True)
class Infra:
    """The servers of a test session."""

    kafka_bootstrap: str
    postgres_url: str  # server URL (maintenance database), postgresql:// scheme
    redis_url: str


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """The session's servers: given by the environment, or embedded for this session."""
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-test-stack-"))
    # Embedded Postgres may run as an unprivileged account that must reach its directory.
    run_dir.chmod(0o755)
    stack = LocalStack(
        run_dir,
        StackConfig.from_env(),
        components=INFRASTRUCTURE,
        create_databases=False,
        durable=False,
    )
    try:
        with BackgroundStack(stack):
            yield Infra(
                kafka_bootstrap=stack.kafka_bootstrap,
                postgres_url=stack.postgres_url,
                redis_url=stack.redis_url,
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def whatsapp_simulator() -> Iterator[str]:
    """The base URL (``http://host:port``) of the session's WhatsApp simulator."""
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-test-wasim-"))
    stack = LocalStack(run_dir, StackConfig.from_env(), components=[Component.SIMULATOR])
    try:
        with BackgroundStack(stack):
            yield stack.whatsapp_simulator_url
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Infra) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(infra: Infra) -> str:
    return infra.redis_url


@pytest.fixture
async def database_url(infra: Infra) -> AsyncIterator[str]:
    """A fresh, empty database for one test (``postgresql://`` URL), dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield libpq_url(infra.postgres_url, database=name)
    admin = await asyncpg.connect(infra.postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class MakeTopics(Protocol):
    """Create ``n`` topics with unique names and ``partitions`` partitions each."""

    async def __call__(self, n: int = 1, *, partitions: int = 1) -> list[str]: ...


@pytest.fixture
async def kafka_topics(kafka_bootstrap: str) -> AsyncIterator[MakeTopics]:
    """Factory of fresh topics (``await kafka_topics(2, partitions=3)``), deleted afterwards.

    Names are unique (``t-<hex>``), so tests never see each other's records even on a
    broker shared by several test runs.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def make_topics(n: int = 1, *, partitions: int = 1) -> list[str]:
        names = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(n)]
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
        created.extend(names)
        return names

    try:
        yield make_topics
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        finally:
            await admin.close()
