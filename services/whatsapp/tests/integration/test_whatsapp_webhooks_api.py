"""Cloud API webhooks through the API on Postgres: the subscription handshake, signatures
over the raw body (valid, forged, missing, re-serialized), receipts moving ledger entries
forward once, inbound messages published once however often Meta delivers them, and
items about other numbers kept away from the session."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from whatsapp.adapters.cloud_webhooks import sign
from whatsapp.domain.events import EVENTS_TOPIC
from whatsapp.domain.ledger import LedgerEntry, Priority
from whatsapp.domain.messages import MessageStatus

if TYPE_CHECKING:
    from conftest import WhatsappApi

pytestmark = pytest.mark.integration

NUMBER = "106540352242922"
APP_SECRET = "6f1c2a9d4e8b7c3f5a0d1e2b3c4d5e6f"
VERIFY_TOKEN = "meu-token-de-verificacao"
CUSTOMER = "16505551234"


def payload(*, number: str = NUMBER, messages: Any = (), statuses: Any = ()) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": number},
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Sheena"}, "wa_id": CUSTOMER}]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def inbound(provider_id: str, body: str = "Does it come in another color?") -> dict[str, Any]:
    return {
        "from": CUSTOMER,
        "id": provider_id,
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": body},
    }


def receipt(provider_id: str, status: str, timestamp: int = 1750263775) -> dict[str, Any]:
    return {
        "id": provider_id,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": CUSTOMER,
    }


def raw(document: dict[str, Any]) -> bytes:
    """The body as Meta sends it: compact JSON with escaped non-ASCII."""
    return json.dumps(document, separators=(",", ":")).encode()


async def deliver(
    api: WhatsappApi, session_id: str, body: bytes, signature: str | None = "sign"
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        signature = sign(body, APP_SECRET)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return await api.client.post(f"/v1/webhooks/cloud/{session_id}", content=body, headers=headers)


async def cloud_session(api: WhatsappApi, number: str = NUMBER) -> dict[str, Any]:
    company = api.new_company()
    return await api.create_session(
        company,
        provider="cloud",
        credentials={
            "access_token": "EAAG-token",
            "phone_number_id": number,
            "app_secret": APP_SECRET,
            "verify_token": VERIFY_TOKEN,
        },
    )


async def sent_entry(api: WhatsappApi, session: dict[str, Any], provider_id: str) -> str:
    """A ledger entry the provider accepted as ``provider_id``; its message id."""
    now = datetime.now(UTC)
    entry = LedgerEntry(
        message_id=str(uuid.uuid4()),
        company_id=await _company_of(api, session["id"]),
        session_id=session["id"],
        to_phone_e164=f"+{CUSTOMER}",
        command=b"",
        priority=Priority.INTERACTIVE,
        status=MessageStatus.SENT,
        queued_at=now,
        updated_at=now,
        provider_message_id=provider_id,
    )
    async with api.uow() as uow:
        await uow.ledger.add(entry)
        await uow.commit()
    return entry.message_id


async def _company_of(api: WhatsappApi, session_id: str) -> str:
    async with api.uow() as uow:
        session = await uow.sessions.get(session_id)
    assert session is not None
    return session.company_id


async def status_of(api: WhatsappApi, message_id: str) -> MessageStatus:
    async with api.uow() as uow:
        entry = await uow.ledger.get(message_id)
    assert entry is not None
    return entry.status


async def events(api: WhatsappApi, payload_name: str) -> list[Any]:
    return [s for s in await api.outbox(topic=EVENTS_TOPIC) if s.payload == payload_name]


async def test_the_handshake_answers_only_the_sessions_verify_token(
    whatsapp_api: WhatsappApi,
) -> None:
    session = await cloud_session(whatsapp_api)
    url = f"/v1/webhooks/cloud/{session['id']}"

    def query(mode: str = "subscribe", token: str = VERIFY_TOKEN) -> dict[str, str]:
        return {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": "1158201444"}

    good = await whatsapp_api.client.get(url, params=query())
    wrong_token = await whatsapp_api.client.get(url, params=query(token="guess"))
    wrong_mode = await whatsapp_api.client.get(url, params=query(mode="unsubscribe"))
    unknown = await whatsapp_api.client.get(f"/v1/webhooks/cloud/{uuid.uuid4()}", params=query())

    assert good.status_code == 200
    assert good.headers["content-type"].startswith("text/plain")
    assert good.text == "1158201444"
    assert wrong_token.status_code == 403
    assert wrong_token.headers["content-type"] == "application/problem+json"
    assert VERIFY_TOKEN not in wrong_token.text
    assert wrong_mode.status_code == 403
    assert unknown.status_code == 404


async def test_only_the_exact_signed_bytes_are_accepted(whatsapp_api: WhatsappApi) -> None:
    session = await cloud_session(whatsapp_api)
    document = payload(messages=[inbound("wamid.1", "Olá, ação!")])
    body = raw(document)
    reserialized = json.dumps(document, ensure_ascii=False, indent=1).encode()
    assert json.loads(reserialized) == json.loads(body)

    forged = await deliver(whatsapp_api, session["id"], body, sign(body, "not-the-app-secret"))
    missing = await deliver(whatsapp_api, session["id"], body, None)
    malformed_header = await deliver(whatsapp_api, session["id"], body, "sha1=abc")
    moved = await deliver(whatsapp_api, session["id"], reserialized, sign(body, APP_SECRET))

    for response in (forged, missing, malformed_header, moved):
        assert response.status_code == 401, response.text
        problem = response.json()
        assert problem["type"] == "https://esquadrao.dev/problems/invalid-signature"
        assert "WWW-Authenticate" in response.headers
    assert await events(whatsapp_api, "message_received") == []

    accepted = await deliver(whatsapp_api, session["id"], body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"received": 1, "statuses": 0, "ignored": 0}


async def test_a_status_webhook_moves_the_entry_forward_once(whatsapp_api: WhatsappApi) -> None:
    session = await cloud_session(whatsapp_api)
    message_id = await sent_entry(whatsapp_api, session, "wamid.out-1")
    delivered = raw(payload(statuses=[receipt("wamid.out-1", "delivered")]))

    first = await deliver(whatsapp_api, session["id"], delivered)
    again = await deliver(whatsapp_api, session["id"], delivered)
    late = await deliver(
        whatsapp_api, session["id"], raw(payload(statuses=[receipt("wamid.out-1", "sent")]))
    )

    assert first.json() == {"received": 0, "statuses": 1, "ignored": 0}
    assert again.json() == {"received": 0, "statuses": 0, "ignored": 0}
    assert late.json()["statuses"] == 0
    assert await status_of(whatsapp_api, message_id) is MessageStatus.DELIVERED
    (change,) = await events(whatsapp_api, "message_status_changed")
    assert change.record.message_status_changed.message_id == message_id
    assert change.key == f"{session['id']}:+{CUSTOMER}"

    read = await deliver(
        whatsapp_api, session["id"], raw(payload(statuses=[receipt("wamid.out-1", "read")]))
    )
    assert read.json()["statuses"] == 1
    assert await status_of(whatsapp_api, message_id) is MessageStatus.READ


async def test_an_inbound_message_is_published_once_however_often_delivered(
    whatsapp_api: WhatsappApi,
) -> None:
    session = await cloud_session(whatsapp_api)
    body = raw(payload(messages=[inbound("wamid.in-1"), inbound("wamid.in-2", "second")]))

    first = await deliver(whatsapp_api, session["id"], body)
    second = await deliver(whatsapp_api, session["id"], body)

    assert first.json()["received"] == 2
    assert second.json()["received"] == 0
    received = await events(whatsapp_api, "message_received")
    assert [r.record.message_received.provider_message_id for r in received] == [
        "wamid.in-1",
        "wamid.in-2",
    ]
    event = received[0]
    assert event.key == f"{session['id']}:+{CUSTOMER}"
    assert event.record.message_received.session_id == session["id"]
    assert event.record.envelope.company_id == await _company_of(whatsapp_api, session["id"])
    assert event.record.message_received.text == "Does it come in another color?"


async def test_items_of_other_numbers_and_sessions_are_left_alone(
    whatsapp_api: WhatsappApi,
) -> None:
    session = await cloud_session(whatsapp_api)
    neighbour = await cloud_session(whatsapp_api, number="999000111")
    theirs = await sent_entry(whatsapp_api, neighbour, "wamid.theirs")

    other_number = await deliver(
        whatsapp_api,
        session["id"],
        raw(
            payload(
                number="999000111",
                messages=[inbound("wamid.x")],
                statuses=[receipt("wamid.theirs", "read")],
            )
        ),
    )
    their_receipt_here = await deliver(
        whatsapp_api, session["id"], raw(payload(statuses=[receipt("wamid.theirs", "read")]))
    )

    assert other_number.status_code == 200
    assert other_number.json() == {"received": 0, "statuses": 0, "ignored": 2}
    assert their_receipt_here.json()["statuses"] == 0
    assert await status_of(whatsapp_api, theirs) is MessageStatus.SENT
    assert await events(whatsapp_api, "message_received") == []


async def test_a_signed_body_that_is_not_a_payload_is_acknowledged(
    whatsapp_api: WhatsappApi,
) -> None:
    session = await cloud_session(whatsapp_api)

    for body in (b"{not json", b'{"object": "whatsapp_business_account"}', b"[]"):
        response = await deliver(whatsapp_api, session["id"], body)
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 0, "statuses": 0, "ignored": 0}


async def test_unknown_deleted_and_sim_sessions_have_no_webhook(whatsapp_api: WhatsappApi) -> None:
    session = await cloud_session(whatsapp_api)
    company = await _company_of(whatsapp_api, session["id"])
    sim = await whatsapp_api.create_session(company)
    body = raw(payload(messages=[inbound("wamid.1")]))
    await whatsapp_api.client.delete(
        f"/v1/sessions/{session['id']}", headers=whatsapp_api.headers(company)
    )

    for session_id in (session["id"], sim["id"], str(uuid.uuid4())):
        response = await deliver(whatsapp_api, session_id, body)
        assert response.status_code == 404, response.text
    assert (await deliver(whatsapp_api, "not-a-uuid", body)).status_code == 422
