"""The contacts service on real servers: a migrated database per test, the API app in
process, tokens per company, and the outbox to read the events a test caused.

Company ids are unique per test (``api.new_company()``): the API limits' buckets live in
the shared Redis, so tests must not share a company's budget.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from contacts.bootstrap import MIGRATIONS, build_api
from contacts.config import ContactsSettings
from contacts.domain.events import TOPIC
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.api_limits import ApiLimitKind
from esquadrao_common.auth import Role, mint_token
from esquadrao_common.events import payload_name
from esquadrao_common.migrations import upgrade
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.resilience.ratelimit import Limit
from esquadrao_common.service import Platform
from sqlalchemy import select

SECRET = "contacts-integration-test-secret-0123456789"


@pytest.fixture
async def migrated_database(database_url: str) -> str:
    """A fresh database with the contacts migrations applied."""
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url)
    return database_url


def contacts_settings(database_url: str, kafka_bootstrap: str, redis_url: str) -> ContactsSettings:
    return ContactsSettings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        jwt_secret=SECRET,
    )


@dataclass
class ContactsApi:
    """The app under test, its client and helpers."""

    platform: Platform
    client: httpx.AsyncClient
    companies: list[str] = field(default_factory=list)

    def new_company(self) -> str:
        company = f"co-{uuid.uuid4().hex[:10]}"
        self.companies.append(company)
        return company

    def headers(self, company: str, role: Role = Role.AGENT) -> dict[str, str]:
        token = mint_token(
            company_id=company, user="tester", role=role, secret=SECRET, ttl_seconds=600
        )
        return {"Authorization": f"Bearer {token}"}

    async def unlimited(self, company: str) -> None:
        """Lift the company's API limits, for tests that make many requests."""
        store = self.platform.api_limits().store
        for kind in (ApiLimitKind.CONTACT, ApiLimitKind.GLOBAL):
            await store.set(company, kind, Limit(rate=100_000, burst=100_000))

    def uow(self) -> ContactsUnitOfWork:
        return ContactsUnitOfWork(self.platform.database)

    async def events(self, company: str, *payloads: str) -> list[ContactEvent]:
        """The company's events in the outbox, in the order written; only the payload
        types named (``contact_created``...) when any are."""
        statement = (
            select(outbox_table.c.topic, outbox_table.c.key, outbox_table.c.value)
            .where(outbox_table.c.company_id == company)
            .order_by(outbox_table.c.id)
        )
        async with self.platform.database.sessionmaker() as session:
            rows = (await session.execute(statement)).all()
        found = []
        for row in rows:
            assert row.topic == TOPIC
            event = ContactEvent.FromString(row.value)
            if not payloads or payload_name(event) in payloads:
                found.append(event)
        return found

    async def create(self, company: str, **body: Any) -> dict[str, Any]:
        """POST /contacts, asserting a 201; the contact."""
        response = await self.client.post("/contacts", json=body, headers=self.headers(company))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture
async def contacts_api(
    migrated_database: str, kafka_bootstrap: str, redis_url: str
) -> AsyncIterator[ContactsApi]:
    """The contacts API app (lifespan running) on a migrated database."""
    platform = Platform(contacts_settings(migrated_database, kafka_bootstrap, redis_url))
    app = build_api(platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://contacts") as client:
            yield ContactsApi(platform, client)
