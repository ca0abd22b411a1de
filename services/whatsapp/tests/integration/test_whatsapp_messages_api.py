"""Sends through the API on Postgres: ``POST /v1/messages`` stages the ``SendMessage`` on
the right topic with the right key and envelope, validates with field errors, checks the
session, and is idempotent once the ledger has the message id; reading and listing
ledger entries, company by company.

The worker's side is played by :func:`whatsapp.service_layer.messages.accept_command` on
the staged record, as the send worker calls it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from esquadrao_common.auth import Role
from esquadrao_common.events import event_type_of
from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.ledger import Priority
from whatsapp.service_layer import messages as ledger

if TYPE_CHECKING:
    from conftest import Staged, WhatsappApi

pytestmark = pytest.mark.integration


def text(to: str = "+5511987654321", **fields: Any) -> dict[str, Any]:
    return {"to": to, "text": {"body": "Olá! Seu pedido saiu para entrega."}, **fields}


def field_errors(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {error["field"]: error["message"] for error in response.json()["errors"]}


async def sends(api: WhatsappApi) -> list[Staged]:
    return [s for s in await api.outbox() if s.payload == "send_message"]


async def accept_staged(api: WhatsappApi) -> None:
    """Take every staged send into the ledger, as the worker owning its key would."""
    async with api.uow() as uow:
        for staged in await sends(api):
            priority = Priority.BULK if staged.topic == BULK_TOPIC else Priority.INTERACTIVE
            await ledger.accept_command(
                uow,
                staged.record.send_message,
                staged.record.envelope,
                priority,
                staged.topic,
                datetime.now(UTC),
            )
        await uow.commit()


async def test_a_send_is_staged_for_the_sessions_worker(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    session = await whatsapp_api.create_session(company)
    message_id = str(uuid.uuid4())
    not_after = datetime.now(UTC) + timedelta(hours=1)

    response = await whatsapp_api.client.post(
        "/v1/messages",
        json=text(
            "55 (11) 98765-4321",
            message_id=message_id,
            session_id=session["id"],
            not_after=not_after.isoformat(),
            origin={"kind": "ticket", "id": "t-1", "item_id": "m-9"},
            reply_to="wamid.quoted",
        ),
        headers=whatsapp_api.headers(company, Role.AGENT),
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"message_id": message_id, "status": "accepted"}
    assert response.headers["Location"] == f"/v1/messages/{message_id}"
    (staged,) = await sends(whatsapp_api)
    assert staged.topic == INTERACTIVE_TOPIC
    assert staged.key == session["id"]
    envelope = staged.record.envelope
    assert envelope.company_id == company
    assert envelope.producer == "whatsapp"
    assert (
        envelope.event_type == event_type_of(staged.record) == "esquadrao.whatsapp.v1.SendMessage"
    )
    send = staged.record.send_message
    assert send.message_id == message_id
    assert send.session_id == session["id"]
    assert send.to_phone_e164 == "+5511987654321"
    assert send.text.body.startswith("Olá")
    assert send.not_after.ToDatetime(tzinfo=UTC) == not_after
    assert (send.origin.kind, send.origin.id, send.origin.item_id) == ("ticket", "t-1", "m-9")
    assert send.reply_to == "wamid.quoted"


async def test_bulk_goes_to_the_bulk_topic_and_pools_are_keyed_by_pool(
    whatsapp_api: WhatsappApi,
) -> None:
    company = whatsapp_api.new_company()
    await whatsapp_api.create_session(company, pool_id="campanhas")
    headers = whatsapp_api.headers(company)

    bulk = await whatsapp_api.client.post(
        "/v1/messages",
        json={
            "to": "+5511900000001",
            "pool_id": "campanhas",
            "priority": "bulk",
            "template": {"name": "promo", "language": "pt_BR", "body_parameters": ["Ana"]},
        },
        headers=headers,
    )
    media = await whatsapp_api.client.post(
        "/v1/messages",
        json={
            "to": "+5511900000002",
            "pool_id": "campanhas",
            "media": {
                "kind": "document",
                "ref": "https://example.com/boleto.pdf",
                "filename": "b.pdf",
            },
        },
        headers=headers,
    )
    unknown_pool = await whatsapp_api.client.post(
        "/v1/messages", json=text(pool_id="nope"), headers=headers
    )

    assert bulk.status_code == 202, bulk.text
    assert media.status_code == 202, media.text
    assert unknown_pool.status_code == 404
    first, second = await sends(whatsapp_api)
    assert (first.topic, first.key) == (BULK_TOPIC, "campanhas")
    assert first.record.send_message.template.body_parameters == ["Ana"]
    assert str(uuid.UUID(first.record.send_message.message_id)) == bulk.json()["message_id"]
    assert (second.topic, second.key) == (INTERACTIVE_TOPIC, "campanhas")
    assert second.record.send_message.media.ref == "https://example.com/boleto.pdf"


async def test_invalid_sends_are_422_naming_the_field(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    session_id = (await whatsapp_api.create_session(company))["id"]
    headers = whatsapp_api.headers(company)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        (text("call me", session_id=session_id), "body.to"),
        (text("+0 11 1234", session_id=session_id), "body.to"),
        (text("123", session_id=session_id), "body.to"),
        (text(), "body.session_id"),
        (text(session_id=session_id, pool_id="p"), "body.pool_id"),
        (text(session_id="not-a-uuid"), "body.session_id"),
        (text(session_id=session_id, message_id="m-1"), "body.message_id"),
        ({"to": "+5511987654321", "session_id": session_id}, "body.text"),
        (
            {**text(session_id=session_id), "media": {"kind": "image", "ref": "https://x/y.png"}},
            "body.media",
        ),
        (
            {
                "to": "+5511987654321",
                "session_id": session_id,
                "media": {"kind": "audio", "ref": "https://x/a.ogg", "caption": "hi"},
            },
            "body.media",
        ),
        ({"to": "+5511987654321", "session_id": session_id, "text": {"body": "  "}}, "body.text"),
        (text(session_id=session_id, not_after=past), "body.not_after"),
        (text(session_id=session_id, not_after="2030-01-01T10:00:00"), "body.not_after"),
        (text(session_id=session_id, priority="urgent"), "body.priority"),
        (text(session_id=session_id, subject="x"), "body.subject"),
    ]
    for body, field in cases:
        response = await whatsapp_api.client.post("/v1/messages", json=body, headers=headers)
        assert field in field_errors(response), (body, response.json())
    assert await sends(whatsapp_api) == []


async def test_the_session_must_be_the_companys_and_live(whatsapp_api: WhatsappApi) -> None:
    company, other = whatsapp_api.new_company(), whatsapp_api.new_company()
    mine = await whatsapp_api.create_session(company)
    theirs = await whatsapp_api.create_session(other)
    headers = whatsapp_api.headers(company)
    await whatsapp_api.client.delete(f"/v1/sessions/{mine['id']}", headers=headers)

    foreign = await whatsapp_api.client.post(
        "/v1/messages", json=text(session_id=theirs["id"]), headers=headers
    )
    missing = await whatsapp_api.client.post(
        "/v1/messages", json=text(session_id=str(uuid.uuid4())), headers=headers
    )
    deleted = await whatsapp_api.client.post(
        "/v1/messages", json=text(session_id=mine["id"]), headers=headers
    )

    assert foreign.status_code == 404
    assert missing.status_code == 404
    assert deleted.status_code == 409
    assert deleted.json()["type"] == "https://esquadrao.dev/problems/session-deleted"
    assert await sends(whatsapp_api) == []


async def test_a_known_message_id_answers_the_message_and_stages_nothing(
    whatsapp_api: WhatsappApi,
) -> None:
    company, other = whatsapp_api.new_company(), whatsapp_api.new_company()
    session = await whatsapp_api.create_session(company)
    message_id = str(uuid.uuid4())
    body = text(message_id=message_id, session_id=session["id"], origin={"kind": "ticket"})
    first = await whatsapp_api.client.post(
        "/v1/messages", json=body, headers=whatsapp_api.headers(company)
    )
    assert first.status_code == 202
    await accept_staged(whatsapp_api)

    retry = await whatsapp_api.client.post(
        "/v1/messages", json=body, headers=whatsapp_api.headers(company)
    )
    stolen = await whatsapp_api.client.post(
        "/v1/messages",
        json=text(
            message_id=message_id, session_id=(await whatsapp_api.create_session(other))["id"]
        ),
        headers=whatsapp_api.headers(other),
    )

    assert retry.status_code == 200, retry.text
    message = retry.json()
    assert message["message_id"] == message_id
    assert message["status"] == "queued"
    assert message["session_id"] == session["id"]
    assert message["to"] == "+5511987654321"
    assert message["origin"] == {"kind": "ticket", "id": "", "item_id": ""}
    assert stolen.status_code == 409
    assert "queued" not in stolen.text
    assert len(await sends(whatsapp_api)) == 1


async def test_messages_are_read_and_listed_per_company(whatsapp_api: WhatsappApi) -> None:
    company, other = whatsapp_api.new_company(), whatsapp_api.new_company()
    await whatsapp_api.unlimited(company)
    headers = whatsapp_api.headers(company, Role.AGENT)
    first = await whatsapp_api.create_session(company)
    second = await whatsapp_api.create_session(company)
    ids = []
    for i in range(5):
        session = first if i % 2 == 0 else second
        response = await whatsapp_api.client.post(
            "/v1/messages",
            json=text(f"+55119000000{i:02d}", session_id=session["id"]),
            headers=headers,
        )
        ids.append(response.json()["message_id"])
    await accept_staged(whatsapp_api)

    one = await whatsapp_api.client.get(f"/v1/messages/{ids[0]}", headers=headers)
    assert one.status_code == 200
    assert one.json()["status"] == "queued"
    assert one.json()["attempts"] == 0
    assert one.json()["error"] is None
    hidden = await whatsapp_api.client.get(
        f"/v1/messages/{ids[0]}", headers=whatsapp_api.headers(other)
    )
    assert hidden.status_code == 404
    assert (await whatsapp_api.client.get("/v1/messages/nope", headers=headers)).status_code == 404

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "session_id": first["id"]}
        if cursor:
            params["cursor"] = cursor
        page = (
            await whatsapp_api.client.get("/v1/messages", params=params, headers=headers)
        ).json()
        seen.extend(item["message_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[0], ids[2], ids[4]]
    queued = (
        await whatsapp_api.client.get("/v1/messages", params={"status": "queued"}, headers=headers)
    ).json()
    assert [item["message_id"] for item in queued["items"]] == ids
    failed = (
        await whatsapp_api.client.get("/v1/messages", params={"status": "failed"}, headers=headers)
    ).json()
    assert failed == {"items": [], "next_cursor": None}
    nothing = await whatsapp_api.client.get("/v1/messages", headers=whatsapp_api.headers(other))
    assert nothing.json() == {"items": [], "next_cursor": None}
    assert "query.status" in field_errors(
        await whatsapp_api.client.get("/v1/messages", params={"status": "lost"}, headers=headers)
    )
