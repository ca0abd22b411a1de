"""Contact lists: create, rename, delete; members added and removed one by one and in
bulk; member pages; counts; membership events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from esquadrao_common.auth import Role
from esquadrao_common.events import payload_name

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration


async def test_list_names_are_unique_per_company_ignoring_case_and_accents(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    created = await contacts_api.client.post(
        "/contact-lists", json={"name": " Síndicos  2024 "}, headers=headers
    )
    other = await contacts_api.client.post(
        "/contact-lists", json={"name": "Moradores"}, headers=headers
    )

    duplicate = await contacts_api.client.post(
        "/contact-lists", json={"name": "SINDICOS 2024"}, headers=headers
    )
    renamed_onto = await contacts_api.client.patch(
        f"/contact-lists/{other.json()['id']}", json={"name": "síndicos 2024"}, headers=headers
    )
    renamed = await contacts_api.client.patch(
        f"/contact-lists/{other.json()['id']}", json={"name": "Moradores Bloco A"}, headers=headers
    )
    blank = await contacts_api.client.post("/contact-lists", json={"name": "  "}, headers=headers)

    assert created.status_code == 201
    assert created.json()["name"] == "Síndicos 2024"
    assert created.json()["member_count"] == 0
    assert duplicate.status_code == 409
    assert duplicate.json()["existing_id"] == created.json()["id"]
    assert renamed_onto.status_code == 409
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Moradores Bloco A"
    assert blank.status_code == 422
    assert blank.json()["errors"][0]["field"] == "body.name"
    page = (await contacts_api.client.get("/contact-lists?limit=1", headers=headers)).json()
    rest = (
        await contacts_api.client.get(
            f"/contact-lists?limit=1&cursor={page['next_cursor']}", headers=headers
        )
    ).json()
    assert [item["name"] for item in page["items"] + rest["items"]] == [
        "Síndicos 2024",
        "Moradores Bloco A",
    ]


async def test_bulk_and_single_membership_changes_and_counts(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    ids = [
        (await contacts_api.create(company, phone=f"+5511988880{n:03d}", name=f"c{n}"))["id"]
        for n in range(6)
    ]
    lst = (
        await contacts_api.client.post("/contact-lists", json={"name": "L"}, headers=headers)
    ).json()
    members = f"/contact-lists/{lst['id']}/members"
    await contacts_api.client.delete(f"/contacts/{ids[5]}", headers=headers)
    await contacts_api.client.post(f"/contacts/{ids[1]}/opt-out", headers=headers)
    unknown = "00000000-0000-4000-8000-000000000000"

    added = await contacts_api.client.post(
        members,
        json={"contact_ids": [ids[0], ids[1], ids[2], ids[0], ids[5], unknown]},
        headers=headers,
    )
    again = await contacts_api.client.post(
        members, json={"contact_ids": [ids[2], ids[3]]}, headers=headers
    )
    single = await contacts_api.client.put(f"{members}/{ids[4]}", headers=headers)
    single_again = await contacts_api.client.put(f"{members}/{ids[4]}", headers=headers)
    deleted_one = await contacts_api.client.put(f"{members}/{ids[5]}", headers=headers)

    assert added.json() == {
        "added": [ids[0], ids[1], ids[2]],
        "already_members": [],
        "not_found": [unknown],
        "deleted": [ids[5]],
    }
    assert again.json()["added"] == [ids[3]]
    assert again.json()["already_members"] == [ids[2]]
    assert (single.status_code, single_again.status_code) == (204, 204)
    assert deleted_one.status_code == 409
    page = (await contacts_api.client.get(f"{members}?limit=3", headers=headers)).json()
    rest = (
        await contacts_api.client.get(
            f"{members}?limit=3&cursor={page['next_cursor']}", headers=headers
        )
    ).json()
    # in the order they were added; those added by one request share a time, then by id
    assert [c["id"] for c in page["items"] + rest["items"]] == [*sorted(ids[:3]), ids[3], ids[4]]
    detail = (await contacts_api.client.get(f"/contact-lists/{lst['id']}", headers=headers)).json()
    assert detail["member_count"] == 5
    assert detail["counts"] == {"members": 5, "opted_out": 1, "deleted": 0}

    await contacts_api.client.delete(f"/contacts/{ids[0]}", headers=headers)
    removed = await contacts_api.client.post(
        f"{members}/remove", json={"contact_ids": [ids[1], ids[5], unknown]}, headers=headers
    )
    single_removed = await contacts_api.client.delete(f"{members}/{ids[2]}", headers=headers)
    not_member = await contacts_api.client.delete(f"{members}/{ids[2]}", headers=headers)

    assert removed.json() == {"removed": [ids[1]], "not_members": [ids[5]], "not_found": [unknown]}
    assert (single_removed.status_code, not_member.status_code) == (204, 204)
    detail = (await contacts_api.client.get(f"/contact-lists/{lst['id']}", headers=headers)).json()
    assert detail["member_count"] == 3  # ids 0 (deleted), 3, 4
    assert detail["counts"] == {"members": 2, "opted_out": 0, "deleted": 1}
    of_contact = (
        await contacts_api.client.get(f"/contacts/{ids[3]}/lists", headers=headers)
    ).json()
    assert [item["id"] for item in of_contact["items"]] == [lst["id"]]

    changes = [
        (
            list(e.contact_list_membership_changed.added_contact_ids),
            list(e.contact_list_membership_changed.removed_contact_ids),
        )
        for e in await contacts_api.events(company, "contact_list_membership_changed")
    ]
    assert changes == [
        ([ids[0], ids[1], ids[2]], []),
        ([ids[3]], []),
        ([ids[4]], []),
        ([], [ids[1]]),
        ([], [ids[2]]),
    ]
    events = await contacts_api.events(company, "contact_list_membership_changed")
    assert {e.envelope.company_id for e in events} == {company}
    assert {e.contact_list_membership_changed.list_id for e in events} == {lst["id"]}


async def test_deleting_a_list_keeps_its_contacts_and_reports_them_removed(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321")
    lst = (
        await contacts_api.client.post("/contact-lists", json={"name": "L"}, headers=headers)
    ).json()
    await contacts_api.client.put(
        f"/contact-lists/{lst['id']}/members/{contact['id']}", headers=headers
    )

    by_agent = await contacts_api.client.delete(f"/contact-lists/{lst['id']}", headers=headers)
    by_supervisor = await contacts_api.client.delete(
        f"/contact-lists/{lst['id']}", headers=contacts_api.headers(company, Role.SUPERVISOR)
    )

    assert by_agent.status_code == 403
    assert by_supervisor.status_code == 204
    gone = await contacts_api.client.get(f"/contact-lists/{lst['id']}", headers=headers)
    assert gone.status_code == 404
    still = await contacts_api.client.get(f"/contacts/{contact['id']}", headers=headers)
    assert still.status_code == 200
    last = (await contacts_api.events(company))[-1]
    assert payload_name(last) == "contact_list_membership_changed"
    assert list(last.contact_list_membership_changed.removed_contact_ids) == [contact["id"]]
