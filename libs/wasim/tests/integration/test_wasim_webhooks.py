"""Webhooks back to our endpoint: Meta's envelope, signatures, receipts, inbound messages,
retries, duplicates and shuffling, and the verification handshake."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.server import RunningSimulator
from esquadrao_wasim.testing import CloudNumber, WebhookReceiver, eventually, text_message

pytestmark = pytest.mark.integration

FAST_RECEIPTS = {"sent": 0.0, "delivered": 0.05, "read": 0.1}


async def send(http: httpx.AsyncClient, number: CloudNumber, to: str, message_id: str) -> str:
    response = await number.send(http, text_message(to, message_id))
    assert response.status_code == 200, response.text
    provider_id: str = response.json()["messages"][0]["id"]
    return provider_id


def statuses_of(receiver: WebhookReceiver, message_id: str) -> list[str]:
    return [
        s["status"] for s in receiver.statuses() if s.get("biz_opaque_callback_data") == message_id
    ]


async def test_every_callback_is_signed_with_the_app_secret(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(receipt_delays=FAST_RECEIPTS, read_rate=1.0)

    await send(http, number, "+5511988887777", "m-signed")
    await receiver.wait_for(lambda r: len(r.callbacks) >= 3)

    for callback in receiver.callbacks:
        expected = hmac.new(number.app_secret.encode(), callback.body, hashlib.sha256).hexdigest()
        assert callback.headers["x-hub-signature-256"] == f"sha256={expected}"
        assert callback.headers["content-type"] == "application/json"
        forged = hmac.new(b"another-secret", callback.body, hashlib.sha256).hexdigest()
        assert callback.headers["x-hub-signature-256"] != f"sha256={forged}"


async def test_receipts_arrive_sent_delivered_read_in_meta_s_envelope(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(receipt_delays=FAST_RECEIPTS, read_rate=1.0)

    provider_id = await send(http, number, "+5511988887777", "m-receipts")
    await receiver.wait_for(lambda r: len(statuses_of(r, "m-receipts")) >= 3)

    assert statuses_of(receiver, "m-receipts") == ["sent", "delivered", "read"]
    payload = receiver.callbacks[0].payload
    assert payload["object"] == "whatsapp_business_account"
    (entry,) = payload["entry"]
    (change,) = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {
        "display_phone_number": number.display_phone_number,
        "phone_number_id": number.phone_number_id,
    }
    for status in receiver.statuses():
        assert status["id"] == provider_id
        assert status["recipient_id"] == "5511988887777"
        assert status["timestamp"].isdigit()


async def test_a_message_not_read_stops_at_delivered(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(receipt_delays=FAST_RECEIPTS, read_rate=0.0)

    await send(http, number, "+5511988887777", "m-unread")
    await send(http, number, "+5511988887778", "m-after")
    await receiver.wait_for(lambda r: "delivered" in statuses_of(r, "m-after"))

    assert statuses_of(receiver, "m-unread") == ["sent", "delivered"]


async def test_an_error_reported_by_webhook_is_accepted_then_fails(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(error_delivery="webhook", not_on_whatsapp=["+5511911112222"])

    provider_id = await send(http, number, "+5511911112222", "m-async-fail")
    await receiver.wait_for(lambda r: bool(statuses_of(r, "m-async-fail")))

    (status,) = [s for s in receiver.statuses() if s["id"] == provider_id]
    assert status["status"] == "failed"
    (error,) = status["errors"]
    assert error["code"] == 131026
    assert error["title"] == "Message undeliverable"
    assert error["error_data"]["details"]
    assert await control.accepted_count("m-async-fail") == 1


async def test_an_injected_inbound_message_arrives_with_contact_and_profile(
    number: CloudNumber, control: SimulatorControl, receiver: WebhookReceiver
) -> None:
    provider_id = await control.inject_inbound(
        phone_number_id=number.phone_number_id,
        from_phone="+55 11 97777-6666",
        text="SAIR",
        profile_name="Maria Souza",
    )
    await receiver.wait_for(lambda r: bool(r.messages()))

    value = receiver.callbacks[0].value
    assert value["contacts"] == [{"profile": {"name": "Maria Souza"}, "wa_id": "5511977776666"}]
    (message,) = value["messages"]
    assert message["id"] == provider_id
    assert message["from"] == "5511977776666"
    assert message["type"] == "text"
    assert message["text"] == {"body": "SAIR"}
    assert (await control.stats())["inbound_total"] == 1


async def test_customers_reply_to_delivered_messages_when_asked_to(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(
        receipt_delays=FAST_RECEIPTS, reply_rate=1.0, reply_texts=["SAIR"], reply_delay_s=0.0
    )

    provider_id = await send(http, number, "+5511988887777", "m-reply")
    await receiver.wait_for(lambda r: bool(r.messages()))

    (reply,) = receiver.messages()
    assert reply["text"] == {"body": "SAIR"}
    assert reply["from"] == "5511988887777"
    assert reply["context"] == {"from": number.display_phone_number, "id": provider_id}


async def test_a_refused_callback_is_retried_until_accepted(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(receipt_delays=FAST_RECEIPTS, read_rate=0.0, delivered_rate=0.0)
    receiver.fail_next = 2

    await send(http, number, "+5511988887777", "m-retried")
    await receiver.wait_for(lambda r: bool(statuses_of(r, "m-retried")))

    assert statuses_of(receiver, "m-retried") == ["sent"]
    assert len(receiver.refused) == 2
    assert receiver.refused[0].body == receiver.callbacks[0].body
    webhooks = (await control.stats())["webhooks"]
    assert webhooks["failed_attempts"] == 2
    assert webhooks["delivered"] == 1


async def test_a_callback_is_given_up_after_its_attempts(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(delivered_rate=0.0, webhook_max_attempts=3)
    receiver.fail_next = 1000

    await send(http, number, "+5511988887777", "m-given-up")
    await receiver.wait_for(lambda r: len(r.refused) >= 3)

    async def given_up() -> bool:
        return bool((await control.stats())["webhooks"]["gave_up"])

    await eventually(given_up)
    stats = await control.stats()
    assert len(receiver.refused) == 3
    assert stats["webhooks"]["gave_up"] == 1
    assert stats["webhooks"]["pending"] == 0


async def test_duplicates_knob_sends_every_callback_twice(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(receipt_delays=FAST_RECEIPTS, read_rate=1.0, webhook_duplicate_rate=1.0)

    await send(http, number, "+5511988887777", "m-dup")
    await receiver.wait_for(lambda r: len(statuses_of(r, "m-dup")) >= 6)

    assert sorted(statuses_of(receiver, "m-dup")) == sorted(["sent", "delivered", "read"] * 2)


async def test_shuffle_knob_delivers_receipts_out_of_order_but_all_of_them(
    http: httpx.AsyncClient,
    number: CloudNumber,
    control: SimulatorControl,
    receiver: WebhookReceiver,
) -> None:
    await control.set_knobs(
        seed=3,
        receipt_delays={"sent": 0, "delivered": 0, "read": 0},
        read_rate=1.0,
        webhook_shuffle=True,
        webhook_shuffle_window_s=0.5,
        pair_rate_limit=None,
    )
    message_ids = [f"m-shuffle-{n}" for n in range(10)]

    for n, message_id in enumerate(message_ids):
        await send(http, number, f"+551198888{n:04d}", message_id)
    await receiver.wait_for(lambda r: len(r.statuses()) >= 30)

    orders = [statuses_of(receiver, message_id) for message_id in message_ids]
    assert all(sorted(order) == ["delivered", "read", "sent"] for order in orders)
    assert any(order != ["sent", "delivered", "read"] for order in orders)


async def test_registering_with_a_verify_token_runs_the_handshake(
    control: SimulatorControl, receiver: WebhookReceiver
) -> None:
    registered = await control.register_number(
        "2002",
        display_phone_number="+5511400002002",
        access_token="t",
        webhook_url=receiver.url,
        app_secret="secret",
        verify_token=receiver.verify_token,
    )

    assert registered["webhook_verified"] is True
    assert (await control.verify_webhook("2002"))["verified"] is True


async def test_a_webhook_that_fails_the_handshake_is_not_registered(
    simulator: RunningSimulator, control: SimulatorControl, receiver: WebhookReceiver
) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await control.register_number(
            "2003",
            display_phone_number="+5511400002003",
            access_token="t",
            webhook_url=receiver.url,
            app_secret="secret",
            verify_token="not-the-token",
        )

    assert refused.value.response.status_code == 422
    assert "verification failed" in refused.value.response.text
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{simulator.url}/_sim/numbers/2003")).status_code == 404


async def test_a_number_without_webhook_url_gets_no_callbacks(
    http: httpx.AsyncClient, simulator: RunningSimulator, control: SimulatorControl
) -> None:
    await control.register_number("2004", display_phone_number="+5511400002004", access_token="t")
    await control.set_knobs(receipt_delays={"sent": 0, "delivered": 0, "read": 0}, read_rate=1.0)

    response = await http.post(
        f"{simulator.url}/v21.0/2004/messages",
        json=text_message("+5511988887777", "m-no-url"),
        headers={"Authorization": "Bearer t"},
    )
    assert response.status_code == 200

    async def receipts_dropped() -> bool:
        return bool((await control.stats())["webhooks"]["not_delivered"] >= 3)

    await eventually(receipts_dropped)
    assert (await control.stats())["webhooks"]["delivered"] == 0
