"""Async SQLAlchemy engine, sessions and the unit-of-work base every service extends.

A unit of work is one database transaction. Everything a handler changes, including the
events it emits (outbox rows) and the events it has consumed (inbox rows), is written in
that one transaction, which is what makes "nothing published without its state change"
and "effectively once" hold.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from esquadrao_common.outbox import Outbox, StagedEvent
from esquadrao_common.platform_tables import platform_metadata

__all__ = [
    "Database",
    "SqlAlchemyUnitOfWork",
    "async_url",
    "plain_url",
    "platform_metadata",
    "run_callbacks",
]

log = logging.getLogger(__name__)


def async_url(url: str) -> str:
    """Return ``url`` with the asyncpg driver (accepts plain ``postgresql://`` URLs)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """Return ``url`` without a SQLAlchemy driver suffix, as asyncpg/libpq expect it."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """One service's connection pool and session factory."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = async_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, echo=echo
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    async def dispose(self) -> None:
        await self.engine.dispose()


class SqlAlchemyUnitOfWork:
    """One transaction: ``async with uow: ...; uow.stage(...); await uow.commit()``.

    Events staged with :meth:`stage` are written to the outbox by :meth:`commit`, in the
    same transaction as the state changes. Leaving the block without ``commit()`` rolls
    back, so a handler that raises never leaves half its effects (or events) behind.

    Within the transaction, :meth:`savepoint` makes a part of the work undoable on its own:
    the consumer runtime runs each record of a batch in one, so that a failing record
    leaves nothing behind while the records around it commit together.

    :meth:`after_commit` runs code once the work is visible to other transactions, such as
    waking an in-process loop that reads what this unit wrote, instead of it polling.
    """

    session: AsyncSession

    def __init__(self, database: Database) -> None:
        self.database = database
        self.outbox = Outbox()
        self._staged: list[StagedEvent] = []
        self._after_commit: list[Callable[[], None]] = []

    def stage(self, topic: str, key: str | bytes | None, event: Message) -> None:
        """Publish ``event`` (a topic wrapper message) on ``topic`` if this unit commits."""
        self._staged.append(StagedEvent(topic, key, event))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` right after this unit's work commits, if it does.

        Callbacks run in the order registered, synchronously, before :meth:`commit` returns;
        one that raises is logged and the others still run, as the commit stands. They are
        dropped, never called, when the transaction rolls back, its commit fails or the
        unit ends without committing, and so are those registered inside a
        :meth:`savepoint` block that rolls back: a callback only ever follows work that
        committed. They must be quick and must not touch this unit (which may be closing):
        to start async work, schedule it (``loop.call_soon``, ``Event.set``).
        """
        self._after_commit.append(callback)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """``async with uow.savepoint(): ...``: the block's work stands or falls alone.

        Begins a nested transaction (``SAVEPOINT``) in this unit's transaction. When the
        block ends normally, the events staged inside it are written to the outbox and the
        savepoint is released: they commit or roll back with the enclosing transaction,
        like the block's other changes. When the block raises (or writing its events, or
        flushing its ORM changes, fails), the savepoint is rolled back, the events staged
        inside it are discarded and the exception propagates, while the work done before
        the block, and the events staged before it, stay as they were. Savepoints nest.

        The :meth:`after_commit` callbacks registered inside the block are kept, to run at
        commit, only once the savepoint is released; otherwise they are dropped with it.
        """
        # SQLAlchemy's own block also recovers from a flush failing at release, which leaves
        # the nested transaction inactive but still to be closed before the enclosing one
        # can go on.
        async with self.session.begin_nested():
            enclosing_staged, self._staged = self._staged, []
            enclosing_callbacks, self._after_commit = self._after_commit, []
            try:
                yield
                if self._staged:
                    await self.outbox.add_all(self.session, self._staged)
            finally:
                self._staged = enclosing_staged
                callbacks, self._after_commit = self._after_commit, enclosing_callbacks
        # Reached only once the savepoint was released.
        self._after_commit.extend(callbacks)

    async def __aenter__(self) -> Self:
        self.session = self.database.sessionmaker()
        self._staged = []
        self._after_commit = []
        await self.session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._after_commit = []
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            await self.session.close()

    async def commit(self) -> None:
        """Write the staged events to the outbox, commit everything at once, then run the
        :meth:`after_commit` callbacks; a commit that fails drops them."""
        callbacks, self._after_commit = self._after_commit, []
        if self._staged:
            staged, self._staged = self._staged, []
            await self.outbox.add_all(self.session, staged)
        await self.session.commit()
        run_callbacks(callbacks)

    async def rollback(self) -> None:
        self._staged = []
        self._after_commit = []
        await self.session.rollback()


def run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    """Call each of ``callbacks`` in order, logging (not raising) what one raises.

    The work they follow is committed: one failing must neither undo that as far as the
    caller can tell nor keep the others from running.
    """
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("an after-commit callback failed: %r", callback)
