"""The migrations build exactly the schema the tables declare, and go down cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from esquadrao_common.db import async_url
from esquadrao_common.migrations import downgrade, upgrade
from esquadrao_common.platform_tables import platform_metadata
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from whatsapp.adapters.orm import metadata
from whatsapp.bootstrap import MIGRATIONS

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


async def test_the_migrated_schema_matches_the_tables(whatsapp_database: str) -> None:
    assert await _run(whatsapp_database, _differences) == []


async def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(
    whatsapp_database: str,
) -> None:
    await asyncio.to_thread(downgrade, MIGRATIONS, whatsapp_database, "base")

    tables = await _run(whatsapp_database, lambda c: inspect(c).get_table_names())
    assert tables == ["alembic_version"]

    await asyncio.to_thread(upgrade, MIGRATIONS, whatsapp_database)
    assert await _run(whatsapp_database, _differences) == []
