"""Cloud API error codes, Retry-After and send bodies: the pure parts of the adapter."""

from __future__ import annotations

import httpx
import pytest
from whatsapp.adapters.cloud_api import CloudApiProvider, build_send_body
from whatsapp.adapters.cloud_errors import (
    KIND_BY_CODE,
    classify_delivery_error,
    classify_response_error,
    parse_retry_after,
)
from whatsapp.domain.messages import Media, MediaKind, OutboundMessage, Template, Text
from whatsapp.domain.provider import FailureKind

from ..contract.fake_graph import load_fixture, send_request_problem

pytestmark = pytest.mark.unit

NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (130429, FailureKind.THROTTLED),
        (131056, FailureKind.PAIR_RATE_LIMITED),
        (131048, FailureKind.QUALITY),
        (131049, FailureKind.QUALITY),
        (131026, FailureKind.UNDELIVERABLE),
        (131047, FailureKind.REENGAGEMENT_REQUIRED),
        (190, FailureKind.AUTH),
        (250, FailureKind.AUTH),
        (100, FailureKind.INVALID_REQUEST),
        (131008, FailureKind.INVALID_REQUEST),
        (131009, FailureKind.INVALID_REQUEST),
        (131000, FailureKind.TRANSIENT),
        (1, FailureKind.TRANSIENT),
        (2, FailureKind.TRANSIENT),
    ],
)
def test_codes_of_the_issue(code: int, kind: FailureKind) -> None:
    assert classify_response_error(code, 400) is kind
    assert classify_delivery_error(code) is kind


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (131026, 401, FailureKind.AUTH),
        (None, 401, FailureKind.AUTH),
        (None, 403, FailureKind.AUTH),
        (None, 429, FailureKind.THROTTLED),
        (None, 500, FailureKind.TRANSIENT),
        (999999, 502, FailureKind.TRANSIENT),
        (999999, 400, FailureKind.INVALID_REQUEST),
        (None, 404, FailureKind.INVALID_REQUEST),
        (131048, 500, FailureKind.QUALITY),
    ],
)
def test_http_status_decides_when_the_code_does_not(
    code: int | None, status: int, kind: FailureKind
) -> None:
    assert classify_response_error(code, status) is kind


def test_unknown_code_in_a_webhook_is_undeliverable() -> None:
    assert classify_delivery_error(999999) is FailureKind.UNDELIVERABLE
    assert classify_delivery_error(None) is FailureKind.UNDELIVERABLE


def test_every_documented_error_fixture_has_a_kind() -> None:
    for code in load_fixture("graph/errors.json"):
        assert int(code) in KIND_BY_CODE, code


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        (" 0 ", 0.0),
        ("soon", None),
        ("-5", None),
        # 1_750_000_000 is Sun, 15 Jun 2025 15:06:40 GMT.
        ("Sun, 15 Jun 2025 15:07:20 GMT", 40.0),
        ("Sun, 15 Jun 2025 15:07:20 -0000", 40.0),
        ("Sun, 15 Jun 2025 14:00:00 GMT", 0.0),  # a date in the past means now
    ],
)
def test_retry_after_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    "message",
    [
        OutboundMessage("m1", "+5511987654321", Text("Olá")),
        OutboundMessage("m2", "+5511987654321", Template("boas_vindas", "pt_BR", ("Ana",))),
        OutboundMessage("m3", "+5511987654321", Template("hello_world", "en_US")),
        OutboundMessage("m4", "+5511987654321", Media(MediaKind.IMAGE, media_id="1", caption="c")),
        OutboundMessage(
            "m5",
            "+5511987654321",
            Media(MediaKind.DOCUMENT, link="https://x.example/a.pdf", filename="a.pdf"),
        ),
        OutboundMessage("m6", "+5511987654321", Text("Sim"), reply_to="wamid.abc"),
    ],
)
def test_every_send_body_passes_the_documented_rules(message: OutboundMessage) -> None:
    body = build_send_body(message)

    assert send_request_problem(body) is None
    assert body["biz_opaque_callback_data"] == message.message_id
    assert body["to"] == message.to_phone_e164


async def test_provider_needs_its_credentials() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="phone_number_id"):
            CloudApiProvider(client, phone_number_id=" ", access_token="t")
        with pytest.raises(ValueError, match="access_token"):
            CloudApiProvider(client, phone_number_id="1", access_token="")
        provider = CloudApiProvider(
            client,
            base_url="https://graph.example/",
            phone_number_id="106540352242922",
            access_token="t",
        )
    assert provider.messages_url == "https://graph.example/v21.0/106540352242922/messages"
