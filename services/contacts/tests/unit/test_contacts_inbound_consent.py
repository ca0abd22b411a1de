"""The ``contacts`` group's handler on recorded ``whatsapp.events.v1`` records: keyword
messages opt their sender out or in, anything else changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from contacts.domain.model import Contact, ContactDraft
from contacts.domain.optout import ConsentKeywords
from contacts.entrypoints.consumers import whatsapp_events_handler
from contacts.service_layer.consent import InboundConsent, apply_inbound_message
from esquadrao.contacts.v1 import contacts_pb2 as pb
from esquadrao.whatsapp.v1.whatsapp_pb2 import WhatsappEvent
from esquadrao_common.events import new_envelope, payload_name
from esquadrao_common.kafka.consumer import IncomingRecord

if TYPE_CHECKING:
    from conftest import FakeContactsUnitOfWork

pytestmark = pytest.mark.unit

COMPANY = "condominio-sol"
NOW = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
EARLIER = datetime(2025, 1, 2, 9, 30, tzinfo=UTC)


def contact(phone: str, name: str, *, opted_out: bool = False) -> Contact:
    created = Contact.create(
        contact_id=str(uuid.uuid4()),
        company_id=COMPANY,
        draft=ContactDraft(phone_e164=phone, name=name),
        now=EARLIER,
    )
    if opted_out:
        created.opt_out(EARLIER, "pediu")
    return created


@pytest.fixture
def residents(uow: FakeContactsUnitOfWork) -> dict[str, Contact]:
    """The company's contacts the recorded senders match (or not)."""
    people = {
        "maria": contact("+5511987654321", "Maria Souza"),
        "joao": contact("+5511987651234", "João"),
        "pedro": contact("+5521998765432", "Pedro"),
        "carla": contact("+5531991234567", "Carla", opted_out=True),
    }
    for person in people.values():
        uow.contacts.add(person)
    return people


def record_of(event: WhatsappEvent) -> IncomingRecord:
    return IncomingRecord(
        topic="whatsapp.events.v1",
        partition=0,
        offset=0,
        key=b"session:phone",
        value=event.SerializeToString(),
        headers=[],
        timestamp=0,
        envelope=event.envelope,
        attempt=0,
        source_topic="whatsapp.events.v1",
    )


async def apply(uow: FakeContactsUnitOfWork, event: WhatsappEvent) -> InboundConsent:
    return await apply_inbound_message(
        uow, event.envelope, event.message_received, now=NOW, default_region="BR"
    )


async def test_recorded_messages_change_consent_as_their_text_says(
    uow: FakeContactsUnitOfWork, residents: dict[str, Contact], recorded: list[WhatsappEvent]
) -> None:
    outcomes = [await apply(uow, event) for event in recorded]

    assert outcomes == [
        InboundConsent.OPTED_OUT,  # "SAIR"
        InboundConsent.OPTED_OUT,  # "Parar 🙏" button reply, from the 8-digit legacy number
        InboundConsent.NOT_A_KEYWORD,  # "não quero sair agora, ..." only contains one
        InboundConsent.NOT_A_KEYWORD,  # an image whose caption is "SAIR"
        InboundConsent.OPTED_IN,  # "*Voltar*"
        InboundConsent.CREATED_OPTED_OUT,  # "STOP" from a phone with no contact
        InboundConsent.UNKNOWN_SENDER,  # "voltar" from a phone with no contact
        InboundConsent.UNCHANGED,  # Maria's second "sair"
    ]
    rows = uow.contacts.rows
    maria, joao = rows[residents["maria"].id], rows[residents["joao"].id]
    assert maria.opted_out and joao.opted_out
    assert maria.opt_out_reason == 'replied "SAIR" on WhatsApp'
    assert maria.opted_out_at == NOW
    assert joao.opt_out_reason == 'replied "PARAR" on WhatsApp'
    assert not rows[residents["pedro"].id].opted_out
    assert not rows[residents["carla"].id].opted_out
    (new,) = [c for c in rows.values() if c.id not in {p.id for p in residents.values()}]
    assert (new.phone_e164, new.name, new.opted_out) == ("+5541999990000", "Zé do 302", True)

    events = uow.staged()
    assert [payload_name(e) for e in events] == [
        "contact_opted_out",
        "contact_opted_out",
        "contact_opted_in",
        "contact_created",
    ]
    causes = [recorded[0], recorded[1], recorded[4], recorded[5]]
    for event, cause in zip(events, causes, strict=True):
        assert event.envelope.causation_id == cause.envelope.event_id
        assert event.envelope.correlation_id == cause.envelope.correlation_id
        assert event.envelope.company_id == COMPANY
    assert events[0].contact_opted_out.source == pb.CONSENT_SOURCE_INBOUND_KEYWORD
    assert events[0].contact_opted_out.version == 2
    assert events[3].contact_created.contact.opted_out


async def test_handling_a_record_again_changes_nothing(
    uow: FakeContactsUnitOfWork, residents: dict[str, Contact], recorded: list[WhatsappEvent]
) -> None:
    handle = whatsapp_events_handler(clock=lambda: NOW, default_region="BR")
    for event in recorded:
        await handle(record_of(event), uow)
    state = {key: (c.version, c.opted_out) for key, c in uow.contacts.rows.items()}
    staged = len(uow.staged())

    for event in recorded:
        await handle(record_of(event), uow)

    assert {key: (c.version, c.opted_out) for key, c in uow.contacts.rows.items()} == state
    assert len(uow.staged()) == staged


async def test_a_company_answers_to_its_own_keywords_only(
    uow: FakeContactsUnitOfWork, residents: dict[str, Contact], recorded: list[WhatsappEvent]
) -> None:
    uow.keywords.rows[COMPANY] = ConsentKeywords(opt_out=["Basta"], opt_in=[])
    sair = recorded[0]
    basta = WhatsappEvent()
    basta.CopyFrom(sair)
    basta.message_received.text = "BASTA!"

    assert await apply(uow, sair) is InboundConsent.NOT_A_KEYWORD
    assert await apply(uow, basta) is InboundConsent.OPTED_OUT


async def test_other_whatsapp_events_are_skipped(uow: FakeContactsUnitOfWork) -> None:
    handle = whatsapp_events_handler(clock=lambda: NOW, default_region="BR")
    newer = WhatsappEvent()  # an event type added after this schema: no payload known
    newer.envelope.CopyFrom(
        new_envelope("esquadrao.whatsapp.v1.SessionConnected", COMPANY, "whatsapp")
    )

    await handle(record_of(newer), uow)

    assert uow.staged() == []
    assert uow.contacts.rows == {}


async def test_an_invalid_sender_phone_is_ignored(
    uow: FakeContactsUnitOfWork, recorded: list[WhatsappEvent]
) -> None:
    event = WhatsappEvent()
    event.CopyFrom(recorded[0])
    event.message_received.from_phone_e164 = "+550800123456"

    assert await apply(uow, event) is InboundConsent.INVALID_PHONE
    assert uow.contacts.rows == {}
