"""Company A's token never sees nor changes company B's contacts, lists, fields or
keywords: every endpoint kind answers 404 for B's ids (as for ids that do not exist),
listings and searches show only A's rows, and bulk bodies report B's ids as not found."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from esquadrao_common.auth import Role

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration


async def test_another_companys_ids_are_404_everywhere(contacts_api: ContactsApi) -> None:
    a, b = contacts_api.new_company(), contacts_api.new_company()
    b_headers = contacts_api.headers(b, Role.ADMIN)
    await contacts_api.client.put(
        "/contact-fields/bloco", json={"label": "Bloco", "type": "text"}, headers=b_headers
    )
    b_contact = await contacts_api.create(b, phone="11987654321", name="Secreto")
    b_list = (
        await contacts_api.client.post("/contact-lists", json={"name": "B"}, headers=b_headers)
    ).json()
    await contacts_api.client.put(
        f"/contact-lists/{b_list['id']}/members/{b_contact['id']}", headers=b_headers
    )
    a_contact = await contacts_api.create(a, phone="11912345678", name="Meu")
    a_list = (
        await contacts_api.client.post(
            "/contact-lists", json={"name": "A"}, headers=contacts_api.headers(a)
        )
    ).json()
    events_of_b = await contacts_api.events(b)

    as_a = contacts_api.headers(a, Role.ADMIN)
    contact, lst = f"/contacts/{b_contact['id']}", f"/contact-lists/{b_list['id']}"
    member_body = {"contact_ids": [b_contact["id"]]}
    requests = [
        ("GET", contact, None),
        ("PATCH", contact, {"name": "hacked"}),
        ("DELETE", contact, None),
        ("POST", f"{contact}/restore", None),
        ("POST", f"{contact}/opt-out", {"reason": "x"}),
        ("POST", f"{contact}/opt-in", None),
        ("GET", f"{contact}/lists", None),
        ("GET", lst, None),
        ("PATCH", lst, {"name": "hacked"}),
        ("DELETE", lst, None),
        ("GET", f"{lst}/members", None),
        ("POST", f"{lst}/members", {"contact_ids": [a_contact["id"]]}),
        ("POST", f"{lst}/members/remove", member_body),
        ("PUT", f"{lst}/members/{a_contact['id']}", None),
        ("DELETE", f"{lst}/members/{b_contact['id']}", None),
        ("PUT", f"/contact-lists/{a_list['id']}/members/{b_contact['id']}", None),
        ("DELETE", f"/contact-lists/{a_list['id']}/members/{b_contact['id']}", None),
        ("GET", "/contact-fields/bloco", None),
        ("DELETE", "/contact-fields/bloco", None),
    ]
    for method, path, body in requests:
        response = await contacts_api.client.request(method, path, json=body, headers=as_a)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["type"] == "https://esquadrao.dev/problems/not-found"

    added = await contacts_api.client.post(
        f"/contact-lists/{a_list['id']}/members", json=member_body, headers=as_a
    )
    assert added.json()["not_found"] == [b_contact["id"]]
    removed = await contacts_api.client.post(
        f"/contact-lists/{a_list['id']}/members/remove", json=member_body, headers=as_a
    )
    assert removed.json()["not_found"] == [b_contact["id"]]
    for query in ("", "?q=secr", "?q=11987", "?deleted=true", f"?list_id={b_list['id']}"):
        listed = await contacts_api.client.get(f"/contacts{query}", headers=as_a)
        assert [item["id"] for item in listed.json()["items"]] in ([], [a_contact["id"]]), query
    lists = await contacts_api.client.get("/contact-lists", headers=as_a)
    assert [item["id"] for item in lists.json()["items"]] == [a_list["id"]]
    assert (await contacts_api.client.get("/contact-fields", headers=as_a)).json() == []
    await contacts_api.client.put(
        "/consent-keywords",
        json={"opt_out_keywords": ["BASTA"], "opt_in_keywords": []},
        headers=as_a,
    )
    b_keywords = (await contacts_api.client.get("/consent-keywords", headers=b_headers)).json()
    assert b_keywords["source"] == "default"

    # A's requests changed nothing of B's, and B still sees all of it
    assert await contacts_api.events(b) == events_of_b
    same = await contacts_api.client.get(f"/contacts/{b_contact['id']}", headers=b_headers)
    assert same.json() == b_contact
    members = await contacts_api.client.get(
        f"/contact-lists/{b_list['id']}/members", headers=b_headers
    )
    assert [item["id"] for item in members.json()["items"]] == [b_contact["id"]]


async def test_the_same_phone_in_two_companies_is_two_contacts(contacts_api: ContactsApi) -> None:
    a, b = contacts_api.new_company(), contacts_api.new_company()

    in_a = await contacts_api.create(a, phone="11987654321", name="A")
    in_b = await contacts_api.create(b, phone="+5511987654321", name="B")

    assert in_a["id"] != in_b["id"]
    assert [e.envelope.company_id for e in await contacts_api.events(b)] == [b]
