"""The ``contacts`` consumer group on a real broker and database: recorded inbound
WhatsApp messages opt their senders out or in, effectively once (a redelivered record
changes nothing)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from contacts.domain.model import Contact, ContactDraft
from contacts.entrypoints.consumers import whatsapp_events_handler
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao.whatsapp.v1.whatsapp_pb2 import WhatsappEvent
from esquadrao_common.events import payload_name
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.platform_tables import processed_events
from google.protobuf import json_format
from sqlalchemy import func, select

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).parents[1] / "recorded" / "whatsapp_message_received.json"
COMPANY = "condominio-sol"


def recorded() -> list[WhatsappEvent]:
    data: list[dict[str, Any]] = json.loads(RECORDED.read_text())
    return [json_format.ParseDict(item, WhatsappEvent()) for item in data]


def record(topic: str, event: WhatsappEvent) -> OutgoingRecord:
    message = event.message_received
    key = f"{message.session_id}:{message.from_phone_e164}".encode()
    return OutgoingRecord(topic, key, event.SerializeToString(), [])


@pytest.fixture
async def consumer_topic(
    contacts_api: ContactsApi, kafka_bootstrap: str
) -> AsyncIterator[tuple[str, ConsumerRuntime[ContactsUnitOfWork]]]:
    """A topic standing in for whatsapp.events.v1 and the group's runtime reading it."""
    topic = f"whatsapp-{uuid.uuid4().hex[:8]}"
    group = ConsumerGroupSpec(f"contacts-{uuid.uuid4().hex[:8]}", (topic,), (200,))
    names = [topic, *group.retry_topics, group.dlq_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1) for name in names])
    database = contacts_api.platform.database
    runtime: ConsumerRuntime[ContactsUnitOfWork] = ConsumerRuntime(
        bootstrap=kafka_bootstrap,
        group=group,
        handler=whatsapp_events_handler(clock=lambda: datetime.now(UTC), default_region="BR"),
        uow_factory=lambda: ContactsUnitOfWork(database),
        publisher=contacts_api.platform.publisher,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await runtime.start()
    try:
        yield topic, runtime
    finally:
        await runtime.stop()
        await admin.delete_topics(names)
        await admin.close()


async def processed(api: ContactsApi, group: str) -> int:
    async with api.platform.database.sessionmaker() as session:
        statement = select(func.count()).where(processed_events.c.consumer_group == group)
        return int((await session.execute(statement)).scalar_one())


async def wait_processed(api: ContactsApi, group: str, count: int) -> None:
    async with asyncio.timeout(30):
        while await processed(api, group) < count:
            await asyncio.sleep(0.1)


async def test_recorded_messages_opt_out_once(
    contacts_api: ContactsApi, consumer_topic: tuple[str, ConsumerRuntime[ContactsUnitOfWork]]
) -> None:
    topic, runtime = consumer_topic
    moment = datetime(2025, 1, 2, tzinfo=UTC)
    people = {}
    async with contacts_api.uow() as uow:
        for name, phone in (("maria", "+5511987654321"), ("joao", "+5511987651234")):
            contact = Contact.create(
                contact_id=str(uuid.uuid4()),
                company_id=COMPANY,
                draft=ContactDraft(phone_e164=phone, name=name),
                now=moment,
            )
            await uow.contacts.insert_new([contact])
            people[name] = contact.id
        await uow.commit()
    events = recorded()
    publisher = contacts_api.platform.publisher

    await publisher.publish([record(topic, event) for event in events])
    await wait_processed(contacts_api, runtime.group.name, len(events))

    async with contacts_api.uow() as uow:
        maria = await uow.contacts.get(COMPANY, people["maria"])
        joao = await uow.contacts.get(COMPANY, people["joao"])
        stranger = await uow.contacts.get_by_phone(COMPANY, "+5541999990000")
    assert maria is not None and maria.opted_out and maria.version == 2
    assert joao is not None and joao.opted_out
    assert stranger is not None and stranger.opted_out and stranger.name == "Zé do 302"
    published = await contacts_api.events(COMPANY)
    assert sorted(payload_name(e) for e in published) == [
        "contact_created",
        "contact_opted_out",
        "contact_opted_out",
    ]
    causes = {e.envelope.causation_id for e in published}
    assert causes == {
        events[0].envelope.event_id,
        events[1].envelope.event_id,
        events[5].envelope.event_id,
    }

    # The same records again (a producer retry, a replay): nothing changes.
    sentinel = WhatsappEvent()
    sentinel.CopyFrom(events[2])
    sentinel.envelope.event_id = str(uuid.uuid4())
    await publisher.publish([record(topic, event) for event in [*events, sentinel]])
    await wait_processed(contacts_api, runtime.group.name, len(events) + 1)
    await asyncio.sleep(0.5)

    assert await contacts_api.events(COMPANY) == published
    async with contacts_api.uow() as uow:
        again = await uow.contacts.get(COMPANY, people["maria"])
    assert again == maria
