"""The whatsapp service on real servers: a migrated database per test, units of work on
it, the API app in process with tokens per company, and the outbox to read what a test
caused.

Fixtures others can reuse:

* ``whatsapp_database`` — the URL of a fresh database with the whatsapp migrations;
* ``uow_factory`` — makes units of work on it (``async with uow_factory() as uow``);
* ``make_session`` — inserts a session straight into the table (any state, pool,
  breaker), for tests that need one without going through the API;
* ``outbox`` — the records staged so far, decoded (``await outbox(topic=...)``);
* ``whatsapp_api`` — the API app (lifespan running) with helpers; ``api_client`` is its
  HTTP client, ``auth_headers(company, role)`` a bearer token's headers.

Company ids are unique per test (``whatsapp_api.new_company()``): the API limits' buckets
live in the shared Redis, so tests must not share a company's budget.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import pytest
from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.api_limits import ApiLimitKind
from esquadrao_common.auth import Role, mint_token
from esquadrao_common.db import Database
from esquadrao_common.migrations import upgrade
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.resilience.ratelimit import Limit
from esquadrao_common.service import Platform
from google.protobuf.message import Message
from sqlalchemy import select
from whatsapp.adapters.credentials import CredentialCipher
from whatsapp.bootstrap import MIGRATIONS, build_api
from whatsapp.config import WhatsappSettings
from whatsapp.domain.events import EVENTS_TOPIC
from whatsapp.domain.sessions import ProviderKind, Session, SessionState
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

SECRET = "whatsapp-integration-test-secret-0123456789"

UowFactory = Callable[[], WhatsappUnitOfWork]


@pytest.fixture
async def whatsapp_database(database_url: str) -> str:
    """A fresh database with the whatsapp migrations applied."""
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url)
    return database_url


def whatsapp_settings(
    database_url: str, kafka_bootstrap: str, redis_url: str, **overrides: Any
) -> WhatsappSettings:
    return WhatsappSettings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        jwt_secret=SECRET,
        **overrides,
    )


@pytest.fixture
async def uow_factory(whatsapp_database: str) -> AsyncIterator[UowFactory]:
    """Units of work on the migrated database (a pool of its own, disposed at the end)."""
    database = Database(whatsapp_database)
    try:
        yield lambda: WhatsappUnitOfWork(database)
    finally:
        await database.dispose()


def auth_headers(company: str, role: Role = Role.ADMIN, user: str = "tester") -> dict[str, str]:
    """``Authorization`` for ``user`` of ``company`` as ``role``, signed with the tests'
    secret."""
    token = mint_token(company_id=company, user=user, role=role, secret=SECRET, ttl_seconds=600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(name="auth_headers")
def auth_headers_fixture() -> Callable[..., dict[str, str]]:
    return auth_headers


class MakeSession(Protocol):
    async def __call__(
        self,
        company_id: str,
        *,
        provider: ProviderKind = ProviderKind.SIM,
        state: SessionState = SessionState.STOPPED,
        desired_running: bool = False,
        credentials: bytes | None = None,
        **fields: Any,
    ) -> Session: ...


@pytest.fixture
def make_session(uow_factory: UowFactory) -> MakeSession:
    """Insert a session as the worker would have left it; ``fields`` are any other
    :class:`Session` attributes (``pool_id``, ``breaker_state``, ``provider_number_id``...)."""

    async def make(
        company_id: str,
        *,
        provider: ProviderKind = ProviderKind.SIM,
        state: SessionState = SessionState.STOPPED,
        desired_running: bool = False,
        credentials: bytes | None = None,
        **fields: Any,
    ) -> Session:
        now = datetime.now(UTC)
        session = Session(
            id=str(uuid.uuid4()),
            company_id=company_id,
            name=fields.pop("name", "test number"),
            provider=provider,
            state=state,
            desired_running=desired_running,
            created_at=now,
            updated_at=now,
            **fields,
        )
        async with uow_factory() as uow:
            await uow.sessions.add(session, credentials)
            await uow.commit()
        return session

    return make


@dataclass(frozen=True)
class Staged:
    """One outbox row: its topic, key and decoded wrapper (``WhatsappCommand`` on the
    command topics, ``WhatsappEvent`` on ``whatsapp.events.v1``)."""

    topic: str
    key: str
    record: Any

    @property
    def payload(self) -> str:
        name: str = self.record.WhichOneof("payload")
        return name


ReadOutbox = Callable[..., Awaitable[list[Staged]]]


def _decode(topic: str, value: bytes) -> Message:
    if topic == EVENTS_TOPIC:
        return whatsapp_pb2.WhatsappEvent.FromString(value)
    return commands_pb2.WhatsappCommand.FromString(value)


async def read_outbox(
    database: Database, *, topic: str | None = None, company: str | None = None
) -> list[Staged]:
    """The outbox rows (of ``topic``, of ``company``, when given) in the order written."""
    statement = select(outbox_table.c.topic, outbox_table.c.key, outbox_table.c.value).order_by(
        outbox_table.c.id
    )
    if topic is not None:
        statement = statement.where(outbox_table.c.topic == topic)
    if company is not None:
        statement = statement.where(outbox_table.c.company_id == company)
    async with database.sessionmaker() as session:
        rows = (await session.execute(statement)).all()
    return [
        Staged(row.topic, row.key.decode() if row.key else "", _decode(row.topic, row.value))
        for row in rows
    ]


@pytest.fixture
async def outbox(whatsapp_database: str) -> AsyncIterator[ReadOutbox]:
    """``await outbox(topic=..., company=...)``: the records staged so far."""
    database = Database(whatsapp_database)
    try:

        async def read(*, topic: str | None = None, company: str | None = None) -> list[Staged]:
            return await read_outbox(database, topic=topic, company=company)

        yield read
    finally:
        await database.dispose()


@dataclass
class WhatsappApi:
    """The app under test, its client and helpers."""

    platform: Platform
    client: httpx.AsyncClient
    cipher: CredentialCipher
    companies: list[str] = field(default_factory=list)

    def new_company(self) -> str:
        company = f"co-{uuid.uuid4().hex[:10]}"
        self.companies.append(company)
        return company

    def headers(self, company: str, role: Role = Role.ADMIN) -> dict[str, str]:
        return auth_headers(company, role)

    async def unlimited(self, company: str) -> None:
        """Lift the company's API limits, for tests that make many requests."""
        store = self.platform.api_limits().store
        for kind in (ApiLimitKind.WHATSAPP, ApiLimitKind.GLOBAL):
            await store.set(company, kind, Limit(rate=100_000, burst=100_000))

    def uow(self) -> WhatsappUnitOfWork:
        return WhatsappUnitOfWork(self.platform.database)

    async def outbox(self, *, topic: str | None = None, company: str | None = None) -> list[Staged]:
        return await read_outbox(self.platform.database, topic=topic, company=company)

    async def create_session(self, company: str, **body: Any) -> dict[str, Any]:
        """POST /v1/sessions (a sim session named "test" unless ``body`` says otherwise),
        asserting a 201; the session."""
        body = {"name": "test", "provider": "sim", **body}
        response = await self.client.post("/v1/sessions", json=body, headers=self.headers(company))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture
async def whatsapp_api(
    whatsapp_database: str, kafka_bootstrap: str, redis_url: str
) -> AsyncIterator[WhatsappApi]:
    """The whatsapp API app (lifespan running) on a migrated database."""
    settings = whatsapp_settings(whatsapp_database, kafka_bootstrap, redis_url)
    platform = Platform(settings)
    app = build_api(platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://whatsapp") as client:
            yield WhatsappApi(platform, client, CredentialCipher.from_settings(settings))


@pytest.fixture
def api_client(whatsapp_api: WhatsappApi) -> httpx.AsyncClient:
    return whatsapp_api.client
