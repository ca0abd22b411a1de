"""Cursor pagination of contacts stays stable while contacts are being inserted: no contact
is served twice, and none that existed during the whole walk is skipped."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from contacts.domain.model import Contact, ContactDraft

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration

SEEDED = 400
PAGE = 25


def _phone(n: int) -> str:
    return f"+55119{n:08d}"


async def _seed(api: ContactsApi, company: str, first: int, count: int) -> list[str]:
    response = await api.client.post(
        "/contacts/bulk",
        json={
            "contacts": [{"phone": _phone(n), "name": f"c{n}"} for n in range(first, first + count)]
        },
        headers=api.headers(company),
    )
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def _back_dated(api: ContactsApi, company: str, n: int) -> str:
    """A contact whose sort key is before every other: a transaction that took its time
    stamp early and committed late. With OFFSET paging it would shift every page."""
    moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    contact = Contact.create(
        contact_id=str(uuid.uuid4()),
        company_id=company,
        draft=ContactDraft(phone_e164=_phone(900_000 + n)),
        now=moment,
    )
    async with api.uow() as uow:
        assert await uow.contacts.insert_new([contact])
        await uow.commit()
    return contact.id


async def test_paging_while_contacts_are_inserted_serves_each_once(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    await contacts_api.unlimited(company)
    seeded = await _seed(contacts_api, company, 0, 200) + await _seed(
        contacts_api, company, 200, 200
    )
    assert len(set(seeded)) == SEEDED
    stop = asyncio.Event()

    async def insert_concurrently() -> int:
        n = 0
        while not stop.is_set():
            await contacts_api.create(company, phone=_phone(500_000 + n))
            n += 1
        return n

    inserter = asyncio.create_task(insert_concurrently())
    seen: list[str] = []
    keys: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = 0
    back_dated: list[str] = []
    while True:
        query = f"/contacts?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        response = await contacts_api.client.get(query, headers=contacts_api.headers(company))
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["id"] for item in page["items"])
        keys.extend((item["created_at"], item["id"]) for item in page["items"])
        pages += 1
        back_dated.append(await _back_dated(contacts_api, company, pages))
        if pages == SEEDED // PAGE // 2:
            stop.set()  # inserts stop half way, so the walk reaches an end
        cursor = page["next_cursor"]
        if cursor is None:
            break
    stop.set()
    inserted = await inserter

    assert inserted > 0
    assert len(seen) == len(set(seen)), "a contact was served twice"
    assert set(seeded) <= set(seen), "a contact that existed during the walk was skipped"
    assert [datetime.fromisoformat(at) for at, _ in keys] == sorted(
        datetime.fromisoformat(at) for at, _ in keys
    )
    assert not set(back_dated) & set(seen), "rows before the walk's position are not served"
    concurrent = set(seen) - set(seeded)
    assert 0 < len(concurrent) <= inserted, "rows after the position show up later in the walk"
