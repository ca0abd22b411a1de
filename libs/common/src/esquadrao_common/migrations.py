"""Alembic wiring shared by every service: ``python -m <service> migrate``.

A service keeps its migrations in ``src/<service>/migrations/`` (``env.py``,
``script.py.mako``, ``versions/``). Its ``env.py`` is two lines::

    from esquadrao_common.migrations import run_env
    from <service>.adapters.orm import metadata
    run_env(metadata)

and its first revision creates the platform's tables with
:func:`create_platform_tables`. Migrations run as their own step (a Kubernetes Job, or
``make migrate``), never at service start, so replicas never race to alter a schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from esquadrao_common.db import async_url
from esquadrao_common.platform_tables import platform_metadata

T = TypeVar("T")

#: Alembic's version table; named so it never collides with a service's tables.
VERSION_TABLE = "alembic_version"


class MigrationOperations(Protocol):
    """What the platform's table helpers need of Alembic's operations: ``alembic.op`` (the
    module a revision imports) and ``alembic.operations.Operations`` both fit."""

    def get_bind(self) -> Connection: ...


def create_platform_tables(op: MigrationOperations) -> None:
    """Create the outbox, outbox lanes and processed-events tables (first revision)."""
    platform_metadata.create_all(op.get_bind())


def drop_platform_tables(op: MigrationOperations) -> None:
    """Drop the platform's tables (the first revision's downgrade)."""
    platform_metadata.drop_all(op.get_bind())


def alembic_config(script_location: Path, database_url: str) -> Config:
    """An Alembic configuration for a service's migrations on ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return config


def upgrade(script_location: Path, database_url: str, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` up to ``revision``."""
    command.upgrade(alembic_config(script_location, database_url), revision)


def downgrade(script_location: Path, database_url: str, revision: str) -> None:
    """Migrate the database at ``database_url`` down to ``revision`` (``base``: empty)."""
    command.downgrade(alembic_config(script_location, database_url), revision)


async def schema_differences(database_url: str, target_metadata: MetaData) -> list[Any]:
    """How the schema at ``database_url`` differs from what ``target_metadata`` and the
    platform's tables declare, as ``alembic revision --autogenerate`` would see it (types
    and server defaults included): empty when the migrations build exactly that."""

    def compare(connection: Connection) -> list[Any]:
        migration = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        # Alembic takes a sequence of MetaData here too, as for env.py's target_metadata.
        both: Any = [target_metadata, platform_metadata]
        return list(compare_metadata(migration, both))

    return await _on_connection(database_url, compare)


async def table_names(database_url: str) -> list[str]:
    """The tables of the database at ``database_url``."""
    return await _on_connection(
        database_url, lambda connection: inspect(connection).get_table_names()
    )


async def _on_connection(database_url: str, work: Callable[[Connection], T]) -> T:
    engine = create_async_engine(async_url(database_url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def run_env(target_metadata: MetaData) -> None:
    """The body of a service's ``env.py``: run its migrations, online or offline.

    ``target_metadata`` is the service's own metadata; the platform's tables are compared
    too, so ``alembic revision --autogenerate`` sees every table the database should have.
    """
    metadata = [target_metadata, platform_metadata]
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set: run migrations through migrations.upgrade")
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            literal_binds=True,
            version_table=VERSION_TABLE,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection, target_metadata=metadata, version_table=VERSION_TABLE
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(run())
