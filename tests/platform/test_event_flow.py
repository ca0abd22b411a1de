"""One change through the whole platform, on real Postgres, Redis and broker.

An HTTP request writes a note and its event in one transaction; the outbox relay publishes
the event; a consumer group applies it once; a redelivery of the same record changes
nothing; and the request's, the publish's and the consumer's spans share one trace.
The "notes" service here is built from the platform's parts exactly as real services are
(``Platform``, ``create_api``, ``SqlAlchemyUnitOfWork``, ``OutboxRelay``,
``ConsumerRuntime``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.auth import Principal, Role, current_principal, mint_token
from esquadrao_common.db import SqlAlchemyUnitOfWork, platform_metadata
from esquadrao_common.events import decode_event, new_envelope
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.service import Platform, create_api
from esquadrao_common.settings import ServiceSettings
from esquadrao_common.testing import span_recorder
from fastapi import APIRouter, Depends
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from sqlalchemy import Column, MetaData, String, Table, func, insert, select

pytestmark = pytest.mark.integration

SECRET = "flow-test-secret-of-at-least-32-bytes"

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("company_id", String(64), nullable=False),
    Column("body", String, nullable=False),
)
# No unique constraint: a handler applied twice would leave two rows.
note_effects = Table(
    "note_effects",
    metadata,
    Column("event_id", String(36), nullable=False),
    Column("note_id", String(36), nullable=False),
)


class NoteIn(BaseModel):
    body: str


class NoteOut(BaseModel):
    id: str
    event_id: str


def notes_router(platform: Platform, topic: str) -> APIRouter:
    router = APIRouter()

    @router.post("/notes", status_code=201)
    async def create_note(
        note: NoteIn, principal: Annotated[Principal, Depends(current_principal)]
    ) -> NoteOut:
        note_id = str(uuid.uuid4())
        event = ContactEvent(
            contact_created=ContactCreated(contact=Contact(id=note_id, name=note.body))
        )
        event.envelope.CopyFrom(
            new_envelope("esquadrao.contacts.v1.ContactCreated", principal.company_id, "notes")
        )
        async with SqlAlchemyUnitOfWork(platform.database) as uow:
            await uow.session.execute(
                insert(notes).values(id=note_id, company_id=principal.company_id, body=note.body)
            )
            uow.stage(topic, note_id, event)
            await uow.commit()
        return NoteOut(id=note_id, event_id=event.envelope.event_id)

    return router


async def apply_note(record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
    event = decode_event(ContactEvent, record.value)
    await uow.session.execute(
        insert(note_effects).values(
            event_id=event.envelope.event_id, note_id=event.contact_created.contact.id
        )
    )


@dataclass
class NotesService:
    platform: Platform
    client: httpx.AsyncClient
    topic: str
    token: str


@pytest.fixture
async def notes_service(
    database_url: str, kafka_bootstrap: str, redis_url: str
) -> AsyncIterator[NotesService]:
    topic = f"notes-{uuid.uuid4().hex[:8]}"
    group = ConsumerGroupSpec(
        name=f"g-{uuid.uuid4().hex[:8]}", topics=(topic,), retry_delays_ms=(200,)
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    names = [topic, *group.retry_topics, group.dlq_topic]
    await admin.create_topics([NewTopic(name, 3, 1) for name in names])
    settings = ServiceSettings(
        service_name="notes",
        http_port=8999,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        jwt_secret=SECRET,
    )
    platform = Platform(settings)
    async with platform.database.engine.begin() as connection:
        await connection.run_sync(platform_metadata.create_all)
        await connection.run_sync(metadata.create_all)
    app = create_api(platform, title="notes", routers=[notes_router(platform, topic)])
    relay = platform.relay()
    consumer = ConsumerRuntime(
        bootstrap=kafka_bootstrap,
        group=group,
        handler=apply_note,
        uow_factory=lambda: SqlAlchemyUnitOfWork(platform.database),
        publisher=platform.publisher,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    token = mint_token(
        company_id="acme", user="u1", role=Role.AGENT, secret=SECRET, ttl_seconds=600
    )
    async with app.router.lifespan_context(app):
        relay_task = asyncio.create_task(relay.run())
        await consumer.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
            try:
                yield NotesService(platform, client, topic, token)
            finally:
                await consumer.stop()
                await relay.stop()
                await relay_task
    await admin.delete_topics(names)
    await admin.close()


async def effects_of(service: NotesService, event_id: str) -> int:
    async with service.platform.database.sessionmaker() as session:
        query = select(func.count()).where(note_effects.c.event_id == event_id)
        return int((await session.execute(query)).scalar_one())


async def wait_for_effect(service: NotesService, event_id: str) -> None:
    async with asyncio.timeout(30):
        while await effects_of(service, event_id) == 0:
            await asyncio.sleep(0.1)


async def published_record(service: NotesService, event_id: str) -> OutgoingRecord:
    """The record on the service's topic whose event id header is ``event_id``."""
    settings = service.platform.settings
    reader = AIOKafkaConsumer(
        service.topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        async with asyncio.timeout(20):
            while True:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    for record in records:
                        if dict(record.headers).get("event_id") == event_id.encode():
                            return OutgoingRecord(
                                record.topic, record.key, record.value, list(record.headers)
                            )
    finally:
        await reader.stop()


async def post_note(service: NotesService, body: str) -> NoteOut:
    response = await service.client.post(
        "/notes", json={"body": body}, headers={"Authorization": f"Bearer {service.token}"}
    )
    assert response.status_code == 201, response.text
    return NoteOut.model_validate(response.json())


async def test_request_relay_consumer_once_and_one_trace(notes_service: NotesService) -> None:
    spans = span_recorder()
    spans.clear()

    first = await post_note(notes_service, "hello")
    await wait_for_effect(notes_service, first.event_id)

    # Redeliver the very record the relay published (same value, key and headers), then a
    # new note: once the new one is applied, the duplicate before it was consumed too.
    original = await published_record(notes_service, first.event_id)
    await notes_service.platform.publisher.publish([original])
    second = await post_note(notes_service, "world")
    await wait_for_effect(notes_service, second.event_id)
    await asyncio.sleep(0.5)  # a duplicate applied late would show up here

    assert await effects_of(notes_service, first.event_id) == 1
    assert await effects_of(notes_service, second.event_id) == 1
    async with notes_service.platform.database.sessionmaker() as session:
        count = (await session.execute(select(func.count()).select_from(notes))).scalar_one()
    assert count == 2

    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind == SpanKind.SERVER and "/notes" in s.name]
    publish = [
        s
        for s in finished
        if s.name == f"publish {notes_service.topic}"
        and s.attributes is not None
        and s.attributes.get("messaging.message.id") == first.event_id
    ]
    process = [
        s
        for s in finished
        if s.name == f"process {notes_service.topic}"
        and s.attributes is not None
        and s.attributes.get("messaging.message.id") == first.event_id
    ]
    assert server, [s.name for s in finished]
    assert len(publish) == 1, [s.name for s in finished]
    assert process, [s.name for s in finished]
    trace_ids = {s.context.trace_id for s in [server[0], publish[0], *process]}
    assert len(trace_ids) == 1, "request, publish and consume spans are in different traces"
    assert publish[0].kind == SpanKind.PRODUCER
    assert len(process) == 2, "the first delivery and the redelivery are both traced"
    assert all(s.kind == SpanKind.CONSUMER for s in process)
    assert all(
        s.parent is not None and s.parent.span_id == publish[0].context.span_id for s in process
    )
    assert publish[0].attributes is not None
    assert publish[0].attributes["messaging.system"] == "kafka"
    assert publish[0].attributes["messaging.destination.name"] == notes_service.topic


async def test_platform_endpoints_of_a_service(notes_service: NotesService) -> None:
    client = notes_service.client

    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "redis", "kafka"}

    unauthorized = await client.post("/notes", json={"body": "x"})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["content-type"].startswith("application/problem+json")

    invalid = await client.post(
        "/notes", json={"body": 3}, headers={"Authorization": f"Bearer {notes_service.token}"}
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "body.body"

    await post_note(notes_service, "counted")
    metrics = (await client.get("/metrics")).text
    assert 'esquadrao_http_requests_total{method="POST",route="/notes",status="201"}' in metrics
    assert "esquadrao_outbox_published_total" in metrics
