"""``SqlAlchemyUnitOfWork.savepoint()`` against a real Postgres: part of a transaction that
stands or falls alone, with the events staged inside it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork, platform_metadata
from esquadrao_common.events import new_envelope
from esquadrao_common.platform_tables import outbox_table
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

pytestmark = pytest.mark.integration

TOPIC = "contacts.events.v1"

test_metadata = MetaData()
rows = Table(
    "savepoint_test_rows",
    test_metadata,
    Column("name", String, primary_key=True),
)


class Base(DeclarativeBase):
    metadata = test_metadata


class Thing(Base):
    """An ORM-mapped row: its changes are flushed by the session, not executed directly."""

    __tablename__ = "savepoint_test_things"
    name: Mapped[str] = mapped_column(String, primary_key=True)


class Boom(Exception):
    pass


def event() -> ContactEvent:
    wrapper = ContactEvent(contact_created=ContactCreated(contact=Contact(id=str(uuid.uuid4()))))
    wrapper.envelope.CopyFrom(
        new_envelope("esquadrao.contacts.v1.ContactCreated", "acme", "contacts")
    )
    return wrapper


def event_id(wrapper: ContactEvent) -> str:
    return wrapper.envelope.event_id


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2)
    async with database.engine.begin() as connection:
        await connection.run_sync(platform_metadata.create_all)
        await connection.run_sync(test_metadata.create_all)
    yield database
    await database.dispose()


async def add(uow: SqlAlchemyUnitOfWork, name: str) -> None:
    await uow.session.execute(insert(rows).values(name=name))


async def committed_rows(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set((await connection.execute(select(rows.c.name))).scalars())


async def committed_events(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        result = await connection.execute(select(outbox_table.c.event_id))
        return {str(value) for value in result.scalars()}


async def test_a_released_savepoint_writes_its_events_and_commits_with_the_transaction(
    database: Database,
) -> None:
    before, inside = event(), event()
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "before")
        uow.stage(TOPIC, "k", before)
        async with uow.savepoint():
            await add(uow, "inside")
            uow.stage(TOPIC, "k", inside)
        written = await uow.session.execute(select(outbox_table.c.event_id))
        assert {str(value) for value in written.scalars()} == {event_id(inside)}, (
            "the savepoint's events are written when it is released; the others at commit"
        )
        await uow.commit()

    assert await committed_rows(database) == {"before", "inside"}
    assert await committed_events(database) == {event_id(before), event_id(inside)}


async def test_a_savepoint_that_raises_leaves_nothing_and_keeps_what_came_before(
    database: Database,
) -> None:
    before, failed, after = event(), event(), event()
    raised = Boom("handler failed")
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "before")
        uow.stage(TOPIC, "k", before)
        with pytest.raises(Boom) as caught:
            async with uow.savepoint():
                await add(uow, "failed")
                uow.stage(TOPIC, "k", failed)
                raise raised
        assert caught.value is raised
        await add(uow, "after")
        uow.stage(TOPIC, "k", after)
        await uow.commit()

    assert await committed_rows(database) == {"before", "after"}
    assert await committed_events(database) == {event_id(before), event_id(after)}


async def test_a_failed_statement_in_a_savepoint_does_not_abort_the_transaction(
    database: Database,
) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        await add(uow, "taken")
        with pytest.raises(IntegrityError):
            async with uow.savepoint():
                await add(uow, "duplicate-to-be")
                await add(uow, "taken")
        await add(uow, "after")
        await uow.commit()

    assert await committed_rows(database) == {"taken", "after"}


async def test_a_flush_failing_at_release_rolls_back_and_the_transaction_goes_on(
    database: Database,
) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        uow.session.add(Thing(name="taken"))
        await uow.session.flush()
        with pytest.raises(IntegrityError):
            async with uow.savepoint():
                uow.session.add(Thing(name="taken"))
        uow.session.add(Thing(name="after"))
        await uow.commit()

    async with database.sessionmaker() as session:
        names = set((await session.execute(select(Thing.name))).scalars())
    assert names == {"taken", "after"}


async def test_savepoints_nest(database: Database) -> None:
    kept, inner_failed, released_inner, outer_failed = event(), event(), event(), event()
    async with SqlAlchemyUnitOfWork(database) as uow:
        async with uow.savepoint():
            await add(uow, "kept")
            uow.stage(TOPIC, "k", kept)
            with pytest.raises(Boom):
                async with uow.savepoint():
                    await add(uow, "inner-failed")
                    uow.stage(TOPIC, "k", inner_failed)
                    raise Boom
        with pytest.raises(Boom):
            async with uow.savepoint():
                async with uow.savepoint():
                    await add(uow, "released-inner")
                    uow.stage(TOPIC, "k", released_inner)
                await add(uow, "outer-failed")
                uow.stage(TOPIC, "k", outer_failed)
                raise Boom
        await uow.commit()

    assert await committed_rows(database) == {"kept"}
    assert await committed_events(database) == {event_id(kept)}


async def test_a_savepoint_whose_events_cannot_be_written_is_rolled_back(
    database: Database,
) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        with pytest.raises(ValueError, match="not a topic wrapper"):
            async with uow.savepoint():
                await add(uow, "inside")
                uow.stage(TOPIC, "k", Contact(id="not a wrapper"))
        await add(uow, "after")
        await uow.commit()

    assert await committed_rows(database) == {"after"}
    assert await committed_events(database) == set()


async def test_events_staged_in_a_savepoint_are_lost_with_the_transaction(
    database: Database,
) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow, uow.savepoint():
        await add(uow, "inside")
        uow.stage(TOPIC, "k", event())

    assert await committed_rows(database) == set()
    assert await committed_events(database) == set()
