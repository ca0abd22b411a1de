"""Opt-out and opt-in by API, with reason and time, and their events; the company's
inbound keywords."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pytest
from esquadrao.contacts.v1 import contacts_pb2 as pb
from esquadrao_common.auth import Role
from esquadrao_common.events import payload_name

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration


async def test_opt_out_and_in_record_reason_time_and_events(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321", name="Ana")
    path = f"/contacts/{contact['id']}"

    out = await contacts_api.client.post(
        f"{path}/opt-out", json={"reason": "pediu por telefone"}, headers=headers
    )
    out_again = await contacts_api.client.post(
        f"{path}/opt-out", json={"reason": "outra"}, headers=headers
    )

    assert out.status_code == 200
    body = out.json()
    assert body["opted_out"] is True
    assert body["opt_out_reason"] == "pediu por telefone"
    opted_out_at = datetime.fromisoformat(body["opted_out_at"])
    assert out_again.json() == body  # the first opt-out's time and reason are kept
    (event,) = await contacts_api.events(company, "contact_opted_out")
    opted = event.contact_opted_out
    assert (opted.contact_id, opted.phone_e164) == (contact["id"], "+5511987654321")
    assert opted.reason == "pediu por telefone"
    assert opted.source == pb.CONSENT_SOURCE_API
    assert opted.opted_out_at.ToDatetime().replace(tzinfo=opted_out_at.tzinfo) == opted_out_at
    assert opted.version == 2

    back_in = await contacts_api.client.post(f"{path}/opt-in", headers=headers)
    in_again = await contacts_api.client.post(f"{path}/opt-in", headers=headers)

    assert back_in.json()["opted_out"] is False
    assert back_in.json()["opted_out_at"] is None
    assert back_in.json()["opt_out_reason"] == ""
    assert in_again.json()["version"] == 3
    (opted_in,) = await contacts_api.events(company, "contact_opted_in")
    assert opted_in.contact_opted_in.version == 3
    assert opted_in.contact_opted_in.source == pb.CONSENT_SOURCE_API
    kinds = [payload_name(e) for e in await contacts_api.events(company)]
    assert kinds == ["contact_created", "contact_opted_out", "contact_opted_in"]


async def test_a_deleted_contact_can_opt_out_and_keeps_it_when_restored(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company)
    contact = await contacts_api.create(company, phone="11987654321")
    path = f"/contacts/{contact['id']}"
    await contacts_api.client.delete(path, headers=headers)

    out = await contacts_api.client.post(f"{path}/opt-out", headers=headers)
    restored = await contacts_api.client.post(f"{path}/restore", headers=headers)

    assert out.status_code == 200
    assert restored.json()["opted_out"] is True
    assert restored.json()["deleted_at"] is None


async def test_a_too_long_reason_is_a_422(contacts_api: ContactsApi) -> None:
    company = contacts_api.new_company()
    contact = await contacts_api.create(company, phone="11987654321")

    response = await contacts_api.client.post(
        f"/contacts/{contact['id']}/opt-out",
        json={"reason": "x" * 501},
        headers=contacts_api.headers(company),
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.opt_out_reason"


async def test_company_keywords_replace_the_defaults_until_reset(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    admin = contacts_api.headers(company, Role.ADMIN)

    default = (await contacts_api.client.get("/consent-keywords", headers=admin)).json()
    put = await contacts_api.client.put(
        "/consent-keywords",
        json={"opt_out_keywords": ["Basta", "chega", "BASTA"], "opt_in_keywords": ["Volto"]},
        headers=admin,
    )
    own = (await contacts_api.client.get("/consent-keywords", headers=admin)).json()
    invalid = await contacts_api.client.put(
        "/consent-keywords",
        json={"opt_out_keywords": ["sair", "!!!"], "opt_in_keywords": ["SAIR"]},
        headers=admin,
    )
    by_agent = await contacts_api.client.put(
        "/consent-keywords",
        json={"opt_out_keywords": [], "opt_in_keywords": []},
        headers=contacts_api.headers(company),
    )
    reset = await contacts_api.client.delete("/consent-keywords", headers=admin)
    after = (await contacts_api.client.get("/consent-keywords", headers=admin)).json()

    assert default["source"] == "default"
    assert {"SAIR", "PARAR", "STOP", "CANCELAR"} <= set(default["opt_out_keywords"])
    assert put.status_code == 200
    assert own == {
        "opt_out_keywords": ["Basta", "chega"],
        "opt_in_keywords": ["Volto"],
        "source": "company",
    }
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} == {
        "body.opt_out_keywords",
        "body.opt_in_keywords",
    }
    assert by_agent.status_code == 403
    assert reset.status_code == 204
    assert after == default
