"""Contact state to ``ContactEvent`` records: payloads, envelopes, versions and keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from contacts.domain.events import (
    PRODUCER,
    contact_created,
    contact_deleted,
    contact_import_completed,
    contact_list_membership_changed,
    contact_opted_in,
    contact_opted_out,
    contact_restored,
    contact_to_proto,
    contact_updated,
    event_key,
)
from contacts.domain.model import Contact, ContactDraft, ContactPatch
from contacts.domain.optout import ConsentSource
from esquadrao.contacts.v1 import contacts_pb2 as pb
from esquadrao_common.events import decode_event, envelope_of, payload_name

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
COMPANY = "company-1"
CONTACT_ID = str(uuid.uuid4())


def new_contact() -> Contact:
    draft = ContactDraft(
        phone_e164="+5511987654321",
        name="Maria",
        email="maria@example.com",
        tags=("VIP", "Síndico"),
        condominio="Jardim",
        endereco="Rua A, 10",
        cargo="síndica",
        custom_fields={"bloco": "A", "andar": "3"},
    )
    return Contact.create(contact_id=CONTACT_ID, company_id=COMPANY, draft=draft, now=T0)


def timestamp(moment: datetime) -> int:
    return int(moment.timestamp())


def test_contact_to_proto_carries_the_full_state() -> None:
    contact = new_contact()
    contact.opt_out(T1, "SAIR")
    message = contact_to_proto(contact)
    assert message.id == CONTACT_ID
    assert message.company_id == COMPANY
    assert message.phone_e164 == "+5511987654321"
    assert (message.name, message.email) == ("Maria", "maria@example.com")
    assert list(message.tags) == ["VIP", "Síndico"]
    assert (message.condominio, message.endereco, message.cargo) == (
        "Jardim",
        "Rua A, 10",
        "síndica",
    )
    assert dict(message.custom_fields) == {"bloco": "A", "andar": "3"}
    assert message.opted_out
    assert message.opted_out_at.ToDatetime(tzinfo=UTC) == T1
    assert message.opt_out_reason == "SAIR"
    assert message.created_at.ToDatetime(tzinfo=UTC) == T0
    assert message.updated_at.ToDatetime(tzinfo=UTC) == T1
    assert not message.HasField("deleted_at")
    assert message.version == 2


def test_unset_times_stay_unset_and_local_times_become_utc() -> None:
    local = datetime(2025, 3, 1, 9, 0, tzinfo=UTC) - timedelta(hours=3)
    draft = ContactDraft(phone_e164="+5511987654321")
    contact = Contact.create(contact_id=CONTACT_ID, company_id=COMPANY, draft=draft, now=local)
    message = contact_to_proto(contact)
    assert not message.HasField("opted_out_at")
    assert not message.HasField("deleted_at")
    assert message.created_at.seconds == timestamp(local)
    assert message.version == 1


def test_created_event_has_an_envelope_naming_its_payload() -> None:
    contact = new_contact()
    event = contact_created(contact)
    envelope = envelope_of(event)
    assert envelope.event_type == "esquadrao.contacts.v1.ContactCreated"
    assert envelope.company_id == COMPANY
    assert envelope.producer == PRODUCER == "contacts"
    assert envelope.occurred_at.ToDatetime(tzinfo=UTC) == T0
    assert envelope.correlation_id == envelope.event_id
    assert envelope.causation_id == ""
    assert event.contact_created.contact == contact_to_proto(contact)
    assert event_key(event) == CONTACT_ID


def test_correlation_and_causation_continue_a_chain() -> None:
    correlation, cause = str(uuid.uuid4()), str(uuid.uuid4())
    event = contact_created(new_contact(), correlation_id=correlation, causation_id=cause)
    assert (event.envelope.correlation_id, event.envelope.causation_id) == (correlation, cause)


def test_updated_event_carries_state_and_changed_fields() -> None:
    contact = new_contact()
    changed = contact.apply_patch(
        ContactPatch(name="Maria Souza", custom_fields={"andar": "4"}), T1
    )
    event = contact_updated(contact, changed)
    assert list(event.contact_updated.changed_fields) == ["name", "custom_fields.andar"]
    assert event.contact_updated.contact.version == 2
    assert event.contact_updated.contact.name == "Maria Souza"
    assert event.envelope.event_type == "esquadrao.contacts.v1.ContactUpdated"
    assert event.envelope.occurred_at.ToDatetime(tzinfo=UTC) == T1
    assert event_key(event) == CONTACT_ID


def test_an_update_without_changes_is_not_an_event() -> None:
    with pytest.raises(ValueError, match="nothing changed"):
        contact_updated(new_contact(), ())


def test_deleted_and_restored_events() -> None:
    contact = new_contact()
    with pytest.raises(ValueError, match="is not deleted"):
        contact_deleted(contact)
    contact.delete(T1)
    deleted = contact_deleted(contact)
    assert deleted.contact_deleted == pb.ContactDeleted(
        contact_id=CONTACT_ID, deleted_at=T1, version=2
    )
    assert deleted.envelope.occurred_at.ToDatetime(tzinfo=UTC) == T1
    with pytest.raises(ValueError, match="still deleted"):
        contact_restored(contact)
    contact.restore(T2)
    restored = contact_restored(contact)
    assert restored.contact_restored.contact.version == 3
    assert not restored.contact_restored.contact.HasField("deleted_at")
    assert restored.envelope.occurred_at.ToDatetime(tzinfo=UTC) == T2
    assert event_key(deleted) == event_key(restored) == CONTACT_ID


@pytest.mark.parametrize(
    ("source", "wire"),
    [
        (ConsentSource.API, pb.CONSENT_SOURCE_API),
        (ConsentSource.INBOUND_KEYWORD, pb.CONSENT_SOURCE_INBOUND_KEYWORD),
        (ConsentSource.IMPORT, pb.CONSENT_SOURCE_IMPORT),
    ],
)
def test_opted_out_and_in_events(source: ConsentSource, wire: pb.ConsentSource) -> None:
    contact = new_contact()
    with pytest.raises(ValueError, match="is not opted out"):
        contact_opted_out(contact, source)
    contact.opt_out(T1, "keyword SAIR")
    opted_out = contact_opted_out(contact, source)
    assert opted_out.contact_opted_out == pb.ContactOptedOut(
        contact_id=CONTACT_ID,
        phone_e164="+5511987654321",
        reason="keyword SAIR",
        source=wire,
        opted_out_at=T1,
        version=2,
    )
    assert opted_out.envelope.occurred_at.ToDatetime(tzinfo=UTC) == T1
    with pytest.raises(ValueError, match="is opted out"):
        contact_opted_in(contact, source)
    contact.opt_in(T2)
    opted_in = contact_opted_in(contact, source)
    assert opted_in.contact_opted_in == pb.ContactOptedIn(
        contact_id=CONTACT_ID,
        phone_e164="+5511987654321",
        source=wire,
        opted_in_at=T2,
        version=3,
    )
    assert event_key(opted_out) == event_key(opted_in) == CONTACT_ID


def test_list_membership_event_is_keyed_by_list() -> None:
    event = contact_list_membership_changed(
        company_id=COMPANY,
        list_id="list-1",
        added_contact_ids=["c-1", "c-2"],
        removed_contact_ids=["c-3"],
        occurred_at=T1,
    )
    assert event.contact_list_membership_changed == pb.ContactListMembershipChanged(
        list_id="list-1", added_contact_ids=["c-1", "c-2"], removed_contact_ids=["c-3"]
    )
    assert event.envelope.event_type == "esquadrao.contacts.v1.ContactListMembershipChanged"
    assert event_key(event) == "list-1"


def test_list_membership_event_must_change_something_consistent() -> None:
    with pytest.raises(ValueError, match="at least one contact"):
        contact_list_membership_changed(company_id=COMPANY, list_id="l", occurred_at=T1)
    with pytest.raises(ValueError, match="both added and removed"):
        contact_list_membership_changed(
            company_id=COMPANY,
            list_id="l",
            added_contact_ids=["c-1"],
            removed_contact_ids=["c-1"],
            occurred_at=T1,
        )


def test_import_completed_event_is_keyed_by_job() -> None:
    event = contact_import_completed(
        company_id=COMPANY,
        job_id="job-1",
        processed=10,
        created=5,
        updated=2,
        skipped=1,
        errors=2,
        occurred_at=T2,
    )
    assert event.contact_import_completed == pb.ContactImportCompleted(
        job_id="job-1", processed=10, created=5, updated=2, skipped=1, errors=2
    )
    assert event.envelope.occurred_at.ToDatetime(tzinfo=UTC) == T2
    assert event_key(event) == "job-1"


@pytest.mark.parametrize(
    ("processed", "created", "updated", "skipped", "errors", "message"),
    [(3, 1, 1, 0, 0, "but 3 rows were processed"), (0, 1, 0, -1, 0, "cannot be negative")],
)
def test_import_counts_must_add_up(
    processed: int, created: int, updated: int, skipped: int, errors: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        contact_import_completed(
            company_id=COMPANY,
            job_id="j",
            processed=processed,
            created=created,
            updated=updated,
            skipped=skipped,
            errors=errors,
            occurred_at=T1,
        )


def test_events_round_trip_through_the_wire_format() -> None:
    contact = new_contact()
    event = contact_created(contact)
    decoded = decode_event(pb.ContactEvent, event.SerializeToString())
    assert decoded == event
    assert payload_name(decoded) == "contact_created"


def test_every_payload_of_the_contract_has_a_builder() -> None:
    contact = new_contact()
    contact.apply_patch(ContactPatch(name="Ana"), T1)
    built = [
        contact_created(contact),
        contact_updated(contact, ("name",)),
        contact_list_membership_changed(
            company_id=COMPANY, list_id="l", added_contact_ids=["c"], occurred_at=T1
        ),
        contact_import_completed(
            company_id=COMPANY,
            job_id="j",
            processed=0,
            created=0,
            updated=0,
            skipped=0,
            errors=0,
            occurred_at=T1,
        ),
    ]
    contact.opt_out(T1)
    built.append(contact_opted_out(contact, ConsentSource.API))
    contact.opt_in(T2)
    built.append(contact_opted_in(contact, ConsentSource.API))
    contact.delete(T2)
    built.append(contact_deleted(contact))
    contact.restore(T2)
    built.append(contact_restored(contact))
    payloads = pb.ContactEvent.DESCRIPTOR.oneofs_by_name["payload"].fields
    assert {payload_name(event) for event in built} == {field.name for field in payloads}
