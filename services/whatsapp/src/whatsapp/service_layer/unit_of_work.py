"""The whatsapp unit of work: one transaction, the service's repositories on it.

Handlers receive a unit of work and never commit it themselves: the endpoint, consumer
runtime or session driver that opened it does, so state changes and their events (outbox
rows) always commit together, or not at all.
"""

from __future__ import annotations

from typing import Self

from esquadrao_common.db import SqlAlchemyUnitOfWork

from whatsapp.adapters.repositories import InboundRepository, LedgerRepository, SessionRepository


class WhatsappUnitOfWork(SqlAlchemyUnitOfWork):
    """A transaction of the whatsapp database with its repositories (set on entry)."""

    sessions: SessionRepository
    ledger: LedgerRepository
    inbound: InboundRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.sessions = SessionRepository(self.session)
        self.ledger = LedgerRepository(self.session)
        self.inbound = InboundRepository(self.session)
        return self
