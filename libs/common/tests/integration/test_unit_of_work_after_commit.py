"""``SqlAlchemyUnitOfWork.after_commit()`` against a real Postgres: callbacks follow only work
that committed, and run once it is visible to other transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, select

pytestmark = pytest.mark.integration

test_metadata = MetaData()
rows = Table("after_commit_test_rows", test_metadata, Column("name", String, primary_key=True))
parents = Table("after_commit_test_parents", test_metadata, Column("id", Integer, primary_key=True))
# Checked at commit only: a row breaking it fails the commit, not the statement.
children = Table(
    "after_commit_test_children",
    test_metadata,
    Column(
        "parent_id",
        Integer,
        ForeignKey(parents.c.id, deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
)


class Boom(Exception):
    pass


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2)
    async with database.engine.begin() as connection:
        await connection.run_sync(test_metadata.create_all)
    yield database
    await database.dispose()


async def add(uow: SqlAlchemyUnitOfWork, name: str) -> None:
    await uow.session.execute(insert(rows).values(name=name))


async def committed_rows(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set((await connection.execute(select(rows.c.name))).scalars())


async def test_callbacks_run_in_order_once_the_work_is_visible(database: Database) -> None:
    woken = asyncio.Event()
    seen_by_the_woken: list[set[str]] = []

    async def woken_loop() -> None:
        # Like a session driver woken by a handler: it reads what the handler wrote.
        await woken.wait()
        seen_by_the_woken.append(await committed_rows(database))

    loop = asyncio.create_task(woken_loop())
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "queued")
        uow.after_commit(lambda: calls.append("first"))
        uow.after_commit(woken.set)
        uow.after_commit(lambda: calls.append("last"))
        await asyncio.sleep(0.05)  # the loop gets its chance to run: it must still wait
        assert not loop.done()
        assert calls == [], "nothing runs before the commit"
        await uow.commit()
        assert calls == ["first", "last"], "all ran, in order, before commit() returned"
    await asyncio.wait_for(loop, timeout=5)

    assert seen_by_the_woken == [{"queued"}]


async def test_callbacks_are_dropped_by_a_rollback(database: Database) -> None:
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "rolled-back")
        uow.after_commit(lambda: calls.append("rolled-back"))
        await uow.rollback()
        await add(uow, "kept")
        uow.after_commit(lambda: calls.append("kept"))
        await uow.commit()

    assert calls == ["kept"]
    assert await committed_rows(database) == {"kept"}


async def test_callbacks_are_dropped_when_the_unit_ends_without_committing(
    database: Database,
) -> None:
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "never")
        uow.after_commit(lambda: calls.append("never"))
    with pytest.raises(Boom):
        async with SqlAlchemyUnitOfWork(database) as uow:
            uow.after_commit(lambda: calls.append("raised"))
            raise Boom

    assert calls == []
    assert await committed_rows(database) == set()


async def test_callbacks_are_dropped_when_the_commit_fails(database: Database) -> None:
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        await uow.session.execute(insert(children).values(parent_id=404))
        uow.after_commit(lambda: calls.append("orphan"))
        with pytest.raises(Exception, match="foreign key"):
            await uow.commit()

    assert calls == []


async def test_callbacks_of_a_savepoint_that_rolls_back_are_dropped(database: Database) -> None:
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        uow.after_commit(lambda: calls.append("before"))
        with pytest.raises(Boom):
            async with uow.savepoint():
                await add(uow, "failed")
                uow.after_commit(lambda: calls.append("failed"))
                raise Boom
        async with uow.savepoint():
            await add(uow, "released")
            uow.after_commit(lambda: calls.append("released"))
        with pytest.raises(Boom):
            async with uow.savepoint():
                async with uow.savepoint():
                    uow.after_commit(lambda: calls.append("released-inside-failed"))
                raise Boom
        uow.after_commit(lambda: calls.append("after"))
        await uow.commit()

    assert calls == ["before", "released", "after"]
    assert await committed_rows(database) == {"released"}


async def test_a_savepoint_failing_at_release_drops_its_callbacks(database: Database) -> None:
    calls: list[str] = []
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "taken")
        with pytest.raises(Exception, match="duplicate key"):
            async with uow.savepoint():
                uow.after_commit(lambda: calls.append("duplicate"))
                await add(uow, "taken")
        await uow.commit()

    assert calls == []
    assert await committed_rows(database) == {"taken"}


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise Boom("wake-up failed")

    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "committed")
        uow.after_commit(broken)
        uow.after_commit(lambda: calls.append("after the broken one"))
        with caplog.at_level(logging.ERROR, logger="esquadrao_common.db"):
            await uow.commit()

    assert calls == ["after the broken one"]
    assert await committed_rows(database) == {"committed"}
    (logged,) = [r for r in caplog.records if r.name == "esquadrao_common.db"]
    assert "after-commit callback failed" in logged.getMessage()
    assert logged.exc_info is not None and isinstance(logged.exc_info[1], Boom)
