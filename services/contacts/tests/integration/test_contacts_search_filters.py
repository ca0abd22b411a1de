"""Listing contacts: search by name or phone prefix, and filters by tag, list, opt-out
state and custom field values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from esquadrao_common.auth import Role

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration


async def _names(api: ContactsApi, company: str, query: str) -> list[str]:
    response = await api.client.get(f"/contacts?{query}", headers=api.headers(company))
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


@pytest.fixture
async def people(contacts_api: ContactsApi) -> tuple[str, dict[str, dict[str, Any]]]:
    company = contacts_api.new_company()
    await contacts_api.client.put(
        "/contact-fields/bloco",
        json={"label": "Bloco", "type": "choice", "options": ["A", "B"]},
        headers=contacts_api.headers(company, Role.ADMIN),
    )
    await contacts_api.client.put(
        "/contact-fields/inadimplente",
        json={"label": "Inadimplente", "type": "boolean"},
        headers=contacts_api.headers(company, Role.ADMIN),
    )
    created = {}
    for body in (
        {
            "phone": "11987654321",
            "name": "João Silva",
            "tags": ["VIP"],
            "condominio": "Jardins",
            "custom_fields": {"bloco": "A", "inadimplente": "sim"},
        },
        {
            "phone": "11912345678",
            "name": "Joana Prado",
            "tags": ["novo"],
            "condominio": "jardins",
            "custom_fields": {"bloco": "B"},
        },
        {
            "phone": "21998765432",
            "name": "Pedro Álvares",
            "tags": ["vip", "Síndico"],
            "custom_fields": {"bloco": "A", "inadimplente": "não"},
        },
        {"phone": "+351912345678", "name": "Ana Portuguesa"},
    ):
        contact = await contacts_api.create(company, **body)
        created[contact["name"]] = contact
    return company, created


async def test_name_prefix_ignores_case_and_accents(
    contacts_api: ContactsApi, people: tuple[str, dict[str, Any]]
) -> None:
    company, _ = people
    assert await _names(contacts_api, company, "q=joa") == ["João Silva", "Joana Prado"]
    assert await _names(contacts_api, company, "q=JOÃO") == ["João Silva"]
    assert await _names(contacts_api, company, "q=pedro%20alv") == ["Pedro Álvares"]
    assert await _names(contacts_api, company, "q=silva") == []  # a prefix of the name
    assert await _names(contacts_api, company, "q=%25") == []  # LIKE wildcards are literal


async def test_phone_prefix_with_or_without_country_code(
    contacts_api: ContactsApi, people: tuple[str, dict[str, Any]]
) -> None:
    company, _ = people
    assert await _names(contacts_api, company, "q=%2B5511") == ["João Silva", "Joana Prado"]
    assert await _names(contacts_api, company, "q=(11)%209876") == ["João Silva"]
    assert await _names(contacts_api, company, "q=021%209") == ["Pedro Álvares"]
    assert await _names(contacts_api, company, "q=351") == ["Ana Portuguesa"]
    # the legacy 8-digit spelling of a mobile finds it stored with the 9th digit
    assert await _names(contacts_api, company, "q=11%208765-4321") == ["João Silva"]


async def test_filters_by_tag_opt_out_and_field_values(
    contacts_api: ContactsApi, people: tuple[str, dict[str, Any]]
) -> None:
    company, created = people
    await contacts_api.client.post(
        f"/contacts/{created['Pedro Álvares']['id']}/opt-out", headers=contacts_api.headers(company)
    )

    assert await _names(contacts_api, company, "tag=vip") == ["João Silva", "Pedro Álvares"]
    assert await _names(contacts_api, company, "tag=sindico") == ["Pedro Álvares"]
    assert await _names(contacts_api, company, "opted_out=true") == ["Pedro Álvares"]
    assert await _names(contacts_api, company, "opted_out=false&tag=VIP") == ["João Silva"]
    assert await _names(contacts_api, company, "field=bloco:a") == ["João Silva", "Pedro Álvares"]
    assert await _names(contacts_api, company, "field=inadimplente:true") == ["João Silva"]
    assert await _names(contacts_api, company, "field=bloco:A&field=inadimplente:Não") == [
        "Pedro Álvares"
    ]
    assert await _names(contacts_api, company, "field=condominio:JARDINS") == [
        "João Silva",
        "Joana Prado",
    ]
    assert await _names(contacts_api, company, "q=jo&field=bloco:B") == ["Joana Prado"]


async def test_bad_filters_are_a_422(
    contacts_api: ContactsApi, people: tuple[str, dict[str, Any]]
) -> None:
    company, _ = people
    headers = contacts_api.headers(company)
    for query in ("field=andar:3", "field=bloco", "field=bloco:C", "cursor=nope", "limit=0"):
        response = await contacts_api.client.get(f"/contacts?{query}", headers=headers)
        assert response.status_code == 422, query
        assert response.json()["errors"][0]["field"].startswith("query."), query


async def test_filter_by_list_membership(
    contacts_api: ContactsApi, people: tuple[str, dict[str, Any]]
) -> None:
    company, created = people
    headers = contacts_api.headers(company)
    listed = (
        await contacts_api.client.post("/contact-lists", json={"name": "Síndicos"}, headers=headers)
    ).json()
    await contacts_api.client.post(
        f"/contact-lists/{listed['id']}/members",
        json={"contact_ids": [created["Pedro Álvares"]["id"], created["Joana Prado"]["id"]]},
        headers=headers,
    )

    assert await _names(contacts_api, company, f"list_id={listed['id']}") == [
        "Joana Prado",
        "Pedro Álvares",
    ]
    assert await _names(contacts_api, company, f"list_id={listed['id']}&tag=vip") == [
        "Pedro Álvares"
    ]
