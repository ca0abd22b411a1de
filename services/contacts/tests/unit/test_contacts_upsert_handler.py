"""``upsert_drafts``: one result per draft in order, new contacts created, existing ones
merged (deleted ones restored), opt-outs recorded, races with concurrent inserts merged,
and all or nothing when a draft is rejected."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from contacts.domain.model import MAX_TAGS, Contact, ContactDraft
from contacts.domain.optout import ConsentSource
from contacts.service_layer.contacts import UpsertOutcome, UpsertResult, upsert_drafts
from contacts.service_layer.errors import DraftRejected
from esquadrao.contacts.v1 import contacts_pb2 as pb
from esquadrao_common.events import payload_name

if TYPE_CHECKING:
    from conftest import FakeContactsUnitOfWork

pytestmark = pytest.mark.unit

COMPANY = "acme"
NOW = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=30)


def existing(phone: str, **fields: object) -> Contact:
    draft = ContactDraft(phone_e164=phone, **fields)
    return Contact.create(
        contact_id=str(uuid.uuid4()), company_id=COMPANY, draft=draft, now=EARLIER
    )


async def test_new_phones_are_created_in_order_with_their_events(
    uow: FakeContactsUnitOfWork,
) -> None:
    drafts = [
        ContactDraft(phone_e164="+5511900000002", name="B", tags=("x",)),
        ContactDraft(phone_e164="+5511900000001", name="A"),
    ]

    results = await upsert_drafts(uow, COMPANY, drafts, now=NOW, correlation_id="job-1")

    assert [r.outcome for r in results] == [UpsertOutcome.CREATED, UpsertOutcome.CREATED]
    stored = {c.id: c for c in uow.contacts.rows.values()}
    assert [stored[r.contact_id].name for r in results] == ["B", "A"]
    events = uow.staged()
    assert [payload_name(e) for e in events] == ["contact_created", "contact_created"]
    assert [e.contact_created.contact.id for e in events] == [r.contact_id for r in results]
    assert {e.envelope.correlation_id for e in events} == {"job-1"}
    assert events[0].contact_created.contact.version == 1


async def test_existing_contacts_are_merged_or_left_unchanged(uow: FakeContactsUnitOfWork) -> None:
    ana = uow.contacts.add(existing("+5511911111111", name="Ana", email="a@x.com", tags=("a",)))
    bia = uow.contacts.add(existing("+5511922222222", name="Bia"))

    results = await upsert_drafts(
        uow,
        COMPANY,
        [
            ContactDraft(phone_e164=ana.phone_e164, name="Ana Lima", tags=("b", "A")),
            ContactDraft(phone_e164=bia.phone_e164, name="Bia"),
        ],
        now=NOW,
    )

    assert results == [
        UpsertResult(ana.id, UpsertOutcome.UPDATED),
        UpsertResult(bia.id, UpsertOutcome.UNCHANGED),
    ]
    merged = uow.contacts.rows[ana.id]
    assert (merged.name, merged.email, merged.tags) == ("Ana Lima", "a@x.com", ("a", "b"))
    assert (merged.version, merged.updated_at) == (2, NOW)
    assert uow.contacts.rows[bia.id].version == 1
    (event,) = uow.staged()
    assert list(event.contact_updated.changed_fields) == ["name", "tags"]
    assert event.contact_updated.contact.version == 2


async def test_a_deleted_contact_is_restored_then_merged(uow: FakeContactsUnitOfWork) -> None:
    gone = existing("+5511911111111", name="Ana")
    gone.delete(EARLIER)
    uow.contacts.add(gone)

    (result,) = await upsert_drafts(
        uow, COMPANY, [ContactDraft(phone_e164=gone.phone_e164, cargo="síndica")], now=NOW
    )

    assert result == UpsertResult(gone.id, UpsertOutcome.UPDATED)
    stored = uow.contacts.rows[gone.id]
    assert stored.deleted_at is None
    assert (stored.cargo, stored.version) == ("síndica", 4)
    restored, updated = uow.staged()
    assert restored.contact_restored.contact.version == 3
    assert restored.contact_restored.contact.cargo == ""
    assert updated.contact_updated.contact.version == 4


async def test_a_draft_opts_out_but_never_opts_in(uow: FakeContactsUnitOfWork) -> None:
    ana = uow.contacts.add(existing("+5511911111111"))
    bia = existing("+5511922222222")
    bia.opt_out(EARLIER, "pediu")
    uow.contacts.add(bia)

    results = await upsert_drafts(
        uow,
        COMPANY,
        [
            ContactDraft(phone_e164=ana.phone_e164, opted_out=True, opt_out_reason="planilha"),
            ContactDraft(phone_e164=bia.phone_e164, opted_out=False),
        ],
        now=NOW,
        source=ConsentSource.IMPORT,
    )

    assert [r.outcome for r in results] == [UpsertOutcome.UPDATED, UpsertOutcome.UNCHANGED]
    assert uow.contacts.rows[ana.id].opted_out_at == NOW
    assert uow.contacts.rows[bia.id].opted_out
    (event,) = uow.staged()
    assert event.contact_opted_out.source == pb.CONSENT_SOURCE_IMPORT
    assert event.contact_opted_out.reason == "planilha"


async def test_drafts_sharing_a_phone_apply_in_order_to_one_contact(
    uow: FakeContactsUnitOfWork,
) -> None:
    phone = "+5511911111111"

    first, second, third = await upsert_drafts(
        uow,
        COMPANY,
        [
            ContactDraft(phone_e164=phone, name="Ana"),
            ContactDraft(phone_e164=phone, tags=("vip",)),
            ContactDraft(phone_e164=phone, name="Ana"),
        ],
        now=NOW,
    )

    assert first.outcome is UpsertOutcome.CREATED
    assert second.outcome is UpsertOutcome.UPDATED
    assert third.outcome is UpsertOutcome.UNCHANGED
    assert first.contact_id == second.contact_id == third.contact_id
    (stored,) = uow.contacts.rows.values()
    assert (stored.name, stored.tags, stored.version) == ("Ana", ("vip",), 2)
    created, updated = uow.staged()
    assert created.contact_created.contact.version == 1
    assert list(created.contact_created.contact.tags) == []
    assert updated.contact_updated.contact.version == 2


async def test_a_phone_inserted_concurrently_is_merged_not_duplicated(
    uow: FakeContactsUnitOfWork,
) -> None:
    phone = "+5511911111111"
    rival = existing(phone, name="Rival", email="r@x.com")

    def concurrent_insert() -> None:
        uow.contacts.add(rival)

    uow.contacts.before_insert = concurrent_insert

    (result,) = await upsert_drafts(
        uow, COMPANY, [ContactDraft(phone_e164=phone, name="Ana")], now=NOW
    )

    assert result == UpsertResult(rival.id, UpsertOutcome.UPDATED)
    (stored,) = uow.contacts.rows.values()
    assert (stored.name, stored.email, stored.version) == ("Ana", "r@x.com", 2)
    (event,) = uow.staged()
    assert payload_name(event) == "contact_updated"


async def test_a_rejected_draft_leaves_nothing_of_the_batch(uow: FakeContactsUnitOfWork) -> None:
    full = uow.contacts.add(
        existing("+5511911111111", tags=tuple(f"t{n}" for n in range(MAX_TAGS)))
    )
    before = dict(uow.contacts.rows)

    with pytest.raises(DraftRejected) as rejected:
        await upsert_drafts(
            uow,
            COMPANY,
            [
                ContactDraft(phone_e164="+5511922222222", name="new"),
                ContactDraft(phone_e164=full.phone_e164, tags=("one too many",)),
            ],
            now=NOW,
        )

    assert rejected.value.index == 1
    assert rejected.value.field == "tags"
    assert uow.contacts.rows.keys() == before.keys()
    assert uow.staged() == []
