"""In-memory fakes of the contacts unit of work, for handler tests without Postgres.

The fakes keep what the real repositories keep (contacts by id, unique by company and
phone; keywords; field definitions) and hand out copies, as a database would, so a handler
that forgets to save loses its change here too. ``savepoint()`` undoes the block's writes
and staged events when it raises, like the real one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from contacts.domain.model import Contact, CustomFieldDefinition
from contacts.domain.optout import ConsentKeywords
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao.whatsapp.v1.whatsapp_pb2 import WhatsappEvent
from esquadrao_common.testing import FakeUnitOfWork
from google.protobuf import json_format

RECORDED = Path(__file__).parents[1] / "recorded" / "whatsapp_message_received.json"


class FakeContactRepository:
    def __init__(self) -> None:
        self.rows: dict[str, Contact] = {}
        #: Called by ``insert_new`` before it inserts: a concurrent transaction's work.
        self.before_insert: Callable[[], None] | None = None

    def add(self, contact: Contact) -> Contact:
        self.rows[contact.id] = copy.deepcopy(contact)
        return contact

    def _by_phone(self, company_id: str, phone: str) -> Contact | None:
        return next(
            (c for c in self.rows.values() if c.company_id == company_id and c.phone_e164 == phone),
            None,
        )

    async def get(self, company_id: str, contact_id: str, *, lock: bool = False) -> Contact | None:
        contact = self.rows.get(contact_id)
        if contact is None or contact.company_id != company_id:
            return None
        return copy.deepcopy(contact)

    async def get_by_phone(
        self, company_id: str, phone_e164: str, *, lock: bool = False
    ) -> Contact | None:
        return copy.deepcopy(self._by_phone(company_id, phone_e164))

    async def lock_by_phones(self, company_id: str, phones: Iterable[str]) -> dict[str, Contact]:
        found = {}
        for phone in set(phones):
            contact = self._by_phone(company_id, phone)
            if contact is not None:
                found[phone] = copy.deepcopy(contact)
        return found

    async def insert_new(self, new: Sequence[Contact]) -> set[str]:
        if self.before_insert is not None:
            self.before_insert()
            self.before_insert = None
        inserted = set()
        for contact in new:
            if self._by_phone(contact.company_id, contact.phone_e164) is None:
                self.add(contact)
                inserted.add(contact.id)
        return inserted

    async def save(self, changed: Sequence[Contact]) -> None:
        for contact in changed:
            assert contact.id in self.rows, "save() of a contact never inserted"
            self.rows[contact.id] = copy.deepcopy(contact)


class FakeKeywordRepository:
    def __init__(self) -> None:
        self.rows: dict[str, ConsentKeywords] = {}

    async def get(self, company_id: str) -> ConsentKeywords | None:
        return self.rows.get(company_id)


class FakeFieldRepository:
    def __init__(self) -> None:
        self.rows: dict[str, list[CustomFieldDefinition]] = {}

    async def all(self, company_id: str) -> list[CustomFieldDefinition]:
        return list(self.rows.get(company_id, []))


class FakeContactsUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.contacts = FakeContactRepository()
        self.keywords = FakeKeywordRepository()
        self.fields = FakeFieldRepository()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        rows = copy.deepcopy(self.contacts.rows)
        staged = len(self._pending)
        try:
            yield
        except BaseException:
            self.contacts.rows = rows
            del self._pending[staged:]
            raise

    def staged(self) -> list[ContactEvent]:
        """The events staged so far (committed or not), in order."""
        return [event for _topic, _key, event in (*self.events, *self._pending)]


@pytest.fixture
def uow() -> FakeContactsUnitOfWork:
    return FakeContactsUnitOfWork()


def recorded_events() -> list[WhatsappEvent]:
    """Inbound ``WhatsappEvent`` records as the whatsapp service published them."""
    data: list[dict[str, Any]] = json.loads(RECORDED.read_text())
    return [json_format.ParseDict(item, WhatsappEvent()) for item in data]


@pytest.fixture
def recorded() -> list[WhatsappEvent]:
    return recorded_events()
