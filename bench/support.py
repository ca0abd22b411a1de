"""What every benchmark needs: a throwaway database on the stack's Postgres server."""

from __future__ import annotations

import uuid

import asyncpg
from esquadrao_devstack.stack import libpq_url


async def fresh_database(server_url: str, prefix: str) -> str:
    """Create an empty database ``<prefix>_<random>`` and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return libpq_url(server_url, database=name)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database at ``url`` (made by :func:`fresh_database`), sessions and all."""
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await connection.close()
