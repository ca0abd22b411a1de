"""Outbound and inbound message values: invariants, commands in, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from whatsapp.domain.messages import (
    InboundMessage,
    Media,
    MediaKind,
    MessageKind,
    MessageStatus,
    OutboundMessage,
    ProviderError,
    StatusUpdate,
    Template,
    Text,
    e164_from_digits,
    outbound_from_command,
    to_timestamp,
)
from whatsapp.domain.provider import FailureKind, ProviderFailure

pytestmark = pytest.mark.unit

PHONE = "+5511987654321"
NOW = datetime(2025, 6, 18, 12, 0, tzinfo=UTC)


def test_kinds_mirror_the_proto_enum() -> None:
    for kind in MessageKind:
        assert whatsapp_pb2.MessageKind.Name(kind.to_proto()) == f"MESSAGE_KIND_{kind.name}"
    assert len(MessageKind) == len(whatsapp_pb2.MessageKind.keys())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5511987654321", "+5511987654321"),
        ("16505551234", "+16505551234"),
        ("+1 555-078-3881", "+15550783881"),
        ("55 11 3003-4000", "+551130034000"),
    ],
)
def test_e164_from_provider_ids(raw: str, expected: str) -> None:
    assert e164_from_digits(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "0551198765432", "12345", "1" * 16])
def test_e164_from_digits_refuses_what_is_no_phone(raw: str) -> None:
    with pytest.raises(ValueError, match="not an international phone number"):
        e164_from_digits(raw)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Text(" "),
        lambda: Template("", "pt_BR"),
        lambda: Template("boas_vindas", ""),
        lambda: Media(MediaKind.IMAGE),
        lambda: Media(MediaKind.IMAGE, link="https://x.example/a.jpg", media_id="1"),
        lambda: Media(MediaKind.IMAGE, link="ftp://x.example/a.jpg"),
        lambda: Media(MediaKind.IMAGE, media_id=" "),
        lambda: Media(MediaKind.AUDIO, media_id="1", caption="ouça"),
        lambda: Media(MediaKind.STICKER, media_id="1", caption="oi"),
        lambda: Media(MediaKind.IMAGE, media_id="1", filename="a.jpg"),
        lambda: OutboundMessage("", PHONE, Text("oi")),
        lambda: OutboundMessage("m1", "11987654321", Text("oi")),
        lambda: OutboundMessage("m1", PHONE, Text("oi"), reply_to=""),
    ],
)
def test_invalid_values_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_text_command() -> None:
    command = commands_pb2.SendMessage(
        message_id="m1",
        session_id="s1",
        to_phone_e164=PHONE,
        text=commands_pb2.TextContent(body="Olá", preview_url=True),
        reply_to="wamid.abc",
    )

    assert outbound_from_command(command) == OutboundMessage(
        "m1", PHONE, Text("Olá", preview_url=True), reply_to="wamid.abc"
    )


def test_template_command() -> None:
    command = commands_pb2.SendMessage(
        message_id="m2",
        to_phone_e164=PHONE,
        template=commands_pb2.TemplateContent(
            name="lembrete", language="pt_BR", body_parameters=["Ana", "15/07"]
        ),
    )

    message = outbound_from_command(command)

    assert message.content == Template("lembrete", "pt_BR", ("Ana", "15/07"))
    assert message.reply_to is None


@pytest.mark.parametrize(
    ("ref", "link", "media_id"),
    [
        ("https://cdn.example.com/boleto.pdf", "https://cdn.example.com/boleto.pdf", None),
        ("2072616266512440", None, "2072616266512440"),
    ],
)
def test_media_command_by_link_or_id(ref: str, link: str | None, media_id: str | None) -> None:
    command = commands_pb2.SendMessage(
        message_id="m3",
        to_phone_e164=PHONE,
        media=commands_pb2.MediaContent(
            kind=whatsapp_pb2.MESSAGE_KIND_DOCUMENT,
            ref=ref,
            caption="Boleto",
            filename="boleto.pdf",
            mime_type="application/pdf",
        ),
    )

    assert outbound_from_command(command).content == Media(
        MediaKind.DOCUMENT,
        link=link,
        media_id=media_id,
        caption="Boleto",
        filename="boleto.pdf",
        mime_type="application/pdf",
    )


def test_command_without_content_is_refused() -> None:
    with pytest.raises(ValueError, match="no content"):
        outbound_from_command(commands_pb2.SendMessage(message_id="m4", to_phone_e164=PHONE))


def test_media_command_of_a_kind_that_is_no_media_is_refused() -> None:
    command = commands_pb2.SendMessage(
        message_id="m5",
        to_phone_e164=PHONE,
        media=commands_pb2.MediaContent(kind=whatsapp_pb2.MESSAGE_KIND_LOCATION, ref="1"),
    )
    with pytest.raises(ValueError, match="not a media kind"):
        outbound_from_command(command)


def test_provider_error_and_failure_to_proto() -> None:
    failure = ProviderFailure(
        FailureKind.UNDELIVERABLE, "131026", "Message Undeliverable.", "not on WhatsApp"
    )

    assert failure.error == ProviderError(
        "131026", "Message Undeliverable.", "not on WhatsApp", FailureKind.UNDELIVERABLE
    )
    assert failure.error.to_proto() == whatsapp_pb2.ProviderError(
        code="131026", title="Message Undeliverable.", detail="not on WhatsApp"
    )
    assert str(failure) == "undeliverable (code 131026): Message Undeliverable. — not on WhatsApp"


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [
        (FailureKind.THROTTLED, True),
        (FailureKind.PAIR_RATE_LIMITED, True),
        (FailureKind.QUALITY, False),
        (FailureKind.UNDELIVERABLE, False),
        (FailureKind.AUTH, True),
        (FailureKind.INVALID_REQUEST, False),
        (FailureKind.REENGAGEMENT_REQUIRED, False),
        (FailureKind.TRANSIENT, True),
    ],
)
def test_failure_retryable_by_kind(kind: FailureKind, retryable: bool) -> None:
    assert ProviderFailure(kind, "x").retryable is retryable


def test_unknown_outcome_is_never_retryable() -> None:
    failure = ProviderFailure(FailureKind.TRANSIENT, "ReadTimeout", outcome_unknown=True)

    assert failure.retryable is False
    forced = ProviderFailure(FailureKind.TRANSIENT, "x", retryable=True, outcome_unknown=True)
    assert forced.retryable is False
    assert "[outcome unknown]" in str(failure)


def test_negative_retry_after_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_after"):
        ProviderFailure(FailureKind.THROTTLED, "130429", retry_after=-1)


def test_inbound_and_status_values_need_aware_times_and_e164_phones() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        InboundMessage("wamid.1", PHONE, PHONE, MessageKind.TEXT, datetime(2025, 1, 1))
    with pytest.raises(ValueError, match=r"E\.164"):
        InboundMessage("wamid.1", "5511987654321", PHONE, MessageKind.TEXT, NOW)
    with pytest.raises(ValueError, match="provider's message id"):
        StatusUpdate("", MessageStatus.SENT, PHONE, NOW)
    with pytest.raises(ValueError, match=r"E\.164"):
        StatusUpdate("wamid.1", MessageStatus.SENT, "16505551234", NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        to_timestamp(datetime(2025, 1, 1))
