"""The migrations build exactly the schema the tables declare, and go down cleanly."""

from __future__ import annotations

import asyncio

import pytest
from esquadrao_common.migrations import downgrade, schema_differences, table_names, upgrade
from whatsapp.adapters.orm import metadata
from whatsapp.bootstrap import MIGRATIONS

pytestmark = pytest.mark.integration


async def test_the_migrated_schema_matches_the_tables(whatsapp_database: str) -> None:
    assert await schema_differences(whatsapp_database, metadata) == []


async def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(
    whatsapp_database: str,
) -> None:
    await asyncio.to_thread(downgrade, MIGRATIONS, whatsapp_database, "base")

    assert await table_names(whatsapp_database) == ["alembic_version"]

    await asyncio.to_thread(upgrade, MIGRATIONS, whatsapp_database)
    assert await schema_differences(whatsapp_database, metadata) == []
