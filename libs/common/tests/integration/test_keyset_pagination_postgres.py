"""Keyset pagination against a real Postgres: order, ties, tenant scoping, both directions,
and stability while other transactions insert rows between (and during) page reads."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from esquadrao_common.db import async_url
from esquadrao_common.pagination import KeysetPage, keyset_page
from sqlalchemy import DateTime, Index, Select, String, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("messages_page", "company_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    company_id: Mapped[str] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[str] = mapped_column(String, default="")


Key = tuple[dt.datetime, uuid.UUID]
ORDER = (Message.created_at, Message.id)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(database_url))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


async def add_messages(engine: AsyncEngine, company: str, times: list[dt.datetime]) -> list[Key]:
    """Insert one message per timestamp in one transaction; their keys."""
    keys = [(at, uuid.uuid4()) for at in times]
    if keys:
        rows = [{"id": id, "company_id": company, "created_at": at} for at, id in keys]
        async with engine.begin() as connection:
            await connection.execute(insert(Message), rows)
    return keys


def acme_messages() -> Select[Any]:
    return select(Message).where(Message.company_id == "acme")


async def walk(
    engine: AsyncEngine,
    statement: Select[Any],
    limit: int,
    *,
    descending: bool = False,
    between_pages: Callable[[], Awaitable[None]] | None = None,
) -> list[KeysetPage]:
    """Every page of ``statement``, each read in its own session (as separate requests)."""
    sessions = async_sessionmaker(engine)
    pages: list[KeysetPage] = []
    cursor: str | None = None
    while True:
        if pages and between_pages is not None:
            await between_pages()
        async with sessions() as session:
            page = await keyset_page(
                session,
                statement,
                order_by=ORDER,
                cursor=cursor,
                limit=limit,
                descending=descending,
            )
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages


def keys_of(pages: list[KeysetPage]) -> list[Key]:
    return [(message.created_at, message.id) for page in pages for message in page.items]


async def test_pages_cover_the_companys_rows_once_in_key_order_across_ties(
    engine: AsyncEngine,
) -> None:
    # 5 distinct timestamps for 23 rows: pages must split ties by id.
    times = [T0 + dt.timedelta(seconds=i % 5) for i in range(23)]
    expected = sorted(await add_messages(engine, "acme", times))
    await add_messages(engine, "globex", times[:7])

    pages = await walk(engine, acme_messages(), limit=4)

    assert [len(page.items) for page in pages] == [4, 4, 4, 4, 4, 3]
    assert [page.next_cursor is None for page in pages] == [False] * 5 + [True]
    assert all(isinstance(m, Message) for page in pages for m in page.items)
    assert keys_of(pages) == expected


async def test_an_exact_multiple_of_the_limit_ends_without_an_empty_page(
    engine: AsyncEngine,
) -> None:
    await add_messages(engine, "acme", [T0 + dt.timedelta(seconds=i) for i in range(8)])

    pages = await walk(engine, acme_messages(), limit=4)

    assert [len(page.items) for page in pages] == [4, 4]
    assert pages[-1].next_cursor is None


async def test_descending_pages_walk_newest_first(engine: AsyncEngine) -> None:
    times = [T0 + dt.timedelta(minutes=i % 4) for i in range(10)]
    expected = sorted(await add_messages(engine, "acme", times), reverse=True)

    pages = await walk(engine, acme_messages(), limit=3, descending=True)

    assert keys_of(pages) == expected


async def test_selected_columns_come_back_as_tuples_without_the_key(engine: AsyncEngine) -> None:
    keys = sorted(await add_messages(engine, "acme", [T0, T0, T0 + dt.timedelta(seconds=1)]))
    statement = select(Message.id, Message.body).where(Message.company_id == "acme")

    pages = await walk(engine, statement, limit=2)

    assert [item for page in pages for item in page.items] == [(key[1], "") for key in keys]


async def test_no_row_is_served_twice_while_rows_are_inserted_concurrently(
    engine: AsyncEngine,
) -> None:
    """Another task keeps committing batches of rows (one before every row, one anywhere,
    one after every row) while the pages are read, at least one batch before each page
    until it has inserted them all."""
    rng = random.Random(20260301)
    span, batches = 300, 40
    before_walk = await add_messages(
        engine, "acme", [T0 + dt.timedelta(seconds=rng.randrange(span)) for _ in range(150)]
    )
    batch_committed = asyncio.Event()
    inserted: list[Key] = []

    async def keep_inserting() -> None:
        try:
            for n in range(1, batches + 1):
                times = [
                    T0 - dt.timedelta(seconds=n),
                    T0 + dt.timedelta(seconds=rng.randrange(span)),
                    T0 + dt.timedelta(seconds=span + n),
                ]
                inserted.extend(await add_messages(engine, "acme", times))
                batch_committed.set()
                await asyncio.sleep(0)
        finally:
            batch_committed.set()

    inserter = asyncio.create_task(keep_inserting())

    async def wait_for_a_batch() -> None:
        if not inserter.done():
            batch_committed.clear()
            await batch_committed.wait()

    try:
        pages = await walk(engine, acme_messages(), limit=10, between_pages=wait_for_a_batch)
    finally:
        await inserter

    seen = keys_of(pages)
    assert len(seen) == len(set(seen)), "a row was served twice"
    assert seen == sorted(seen), "pages went backwards"
    assert set(before_walk) <= set(seen), "a row that existed before the walk was skipped"
    assert not set(seen) & {key for key in inserted if key[0] < T0}, "served behind the cursor"
    assert len(pages) >= 15
    assert len(inserted) == 3 * batches


async def test_the_same_inserts_make_offset_paging_serve_rows_twice(engine: AsyncEngine) -> None:
    """The contrast that motivates keyset pagination: OFFSET with one row inserted before
    the read position between pages serves the previous page's last row again."""
    await add_messages(engine, "acme", [T0 + dt.timedelta(seconds=i) for i in range(30)])
    sessions = async_sessionmaker(engine)
    seen: list[uuid.UUID] = []
    for page in range(3):
        await add_messages(engine, "acme", [T0 - dt.timedelta(seconds=page + 1)])
        async with sessions() as session:
            statement = acme_messages().order_by(*ORDER).offset(10 * page).limit(10)
            seen.extend(message.id for message in (await session.scalars(statement)).all())

    assert len(seen) > len(set(seen))
