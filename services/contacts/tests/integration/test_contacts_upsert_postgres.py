"""``upsert_drafts`` on Postgres: batches of hundreds in a few statements, concurrent
batches over the same phones, and all or nothing when a draft is rejected."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from contacts.domain.model import MAX_TAGS, ContactDraft
from contacts.domain.optout import ConsentSource
from contacts.service_layer.contacts import UpsertOutcome, upsert_drafts
from contacts.service_layer.errors import DraftRejected
from esquadrao_common.events import payload_name
from sqlalchemy import event

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration

COMPANY = "acme"


def drafts(first: int, count: int, **fields: object) -> list[ContactDraft]:
    return [
        ContactDraft(phone_e164=f"+55119{n:08d}", name=f"c{n}", **fields)
        for n in range(first, first + count)
    ]


async def test_a_batch_of_500_takes_a_handful_of_statements(contacts_api: ContactsApi) -> None:
    async with contacts_api.uow() as uow:
        await upsert_drafts(uow, COMPANY, drafts(0, 250), now=datetime.now(UTC))
        await uow.commit()
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.split(None, 1)[0])

    engine = contacts_api.platform.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with contacts_api.uow() as uow:
            results = await upsert_drafts(
                uow,
                COMPANY,
                drafts(0, 250, tags=("vip",)) + drafts(250, 250),
                now=datetime.now(UTC),
                source=ConsentSource.IMPORT,
                correlation_id="job-42",
            )
            await uow.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)

    outcomes = [result.outcome for result in results]
    assert outcomes == [UpsertOutcome.UPDATED] * 250 + [UpsertOutcome.CREATED] * 250
    # BEGIN, SAVEPOINT, lock SELECT, INSERT, UPDATE, RELEASE, outbox INSERT, COMMIT...
    assert len(statements) <= 12, statements
    events = await contacts_api.events(COMPANY)
    assert len(events) == 750
    assert {e.envelope.correlation_id for e in events[250:]} == {"job-42"}
    kinds = [payload_name(e) for e in events[250:]]
    assert kinds == ["contact_updated"] * 250 + ["contact_created"] * 250


async def test_concurrent_batches_over_the_same_phones_make_one_contact_each(
    contacts_api: ContactsApi,
) -> None:
    async def upsert(name: str) -> list[UpsertOutcome]:
        async with contacts_api.uow() as uow:
            results = await upsert_drafts(
                uow,
                COMPANY,
                [ContactDraft(phone_e164=d.phone_e164, name=name) for d in drafts(0, 300)],
                now=datetime.now(UTC),
            )
            await uow.commit()
        return [result.outcome for result in results]

    outcomes = await asyncio.gather(upsert("one"), upsert("two"), upsert("three"))

    created = [o.count(UpsertOutcome.CREATED) for o in outcomes]
    assert sum(created) == 300  # each phone created once, by whichever batch won its insert
    async with contacts_api.uow() as uow:
        stored = await uow.contacts.lock_by_phones(COMPANY, [d.phone_e164 for d in drafts(0, 300)])
    assert len(stored) == 300
    assert {c.version for c in stored.values()} <= {1, 2, 3}
    events = await contacts_api.events(COMPANY)
    for phone, contact in stored.items():
        versions = [
            getattr(e, payload_name(e)).contact.version
            for e in events
            if getattr(e, payload_name(e)).contact.phone_e164 == phone
        ]
        assert versions == list(range(1, contact.version + 1)), phone


async def test_a_rejected_draft_writes_nothing_and_the_batch_can_go_on(
    contacts_api: ContactsApi,
) -> None:
    full_tags = tuple(f"t{n}" for n in range(MAX_TAGS))
    async with contacts_api.uow() as uow:
        await upsert_drafts(
            uow,
            COMPANY,
            [ContactDraft(phone_e164="+5511911111111", tags=full_tags)],
            now=datetime.now(UTC),
        )
        await uow.commit()
    batch = drafts(0, 3)
    batch.insert(1, ContactDraft(phone_e164="+5511911111111", tags=("extra",)))

    async with contacts_api.uow() as uow:
        with pytest.raises(DraftRejected) as rejected:
            await upsert_drafts(uow, COMPANY, batch, now=datetime.now(UTC))
        del batch[rejected.value.index]
        results = await upsert_drafts(uow, COMPANY, batch, now=datetime.now(UTC))
        await uow.commit()

    assert [r.outcome for r in results] == [UpsertOutcome.CREATED] * 3
    events = await contacts_api.events(COMPANY)
    assert [payload_name(e) for e in events] == ["contact_created"] * 4
