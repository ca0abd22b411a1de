"""The migrations build exactly the schema the tables declare, and go down cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from contacts.adapters import import_tables
from contacts.adapters.orm import metadata
from contacts.bootstrap import MIGRATIONS
from esquadrao_common.db import async_url
from esquadrao_common.migrations import downgrade, upgrade
from esquadrao_common.platform_tables import platform_metadata
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration


async def _run(url: str, work: Any) -> Any:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, [metadata, platform_metadata]))


async def test_the_migrated_schema_matches_the_tables(migrated_database: str) -> None:
    assert import_tables.import_jobs.metadata is metadata

    assert await _run(migrated_database, _differences) == []


async def test_downgrade_to_base_removes_everything(migrated_database: str) -> None:
    await asyncio.to_thread(downgrade, MIGRATIONS, migrated_database, "base")

    tables = await _run(migrated_database, lambda c: inspect(c).get_table_names())

    assert tables == ["alembic_version"]
    await asyncio.to_thread(upgrade, MIGRATIONS, migrated_database)
