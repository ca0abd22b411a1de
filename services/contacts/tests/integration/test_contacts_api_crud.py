"""Contacts through the API on Postgres: create, 409 on duplicates, upsert, partial update,
soft delete and restore, bulk upsert, custom fields; each change's event in the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.auth import Role
from esquadrao_common.events import payload_name

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


async def test_create_normalizes_and_publishes_the_full_state(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    response = await contacts_api.client.post(
        "/contacts",
        json={
            "phone": "(11) 8765-4321",
            "name": "  Maria   da Silva ",
            "email": "Maria@Example.COM",
            "tags": ["VIP", "vip", "síndica"],
            "condominio": "Edifício Azul",
            "cargo": "síndica",
        },
        headers=contacts_api.headers(company),
    )

    assert response.status_code == 201, response.text
    contact = response.json()
    assert response.headers["Location"] == f"/contacts/{contact['id']}"
    assert contact["phone_e164"] == "+5511987654321"
    assert contact["name"] == "Maria da Silva"
    assert contact["email"] == "Maria@example.com"
    assert contact["tags"] == ["VIP", "síndica"]
    assert contact["version"] == 1
    assert contact["deleted_at"] is None
    (event,) = await contacts_api.events(company)
    assert payload_name(event) == "contact_created"
    assert event.envelope.company_id == company
    assert event.envelope.producer == "contacts"
    published = event.contact_created.contact
    assert published.id == contact["id"]
    assert published.phone_e164 == "+5511987654321"
    assert published.condominio == "Edifício Azul"
    assert list(published.tags) == ["VIP", "síndica"]
    assert published.version == 1

    fetched = await contacts_api.client.get(
        f"/contacts/{contact['id']}", headers=contacts_api.headers(company)
    )
    assert fetched.status_code == 200
    assert fetched.json() == contact


async def test_a_phone_the_company_has_is_a_409_with_the_existing_id(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    first = await contacts_api.create(company, phone="+55 11 98765-4321", name="Ana")

    again = await contacts_api.client.post(
        "/contacts",
        json={"phone": "011 8765 4321", "name": "Outra"},
        headers=contacts_api.headers(company),
    )

    assert again.status_code == 409
    assert again.headers["content-type"].startswith(PROBLEM)
    problem = again.json()
    assert problem["type"] == "https://esquadrao.dev/problems/conflict"
    assert problem["existing_id"] == first["id"]
    assert problem["existing_deleted"] is False
    assert len(await contacts_api.events(company)) == 1


async def test_upsert_creates_then_merges_into_the_contact_with_the_phone(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)

    created = await contacts_api.client.post(
        "/contacts?upsert=true",
        json={"phone": "11987654321", "name": "Ana", "tags": ["a"], "email": "ana@x.com"},
        headers=headers,
    )
    merged = await contacts_api.client.post(
        "/contacts?upsert=true",
        json={"phone": "+5511987654321", "name": "Ana Souza", "tags": ["b"]},
        headers=headers,
    )
    unchanged = await contacts_api.client.post(
        "/contacts?upsert=true", json={"phone": "11987654321"}, headers=headers
    )

    assert created.status_code == 201
    assert merged.status_code == 200
    assert unchanged.status_code == 200
    body = merged.json()
    assert body["id"] == created.json()["id"]
    assert body["name"] == "Ana Souza"
    assert body["email"] == "ana@x.com"  # not given: kept
    assert body["tags"] == ["a", "b"]  # added, never removed
    assert body["version"] == 2
    assert unchanged.json()["version"] == 2
    kinds = [payload_name(e) for e in await contacts_api.events(company)]
    assert kinds == ["contact_created", "contact_updated"]


async def test_partial_update_changes_only_what_is_given(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(
        company, phone="11987654321", name="Ana", email="ana@x.com", cargo="síndica"
    )

    response = await contacts_api.client.patch(
        f"/contacts/{contact['id']}",
        json={"name": "Ana Lima", "email": None, "tags": ["novo"]},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["email"], body["cargo"]) == ("Ana Lima", "", "síndica")
    assert body["tags"] == ["novo"]
    assert body["version"] == 2
    (event,) = await contacts_api.events(company, "contact_updated")
    assert list(event.contact_updated.changed_fields) == ["name", "email", "tags"]
    assert event.contact_updated.contact.version == 2
    assert event.contact_updated.contact.cargo == "síndica"

    same = await contacts_api.client.patch(
        f"/contacts/{contact['id']}", json={"name": "Ana Lima"}, headers=headers
    )
    assert same.json()["version"] == 2
    assert len(await contacts_api.events(company, "contact_updated")) == 1


async def test_changing_the_phone_to_another_contacts_is_a_409(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    ana = await contacts_api.create(company, phone="11987654321")
    bia = await contacts_api.create(company, phone="11912345678")

    response = await contacts_api.client.patch(
        f"/contacts/{bia['id']}",
        json={"phone": "+55 11 98765 4321"},
        headers=contacts_api.headers(company),
    )

    assert response.status_code == 409
    assert response.json()["existing_id"] == ana["id"]


async def test_invalid_input_is_a_422_naming_each_field(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()

    response = await contacts_api.client.post(
        "/contacts",
        json={"phone": "0800 123 4567", "email": "nope", "custom_fields": {"bloco": "A"}},
        headers=contacts_api.headers(company),
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    fields = {error["field"]: error["type"] for error in response.json()["errors"]}
    assert fields == {
        "body.phone": "invalid",
        "body.email": "invalid",
        "body.custom_fields.bloco": "unknown_field",
    }
    unknown_member = await contacts_api.client.post(
        "/contacts",
        json={"phone": "11987654321", "nome": "x"},
        headers=contacts_api.headers(company),
    )
    assert unknown_member.status_code == 422
    assert unknown_member.json()["errors"][0]["field"] == "body.nome"


async def test_soft_delete_keeps_the_contact_and_restore_brings_it_back(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321", name="Ana")

    deleted = await contacts_api.client.delete(f"/contacts/{contact['id']}", headers=headers)
    again = await contacts_api.client.delete(f"/contacts/{contact['id']}", headers=headers)

    assert deleted.status_code == 204
    assert again.status_code == 204
    fetched = (await contacts_api.client.get(f"/contacts/{contact['id']}", headers=headers)).json()
    assert fetched["deleted_at"] is not None
    assert fetched["version"] == 2
    live = (await contacts_api.client.get("/contacts", headers=headers)).json()
    trash = (await contacts_api.client.get("/contacts?deleted=true", headers=headers)).json()
    assert live["items"] == []
    assert [item["id"] for item in trash["items"]] == [contact["id"]]
    change = await contacts_api.client.patch(
        f"/contacts/{contact['id']}", json={"name": "x"}, headers=headers
    )
    assert change.status_code == 409
    assert change.json()["type"] == "https://esquadrao.dev/problems/contact-deleted"
    recreate = await contacts_api.client.post(
        "/contacts", json={"phone": "11987654321"}, headers=headers
    )
    assert recreate.status_code == 409
    assert recreate.json()["existing_id"] == contact["id"]
    assert recreate.json()["existing_deleted"] is True

    restored = await contacts_api.client.post(f"/contacts/{contact['id']}/restore", headers=headers)

    assert restored.status_code == 200
    assert restored.json()["deleted_at"] is None
    assert restored.json()["version"] == 3
    events = await contacts_api.events(company)
    assert [payload_name(e) for e in events] == [
        "contact_created",
        "contact_deleted",
        "contact_restored",
    ]
    assert events[1].contact_deleted.version == 2
    assert events[1].contact_deleted.contact_id == contact["id"]
    assert events[2].contact_restored.contact.version == 3
    assert events[2].contact_restored.contact.name == "Ana"


async def test_upsert_restores_a_deleted_contact(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321", name="Ana")
    await contacts_api.client.delete(f"/contacts/{contact['id']}", headers=headers)

    response = await contacts_api.client.post(
        "/contacts?upsert=true", json={"phone": "11987654321", "cargo": "zelador"}, headers=headers
    )

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == contact["id"]
    assert body["deleted_at"] is None
    assert (body["name"], body["cargo"], body["version"]) == ("Ana", "zelador", 4)
    kinds = [payload_name(e) for e in await contacts_api.events(company)]
    assert kinds[-2:] == ["contact_restored", "contact_updated"]


async def test_bulk_upsert_applies_valid_items_and_reports_invalid_ones(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    existing = await contacts_api.create(company, phone="11987654321", name="Ana")

    response = await contacts_api.client.post(
        "/contacts/bulk",
        json={
            "contacts": [
                {"phone": "11987654321", "name": "Ana Lima"},
                {"phone": "not a phone"},
                {"phone": "21998765432", "name": "Bia", "opted_out": True},
                {"phone": "11987654321"},
            ]
        },
        headers=headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (1, 1, 1, 1)
    items = body["items"]
    assert [item["outcome"] for item in items] == ["updated", "rejected", "created", "unchanged"]
    assert items[0]["id"] == existing["id"] == items[3]["id"]
    assert items[1]["errors"][0]["field"] == "body.contacts.1.phone"
    bia = (await contacts_api.client.get(f"/contacts/{items[2]['id']}", headers=headers)).json()
    assert bia["opted_out"] is True
    assert bia["opted_out_at"] is not None


async def test_custom_fields_are_validated_by_their_definition(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    admin = contacts_api.headers(company, Role.ADMIN)
    defined = await contacts_api.client.put(
        "/contact-fields/bloco",
        json={"label": "Bloco", "type": "choice", "options": ["A", "B"]},
        headers=admin,
    )
    await contacts_api.client.put(
        "/contact-fields/vencimento", json={"label": "Vencimento", "type": "date"}, headers=admin
    )
    assert defined.status_code == 201, defined.text

    contact = await contacts_api.create(
        company, phone="11987654321", custom_fields={"bloco": "b", "vencimento": "05/03/2024"}
    )
    invalid = await contacts_api.client.post(
        "/contacts",
        json={"phone": "11912345678", "custom_fields": {"bloco": "C"}},
        headers=contacts_api.headers(company),
    )
    removed = await contacts_api.client.patch(
        f"/contacts/{contact['id']}",
        json={"custom_fields": {"bloco": None}},
        headers=contacts_api.headers(company),
    )

    assert contact["custom_fields"] == {"bloco": "B", "vencimento": "2024-03-05"}
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "body.custom_fields.bloco"
    assert removed.json()["custom_fields"] == {"vencimento": "2024-03-05"}
    (update,) = await contacts_api.events(company, "contact_updated")
    assert list(update.contact_updated.changed_fields) == ["custom_fields.bloco"]


async def test_custom_field_definitions_keep_their_type_and_values(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    admin = contacts_api.headers(company, Role.ADMIN)
    await contacts_api.client.put(
        "/contact-fields/andar", json={"label": "Andar", "type": "number"}, headers=admin
    )
    await contacts_api.create(company, phone="11987654321", custom_fields={"andar": "3"})

    relabelled = await contacts_api.client.put(
        "/contact-fields/andar", json={"label": "Andar do apto", "type": "number"}, headers=admin
    )
    retyped = await contacts_api.client.put(
        "/contact-fields/andar", json={"label": "Andar", "type": "text"}, headers=admin
    )
    in_use = await contacts_api.client.delete("/contact-fields/andar", headers=admin)
    by_agent = await contacts_api.client.put(
        "/contact-fields/x",
        json={"label": "X", "type": "text"},
        headers=contacts_api.headers(company),
    )
    reserved = await contacts_api.client.put(
        "/contact-fields/name", json={"label": "Nome", "type": "text"}, headers=admin
    )
    listed = await contacts_api.client.get("/contact-fields", headers=admin)

    assert relabelled.status_code == 200
    assert relabelled.json()["label"] == "Andar do apto"
    assert retyped.status_code == 409
    assert in_use.status_code == 409
    assert in_use.json()["contacts_with_values"] == 1
    assert by_agent.status_code == 403
    assert reserved.status_code == 422
    assert reserved.json()["errors"][0]["field"] == "body.key"
    assert listed.json() == [
        {"key": "andar", "label": "Andar do apto", "type": "number", "options": []}
    ]


async def test_events_carry_the_version_of_every_change(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321", name="Ana")
    path = f"/contacts/{contact['id']}"

    await contacts_api.client.patch(path, json={"name": "Ana L"}, headers=headers)
    await contacts_api.client.post(f"{path}/opt-out", json={"reason": "pediu"}, headers=headers)
    await contacts_api.client.post(f"{path}/opt-in", headers=headers)
    await contacts_api.client.delete(path, headers=headers)
    await contacts_api.client.post(f"{path}/restore", headers=headers)

    versions = [_version(event) for event in await contacts_api.events(company)]
    assert versions == [1, 2, 3, 4, 5, 6]
    final = (await contacts_api.client.get(path, headers=headers)).json()
    assert final["version"] == 6


def _version(event: ContactEvent) -> int:
    payload = getattr(event, payload_name(event))
    if hasattr(payload, "contact") and payload.HasField("contact"):
        return int(payload.contact.version)
    return int(payload.version)
