"""Meta's documented webhook payloads parse into the right inbound messages and statuses."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from whatsapp.adapters.cloud_webhooks import MalformedWebhook, WebhookBatch, parse_webhook
from whatsapp.domain.messages import (
    InboundMessage,
    Location,
    MediaRef,
    MessageKind,
    MessageStatus,
    SharedContact,
    StatusUpdate,
)
from whatsapp.domain.provider import FailureKind

from ..contract.fake_graph import load_fixture

pytestmark = pytest.mark.unit

CUSTOMER = "+16505551234"
OUR_NUMBER = "+15550783881"
NUMBER_ID = "106540352242922"
SENT_AT = datetime.fromtimestamp(1749416383, UTC)
OUR_MESSAGE = "9b2f4d8e-3c1a-4f5b-8e7d-6a0b1c2d3e4f"
OUR_WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def parse(name: str) -> WebhookBatch:
    return parse_webhook(load_fixture(f"webhooks/{name}.json"))


def only_inbound(name: str) -> InboundMessage:
    batch = parse(name)
    assert (batch.statuses, batch.errors, batch.unreadable) == ((), (), ())
    [message] = batch.inbound
    assert (message.from_phone_e164, message.to_phone_e164) == (CUSTOMER, OUR_NUMBER)
    assert message.provider_number_id == NUMBER_ID
    assert message.sent_at == SENT_AT
    assert message.profile_name == "Sheena Nelson"
    return message


def only_status(name: str) -> StatusUpdate:
    batch = parse(name)
    assert (batch.inbound, batch.errors, batch.unreadable) == ((), (), ())
    [status] = batch.statuses
    assert status.recipient_phone_e164 == CUSTOMER
    assert status.provider_number_id == NUMBER_ID
    return status


def test_text() -> None:
    message = only_inbound("text")

    assert message.kind is MessageKind.TEXT
    assert message.text == "Does it come in another color?"
    assert message.provider_message_id.startswith("wamid.")
    assert (message.media, message.in_reply_to, message.provider_type) == (None, "", "text")


@pytest.mark.parametrize(
    ("name", "kind", "media"),
    [
        (
            "image",
            MessageKind.IMAGE,
            MediaRef(
                ref="1003383421387256",
                mime_type="image/jpeg",
                sha256="rLrEDKVUY0mIPGEz1kEC7ZdOFl0SztiV4Oi4DCyMNIo=",
                caption="This is the one",
            ),
        ),
        (
            "audio",
            MessageKind.AUDIO,
            MediaRef(
                ref="1003383421387256",
                mime_type="audio/ogg; codecs=opus",
                sha256="kYZJn1p3bLvXNdeYG0iMOtlHq0vsdldzYGW9d3n6V5Q=",
            ),
        ),
        (
            "video",
            MessageKind.VIDEO,
            MediaRef(
                ref="1917394945707706",
                mime_type="video/mp4",
                sha256="3ISZ2kB8VyD/TEmn3OXb+o4/oGLdPUmcb+42FWN4PIE=",
                caption="Unboxing",
            ),
        ),
        (
            "document",
            MessageKind.DOCUMENT,
            MediaRef(
                ref="2072616266512440",
                mime_type="application/pdf",
                sha256="Hof1cLFe2eaJPKafdK0xGyt16NRs8ltJiLD4nTtP2fE=",
                caption="Comprovante de pagamento",
                filename="comprovante.pdf",
            ),
        ),
        (
            "sticker",
            MessageKind.STICKER,
            MediaRef(
                ref="1347383606347838",
                mime_type="image/webp",
                sha256="VN1ANrH0OvdmR1KdXR+ycNxLWAAnzh9Yal2gMHkFc8w=",
            ),
        ),
    ],
)
def test_media(name: str, kind: MessageKind, media: MediaRef) -> None:
    message = only_inbound(name)

    assert message.kind is kind
    assert message.media == media
    assert message.text == media.caption


def test_location() -> None:
    message = only_inbound("location")

    assert message.kind is MessageKind.LOCATION
    assert message.location == Location(
        latitude=-23.5613,
        longitude=-46.6565,
        name="MASP",
        address="Av. Paulista, 1578 - Bela Vista, São Paulo - SP",
    )
    assert message.text == (
        "MASP\nAv. Paulista, 1578 - Bela Vista, São Paulo - SP\ngeo:-23.5613,-46.6565"
    )


def test_contacts() -> None:
    message = only_inbound("contacts")

    assert message.kind is MessageKind.CONTACTS
    assert message.contacts == (
        SharedContact(name="Ana Souza", phones=("+55 11 98765-4321", "+55 11 3456-7890")),
    )
    assert message.text == "Ana Souza: +55 11 98765-4321, +55 11 3456-7890"


@pytest.mark.parametrize(
    ("name", "reply_id", "title", "provider_type"),
    [
        ("interactive_button_reply", "confirm-visit", "Confirmar", "interactive.button_reply"),
        ("interactive_list_reply", "dept-finance", "Financeiro", "interactive.list_reply"),
        ("button", "STOP-PROMOS", "Parar promoções", "button"),
    ],
)
def test_interactive_replies(name: str, reply_id: str, title: str, provider_type: str) -> None:
    message = only_inbound(name)

    assert message.kind is MessageKind.INTERACTIVE_REPLY
    assert (message.reply_id, message.text, message.provider_type) == (
        reply_id,
        title,
        provider_type,
    )
    assert message.in_reply_to.startswith("wamid."), "the reply points at our message"


def test_reply_context() -> None:
    message = only_inbound("reply_context")

    assert message.kind is MessageKind.TEXT
    assert message.text == "Sim, pode ser amanhã"
    assert message.in_reply_to == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJENTk0N0M1QjJGMUNEQjU5MjkA"


def test_reaction_is_kept_as_unspecified() -> None:
    message = only_inbound("reaction")

    assert message.kind is MessageKind.UNSPECIFIED
    assert message.provider_type == "reaction"
    assert message.text == "\N{THUMBS UP SIGN}"
    assert message.in_reply_to == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJENTk0N0M1QjJGMUNEQjU5MjkA"


def test_unsupported_message_keeps_its_errors() -> None:
    message = only_inbound("unsupported")

    assert message.kind is MessageKind.UNSPECIFIED
    assert message.provider_type == "unsupported"
    [error] = message.errors
    assert (error.code, error.title, error.detail) == (
        "131051",
        "Message type unknown",
        "Message type is currently not supported.",
    )
    assert error.kind is FailureKind.INVALID_REQUEST


def test_unknown_message_type_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    payload = load_fixture("webhooks/text.json")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message["type"] = "hologram"
    message["hologram"] = {"frames": 3}

    with caplog.at_level(logging.WARNING):
        [kept] = parse_webhook(payload).inbound

    assert (kept.kind, kept.provider_type, kept.text) == (MessageKind.UNSPECIFIED, "hologram", "")
    assert "hologram" in caplog.text


@pytest.mark.parametrize(
    ("name", "status", "occurred_at"),
    [
        ("status_sent", MessageStatus.SENT, 1750263773),
        ("status_delivered", MessageStatus.DELIVERED, 1750263775),
        ("status_read", MessageStatus.READ, 1750263790),
    ],
)
def test_statuses(name: str, status: MessageStatus, occurred_at: int) -> None:
    update = only_status(name)

    assert update.status is status
    assert update.provider_message_id == OUR_WAMID
    assert update.message_id == OUR_MESSAGE, "biz_opaque_callback_data carries our id back"
    assert update.occurred_at == datetime.fromtimestamp(occurred_at, UTC)
    assert update.provider_status == name.removeprefix("status_")
    assert update.error is None


def test_failed_status_carries_its_error() -> None:
    update = only_status("status_failed")

    assert update.status is MessageStatus.FAILED
    assert update.error is not None
    assert (update.error.code, update.error.title, update.error.detail) == (
        "131026",
        "Message undeliverable",
        "Message Undeliverable.",
    )
    assert update.error.kind is FailureKind.UNDELIVERABLE


def test_failed_status_with_a_spam_error_is_a_quality_signal() -> None:
    update = only_status("status_failed_spam")

    assert update.status is MessageStatus.FAILED
    assert update.message_id == "5e1d3c2b-7a9f-4e6d-b8c0-1f2e3d4c5b6a"
    assert update.error is not None
    assert (update.error.code, update.error.kind) == ("131048", FailureKind.QUALITY)


def test_value_level_errors() -> None:
    batch = parse("value_errors")

    assert (batch.inbound, batch.statuses, batch.unreadable) == ((), (), ())
    [reported] = batch.errors
    assert reported.provider_number_id == NUMBER_ID
    assert (reported.error.code, reported.error.kind) == ("131000", FailureKind.TRANSIENT)
    assert reported.error.detail == "Message failed to send due to an unknown error."


def test_multiple_entries_and_changes_in_payload_order() -> None:
    batch = parse("multiple_entries")

    assert [message.text for message in batch.inbound] == ["Oi", "Tudo bem?", "Bom dia"]
    assert [status.status for status in batch.statuses] == [
        MessageStatus.DELIVERED,
        MessageStatus.READ,
    ]
    second_number = batch.inbound[2]
    assert second_number.provider_number_id == "231445587219364"
    assert second_number.to_phone_e164 == "+551130034000"
    assert second_number.from_phone_e164 == "+551187654321"
    assert second_number.profile_name == "João Pereira"
    assert (batch.errors, batch.unreadable) == ((), ())


def test_other_fields_are_ignored() -> None:
    assert parse("other_field") == WebhookBatch()


def test_every_fixture_parses_without_unreadable_items() -> None:
    names = [
        "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
        "interactive_button_reply", "interactive_list_reply", "button", "reply_context",
        "reaction", "unsupported", "status_sent", "status_delivered", "status_read",
        "status_failed", "status_failed_spam", "value_errors", "multiple_entries", "other_field",
    ]  # fmt: skip
    for name in names:
        assert parse(name).unreadable == (), name


def test_inbound_converts_to_the_message_received_event() -> None:
    message = only_inbound("document")

    event = message.to_proto(session_id="session-1")

    assert event.session_id == "session-1"
    assert event.provider_message_id == message.provider_message_id
    assert (event.from_phone_e164, event.to_phone_e164) == (CUSTOMER, OUR_NUMBER)
    assert event.kind == MessageKind.DOCUMENT.value
    assert event.text == "Comprovante de pagamento"
    assert event.sent_at.ToDatetime(tzinfo=UTC) == SENT_AT
    assert event.profile_name == "Sheena Nelson"
    assert (event.media.ref, event.media.filename) == ("2072616266512440", "comprovante.pdf")
    assert not event.in_reply_to


def test_text_reply_converts_without_media() -> None:
    event = only_inbound("reply_context").to_proto(session_id="session-1")

    assert event.kind == MessageKind.TEXT.value
    assert not event.HasField("media")
    assert event.in_reply_to == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJENTk0N0M1QjJGMUNEQjU5MjkA"


# --- what cannot be read is kept, not dropped ---------------------------------------------


def _text_payload() -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(load_fixture("webhooks/text.json"))
    return payload


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", None), ("from", None), ("from", "not-a-phone"), ("timestamp", "yesterday")],
)
def test_unreadable_message_is_returned_with_its_raw_json(field: str, value: str | None) -> None:
    payload = _text_payload()
    value_object = payload["entry"][0]["changes"][0]["value"]
    good = copy.deepcopy(value_object["messages"][0])
    good["id"] = "wamid.good"
    broken = value_object["messages"][0]
    if value is None:
        del broken[field]
    else:
        broken[field] = value
    value_object["messages"].append(good)

    batch = parse_webhook(payload)

    assert [message.provider_message_id for message in batch.inbound] == ["wamid.good"]
    [item] = batch.unreadable
    assert item.section == "messages"
    assert item.raw == broken


def test_unreadable_status_is_returned_with_its_raw_json() -> None:
    payload = load_fixture("webhooks/status_sent.json")
    status = payload["entry"][0]["changes"][0]["value"]["statuses"][0]
    status["timestamp"] = None

    batch = parse_webhook(payload)

    assert batch.statuses == ()
    assert [(item.section, item.raw) for item in batch.unreadable] == [("statuses", status)]


def test_status_without_meaning_here_is_kept_as_unspecified() -> None:
    payload = load_fixture("webhooks/status_sent.json")
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "deleted"

    [update] = parse_webhook(payload).statuses

    assert (update.status, update.provider_status) == (MessageStatus.UNSPECIFIED, "deleted")


@pytest.mark.parametrize("payload", [None, [], "text", {"object": "whatsapp_business_account"}])
def test_payload_that_is_no_webhook_raises(payload: object) -> None:
    with pytest.raises(MalformedWebhook):
        parse_webhook(payload)


def test_payload_of_another_object_is_ignored() -> None:
    assert parse_webhook({"object": "page", "entry": []}) == WebhookBatch()
