"""CloudApiProvider against a fake Graph API over real HTTP: request shapes, answers, errors.

The fake (``fake_graph.py``) enforces Meta's documented request rules and answers with
Meta's documented payloads (``fixtures/graph``), so these tests pin both sides of the
contract: what we send, and how each documented answer is classified.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from whatsapp.adapters.cloud_api import CloudApiProvider
from whatsapp.domain.messages import Media, MediaKind, OutboundMessage, Template, Text
from whatsapp.domain.provider import FailureKind, ProviderFailure

from .fake_graph import FakeGraphApi, ScriptedAnswer, serve

pytestmark = pytest.mark.integration

TOKEN = "EAAGm0PX4ZCpsBAKZCsecret-token-value-0123456789"
PHONE_NUMBER_ID = "106540352242922"
CUSTOMER = "+16505551234"


@pytest.fixture(scope="module")
async def graph() -> AsyncIterator[tuple[FakeGraphApi, str]]:
    fake = FakeGraphApi(access_token=TOKEN)
    async with serve(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture
async def fake(graph: tuple[FakeGraphApi, str]) -> FakeGraphApi:
    graph[0].reset()
    return graph[0]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def provider(graph: tuple[FakeGraphApi, str], client: httpx.AsyncClient) -> CloudApiProvider:
    return CloudApiProvider(
        client, base_url=graph[1], phone_number_id=PHONE_NUMBER_ID, access_token=TOKEN
    )


def text_message(message_id: str = "9b2f4d8e-3c1a-4f5b-8e7d-6a0b1c2d3e4f") -> OutboundMessage:
    return OutboundMessage(message_id, CUSTOMER, Text("Olá! Seu boleto vence amanhã."))


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def send_failure(provider: CloudApiProvider, message: OutboundMessage) -> ProviderFailure:
    with pytest.raises(ProviderFailure) as caught:
        await provider.send(message)
    return caught.value


# --- successful sends ---------------------------------------------------------------------


async def test_text_send_posts_the_documented_request_and_returns_the_wamid(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    accepted = await provider.send(text_message())

    assert accepted.provider_message_id.startswith("wamid.")
    assert accepted.recipient_id == CUSTOMER
    assert fake.accepted == 1
    [request] = fake.requests
    assert (request.api_version, request.phone_number_id) == ("v21.0", PHONE_NUMBER_ID)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "biz_opaque_callback_data": "9b2f4d8e-3c1a-4f5b-8e7d-6a0b1c2d3e4f",
        "type": "text",
        "text": {"preview_url": False, "body": "Olá! Seu boleto vence amanhã."},
    }


async def test_template_send_carries_body_parameters_in_order(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    template = Template("lembrete_boleto", "pt_BR", ("Ana", "15/07"))
    await provider.send(OutboundMessage("m-template", CUSTOMER, template))

    assert fake.requests[0].body["template"] == {
        "name": "lembrete_boleto",
        "language": {"code": "pt_BR"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "15/07"}],
            }
        ],
    }
    assert fake.requests[0].body["biz_opaque_callback_data"] == "m-template"


async def test_template_without_parameters_has_no_components(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    await provider.send(OutboundMessage("m-hello", CUSTOMER, Template("hello_world", "en_US")))

    assert fake.requests[0].body["template"] == {
        "name": "hello_world",
        "language": {"code": "en_US"},
    }


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        (
            Media(MediaKind.IMAGE, link="https://cdn.example.com/planta.jpg", caption="Planta"),
            {"link": "https://cdn.example.com/planta.jpg", "caption": "Planta"},
        ),
        (
            Media(MediaKind.DOCUMENT, media_id="2072616266512440", filename="boleto.pdf"),
            {"id": "2072616266512440", "filename": "boleto.pdf"},
        ),
        (Media(MediaKind.AUDIO, media_id="1003383421387256"), {"id": "1003383421387256"}),
        (Media(MediaKind.STICKER, media_id="1347383606347838"), {"id": "1347383606347838"}),
        (
            Media(MediaKind.VIDEO, link="https://cdn.example.com/tour.mp4"),
            {"link": "https://cdn.example.com/tour.mp4"},
        ),
    ],
)
async def test_media_send_by_link_or_id(
    provider: CloudApiProvider, fake: FakeGraphApi, media: Media, expected: dict[str, str]
) -> None:
    await provider.send(OutboundMessage("m-media", CUSTOMER, media))

    body = fake.requests[0].body
    assert body["type"] == media.kind.value
    assert body[media.kind.value] == expected
    assert fake.accepted == 1


async def test_reply_carries_the_quoted_message_in_context(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    quoted = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    await provider.send(OutboundMessage("m-reply", CUSTOMER, Text("Pode sim!"), reply_to=quoted))

    assert fake.requests[0].body["context"] == {"message_id": quoted}


async def test_each_send_gets_its_own_provider_id(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    sends = [provider.send(text_message(f"m-{index}")) for index in range(5)]
    accepted = await asyncio.gather(*sends)

    assert len({answer.provider_message_id for answer in accepted}) == 5
    assert fake.accepted == 5


# --- documented errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "retryable", "http_status"),
    [
        (130429, FailureKind.THROTTLED, True, 400),
        (80007, FailureKind.THROTTLED, True, 400),
        (131056, FailureKind.PAIR_RATE_LIMITED, True, 400),
        (131048, FailureKind.QUALITY, False, 400),
        (131049, FailureKind.QUALITY, False, 400),
        (368, FailureKind.QUALITY, False, 403),
        (131026, FailureKind.UNDELIVERABLE, False, 400),
        (131047, FailureKind.REENGAGEMENT_REQUIRED, False, 400),
        (190, FailureKind.AUTH, True, 401),
        (131031, FailureKind.AUTH, True, 403),
        (100, FailureKind.INVALID_REQUEST, False, 400),
        (131008, FailureKind.INVALID_REQUEST, False, 400),
        (131009, FailureKind.INVALID_REQUEST, False, 400),
        (132001, FailureKind.INVALID_REQUEST, False, 404),
        (131000, FailureKind.TRANSIENT, True, 500),
        (1, FailureKind.TRANSIENT, True, 400),
        (2, FailureKind.TRANSIENT, True, 503),
    ],
)
async def test_documented_error_maps_to_its_kind(
    provider: CloudApiProvider,
    fake: FakeGraphApi,
    code: int,
    kind: FailureKind,
    retryable: bool,
    http_status: int,
) -> None:
    fake.fail_next(code)

    failure = await send_failure(provider, text_message())

    assert failure.kind is kind
    assert failure.code == str(code)
    assert failure.retryable is retryable
    assert failure.http_status == http_status
    assert failure.outcome_unknown is False
    assert failure.retry_after is None
    assert not failure.title.startswith("(#"), "the code prefix is stripped from the title"
    assert fake.accepted == 0


async def test_error_details_come_from_error_data(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    fake.fail_next(131056)

    failure = await send_failure(provider, text_message())

    assert failure.title == "(Business Account, Consumer Account) pair rate limit hit"
    assert failure.detail.startswith("Too many messages sent from the sender phone number")
    assert failure.error.code == "131056"
    assert failure.error.kind is FailureKind.PAIR_RATE_LIMITED


async def test_retry_after_seconds_are_honoured(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    fake.fail_next(130429, headers={"Retry-After": "7"})

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.THROTTLED
    assert failure.retry_after == 7.0


async def test_retry_after_http_date_is_honoured(
    graph: tuple[FakeGraphApi, str], fake: FakeGraphApi, client: httpx.AsyncClient
) -> None:
    now = datetime(2025, 6, 18, 12, 0, 0, tzinfo=UTC)
    provider = CloudApiProvider(
        client,
        base_url=graph[1],
        phone_number_id=PHONE_NUMBER_ID,
        access_token=TOKEN,
        clock=now.timestamp,
    )
    later = format_datetime(datetime(2025, 6, 18, 12, 0, 30, tzinfo=UTC), usegmt=True)
    fake.fail_next(131056, headers={"Retry-After": later})

    failure = await send_failure(provider, text_message())

    assert failure.retry_after == 30.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_without_a_graph_error_is_transient(
    provider: CloudApiProvider, fake: FakeGraphApi, status: int
) -> None:
    fake.answer_next(ScriptedAnswer(status=status, body="<html>upstream error</html>"))

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.code == f"http_{status}"
    assert failure.retryable is True
    assert failure.detail == "<html>upstream error</html>"


async def test_429_without_a_graph_error_is_throttled(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    fake.answer_next(ScriptedAnswer(status=429, body="", headers={"Retry-After": "2"}))

    failure = await send_failure(provider, text_message())

    assert (failure.kind, failure.retry_after) == (FailureKind.THROTTLED, 2.0)


async def test_http_401_is_auth_whatever_the_body_says(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    fake.answer_next(ScriptedAnswer(status=401, body={"error": {"message": "nope", "code": 1}}))

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.AUTH


async def test_a_wrong_token_is_auth(
    graph: tuple[FakeGraphApi, str], fake: FakeGraphApi, client: httpx.AsyncClient
) -> None:
    stale = CloudApiProvider(
        client, base_url=graph[1], phone_number_id=PHONE_NUMBER_ID, access_token="EAAG-stale"
    )

    failure = await send_failure(stale, text_message())

    assert (failure.kind, failure.code, failure.http_status) == (FailureKind.AUTH, "190", 401)
    assert fake.accepted == 0


async def test_success_without_a_message_id_is_an_unknown_outcome(
    provider: CloudApiProvider, fake: FakeGraphApi
) -> None:
    fake.answer_next(ScriptedAnswer(status=200, body={"messaging_product": "whatsapp"}))

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.outcome_unknown is True
    assert failure.retryable is False


# --- transport failures -------------------------------------------------------------------


async def test_read_timeout_is_transient_with_unknown_outcome(
    graph: tuple[FakeGraphApi, str], fake: FakeGraphApi, client: httpx.AsyncClient
) -> None:
    provider = CloudApiProvider(
        client,
        base_url=graph[1],
        phone_number_id=PHONE_NUMBER_ID,
        access_token=TOKEN,
        timeout=httpx.Timeout(0.2),
    )
    fake.answer_next(ScriptedAnswer(status=200, body={}, delay=0.8))

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.code == "ReadTimeout"
    assert failure.outcome_unknown is True
    assert failure.retryable is False, "the request may have been accepted: never re-send"


async def test_refused_connection_is_transient_and_safe_to_retry(
    client: httpx.AsyncClient,
) -> None:
    provider = CloudApiProvider(
        client,
        base_url=f"http://127.0.0.1:{closed_port()}",
        phone_number_id=PHONE_NUMBER_ID,
        access_token=TOKEN,
    )

    failure = await send_failure(provider, text_message())

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.code == "ConnectError"
    assert failure.outcome_unknown is False
    assert failure.retryable is True


async def test_connection_dropped_after_the_request_is_an_unknown_outcome(
    client: httpx.AsyncClient,
) -> None:
    received = asyncio.Event()

    async def read_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        writer.close()

    server = await asyncio.start_server(read_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = CloudApiProvider(
        client,
        base_url=f"http://127.0.0.1:{port}",
        phone_number_id=PHONE_NUMBER_ID,
        access_token=TOKEN,
    )
    try:
        failure = await send_failure(provider, text_message())
    finally:
        server.close()
        await server.wait_closed()

    assert received.is_set()
    assert failure.kind is FailureKind.TRANSIENT
    assert failure.outcome_unknown is True
    assert failure.retryable is False


# --- secrets ------------------------------------------------------------------------------


async def test_the_token_never_appears_in_failures_logs_or_repr(
    provider: CloudApiProvider,
    fake: FakeGraphApi,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer_next(
        ScriptedAnswer(
            status=400,
            body={
                "error": {
                    "message": f"Malformed access token {TOKEN}",
                    "type": "OAuthException",
                    "code": 190,
                    "error_data": {"details": f"token {TOKEN} is not valid"},
                }
            },
        )
    )
    fake.answer_next(ScriptedAnswer(status=502, body=f"bad gateway for {TOKEN}"))
    failures = [await send_failure(provider, text_message()) for _ in range(2)]
    refused = CloudApiProvider(
        client,
        base_url=f"http://127.0.0.1:{closed_port()}",
        phone_number_id=PHONE_NUMBER_ID,
        access_token=TOKEN,
    )
    failures.append(await send_failure(refused, text_message()))

    assert [failure.kind for failure in failures] == [
        FailureKind.AUTH,
        FailureKind.TRANSIENT,
        FailureKind.TRANSIENT,
    ]
    for failure in failures:
        texts = [str(failure), repr(failure), failure.title, failure.detail]
        assert all(TOKEN not in text for text in texts)
        assert failure.__cause__ is None
    assert "***" in failures[0].detail
    assert TOKEN not in repr(provider)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(record.__dict__) for record in caplog.records)
