"""The contacts unit of work: one transaction, the service's repositories on it.

::

    async with ContactsUnitOfWork(database) as uow:
        contact = await uow.contacts.get(company_id, contact_id, lock=True)
        ...
        uow.stage(TOPIC, event_key(event), event)
        await uow.commit()

Handlers receive a unit of work and never commit it themselves: the API endpoint or the
consumer runtime that opened it does, so a handler's state changes and events (outbox
rows) always commit together, or not at all.
"""

from __future__ import annotations

from typing import Self

from esquadrao_common.db import SqlAlchemyUnitOfWork

from contacts.adapters.repositories import (
    ConsentKeywordRepository,
    ContactListRepository,
    ContactRepository,
    FieldDefinitionRepository,
)


class ContactsUnitOfWork(SqlAlchemyUnitOfWork):
    """A transaction of the contacts database with its repositories (set on entry)."""

    contacts: ContactRepository
    lists: ContactListRepository
    fields: FieldDefinitionRepository
    keywords: ConsentKeywordRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.contacts = ContactRepository(self.session)
        self.lists = ContactListRepository(self.session)
        self.fields = FieldDefinitionRepository(self.session)
        self.keywords = ConsentKeywordRepository(self.session)
        return self
