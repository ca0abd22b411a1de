"""The migrations build exactly the schema the tables declare, and go down cleanly."""

from __future__ import annotations

import asyncio

import pytest
from contacts.adapters import import_tables
from contacts.adapters.orm import metadata
from contacts.bootstrap import MIGRATIONS
from esquadrao_common.migrations import downgrade, schema_differences, table_names, upgrade

pytestmark = pytest.mark.integration


async def test_the_migrated_schema_matches_the_tables(migrated_database: str) -> None:
    assert import_tables.import_jobs.metadata is metadata

    assert await schema_differences(migrated_database, metadata) == []


async def test_downgrade_to_base_removes_everything(migrated_database: str) -> None:
    await asyncio.to_thread(downgrade, MIGRATIONS, migrated_database, "base")

    tables = await table_names(migrated_database)

    assert tables == ["alembic_version"]
    await asyncio.to_thread(upgrade, MIGRATIONS, migrated_database)
