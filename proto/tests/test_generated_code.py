"""The generated Python code is current, and every topic wrapper follows the envelope rule."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime
from pathlib import Path

import esquadrao
import pytest
from esquadrao.common.v1.envelope_pb2 import Envelope, EventHeader
from esquadrao.contacts.v1.contacts_pb2 import (
    CONSENT_SOURCE_INBOUND_KEYWORD,
    Contact,
    ContactEvent,
    ContactOptedOut,
    ContactUpdated,
)
from esquadrao_devstack.protogen import check
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

pytestmark = pytest.mark.unit

PROTO_ROOT = Path(__file__).resolve().parents[1]
FIRST_PAYLOAD_NUMBER = 10


def generated_modules() -> list[str]:
    names = [
        info.name
        for info in pkgutil.walk_packages(esquadrao.__path__, prefix="esquadrao.")
        if info.name.endswith("_pb2")
    ]
    for name in names:
        importlib.import_module(name)
    return sorted(names)


def wrapper_descriptors() -> list[Descriptor]:
    """Every message whose field 1 is the envelope, except EventHeader (the generic view)."""
    pool = descriptor_pool.Default()
    wrappers = []
    for module_name in generated_modules():
        file = pool.FindFileByName(module_name.replace(".", "/").removesuffix("_pb2") + ".proto")
        for message in file.message_types_by_name.values():
            field = message.fields_by_number.get(1)
            if (
                message.full_name != EventHeader.DESCRIPTOR.full_name
                and field is not None
                and field.message_type is not None
                and field.message_type.full_name == Envelope.DESCRIPTOR.full_name
            ):
                wrappers.append(message)
    return wrappers


def sample_envelope() -> Envelope:
    envelope = Envelope(
        event_id="0b6c3f1e-8d2a-4c57-9f53-2f7d8a1e4b90",
        event_type="esquadrao.contacts.v1.ContactOptedOut",
        company_id="company-1",
        producer="contacts",
        correlation_id="0b6c3f1e-8d2a-4c57-9f53-2f7d8a1e4b90",
        causation_id="9a1d7c42-5e0b-4f6a-8c3e-7b2d1f0e6a55",
    )
    envelope.occurred_at.FromDatetime(datetime(2025, 3, 1, 12, 30, tzinfo=UTC))
    return envelope


def test_generated_code_is_up_to_date() -> None:
    drift = check(PROTO_ROOT)
    assert not drift, "run `make proto`:\n" + "\n".join(drift.lines())


def test_contact_event_round_trips() -> None:
    contact = Contact(
        id="5f0e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        company_id="company-1",
        phone_e164="+5511987654321",
        name="Maria Souza",
        tags=["vip", "bloco-b"],
        condominio="Residencial Jardim",
        endereco="Rua das Flores, 100",
        cargo="síndica",
        custom_fields={"apartamento": "12B"},
        version=3,
    )
    event = ContactEvent(
        envelope=sample_envelope(),
        contact_updated=ContactUpdated(contact=contact, changed_fields=["name", "tags"]),
    )

    decoded = ContactEvent.FromString(event.SerializeToString())

    assert decoded == event
    assert decoded.WhichOneof("payload") == "contact_updated"
    assert decoded.contact_updated.contact.custom_fields["apartamento"] == "12B"
    assert list(decoded.contact_updated.changed_fields) == ["name", "tags"]


def test_a_wrapper_parses_as_event_header_with_its_envelope() -> None:
    event = ContactEvent(
        envelope=sample_envelope(),
        contact_opted_out=ContactOptedOut(
            contact_id="5f0e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
            phone_e164="+5511987654321",
            reason="SAIR",
            source=CONSENT_SOURCE_INBOUND_KEYWORD,
            version=4,
        ),
    )

    header = EventHeader.FromString(event.SerializeToString())

    assert header.envelope == sample_envelope()


def test_the_contracts_declare_wrappers() -> None:
    names = {descriptor.full_name for descriptor in wrapper_descriptors()}
    assert ContactEvent.DESCRIPTOR.full_name in names


@pytest.mark.parametrize("wrapper", wrapper_descriptors(), ids=lambda d: d.full_name)
def test_every_wrapper_follows_the_envelope_rule(wrapper: Descriptor) -> None:
    envelope_field = wrapper.fields_by_number[1]
    assert envelope_field.name == "envelope"
    assert "payload" in wrapper.oneofs_by_name, f"{wrapper.full_name} has no `oneof payload`"
    payload_fields = wrapper.oneofs_by_name["payload"].fields
    assert payload_fields, f"{wrapper.full_name}.payload is empty"
    for field in payload_fields:
        assert field.number >= FIRST_PAYLOAD_NUMBER, f"{field.full_name} is numbered below 10"
        assert field.type == FieldDescriptor.TYPE_MESSAGE, f"{field.full_name} is not a message"


@pytest.mark.parametrize("wrapper", wrapper_descriptors(), ids=lambda d: d.full_name)
def test_every_payload_of_every_wrapper_parses_as_event_header(wrapper: Descriptor) -> None:
    wrapper_class = GetMessageClass(wrapper)
    for field in wrapper.oneofs_by_name["payload"].fields:
        record: Message = wrapper_class(envelope=sample_envelope())
        getattr(record, field.name).SetInParent()

        header = EventHeader.FromString(record.SerializeToString())

        assert header.envelope == sample_envelope(), field.full_name
