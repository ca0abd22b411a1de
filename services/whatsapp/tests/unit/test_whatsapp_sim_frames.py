"""The ``sim`` provider's frames: building, parsing, error codes and close codes, no socket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from whatsapp.adapters.sim_session import (
    NOT_CONNECTED_CODE,
    Keepalive,
    MalformedFrame,
    SimConnection,
    close_outcome,
    decode_frame,
    error_kind,
    failure_from_error,
    hello_frame,
    parse_inbound,
    parse_pairing,
    parse_status,
    read_keepalive,
    send_frame,
    sessions_url,
)
from whatsapp.domain.messages import (
    InboundMessage,
    Media,
    MediaKind,
    MessageKind,
    MessageStatus,
    OutboundMessage,
    StatusUpdate,
    Template,
    Text,
)
from whatsapp.domain.provider import (
    CloseKind,
    ConnectionClosed,
    FailureKind,
    Pairing,
    ProviderFailure,
    SessionConnection,
)

pytestmark = pytest.mark.unit

SESSION = "sess-7f3a"
OUR_PHONE = "+5511940001000"
CUSTOMER = "+5511988887777"
MESSAGE_ID = "9b2f4d8e-3c1a-4f5b-8e7d-6a0b1c2d3e4f"
STAMP = 1_795_470_920
MOMENT = datetime.fromtimestamp(STAMP, UTC)


# --- URLs and outgoing frames -------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        ("http://127.0.0.1:8790", "ws://127.0.0.1:8790/sim/v1/sessions/sess-7f3a"),
        ("http://127.0.0.1:8790/", "ws://127.0.0.1:8790/sim/v1/sessions/sess-7f3a"),
        ("https://wasim.example", "wss://wasim.example/sim/v1/sessions/sess-7f3a"),
        ("ws://host:1", "ws://host:1/sim/v1/sessions/sess-7f3a"),
    ],
)
def test_sessions_url_turns_the_base_url_into_the_session_endpoint(base_url: str, url: str) -> None:
    assert sessions_url(base_url, SESSION) == url


def test_sessions_url_encodes_the_session_id_and_refuses_other_schemes() -> None:
    assert sessions_url("http://h:1", "loja 1#a").endswith("/sessions/loja%201%23a")
    with pytest.raises(ValueError, match="not an http"):
        sessions_url("ftp://h", SESSION)


def test_hello_carries_credentials_only_when_there_are_some() -> None:
    assert hello_frame(SESSION, None) == {"type": "hello", "session_id": SESSION}
    assert hello_frame(SESSION, "simcred.abc") == {
        "type": "hello",
        "session_id": SESSION,
        "credentials": "simcred.abc",
    }


def test_send_frame_of_a_text_is_the_body_string() -> None:
    message = OutboundMessage(MESSAGE_ID, CUSTOMER, Text("Olá!", preview_url=True), reply_to="w1")
    assert send_frame(message) == {
        "type": "send",
        "message_id": MESSAGE_ID,
        "to": CUSTOMER,
        "text": "Olá!",
    }


def test_send_frame_of_a_template_lists_its_body_parameters() -> None:
    message = OutboundMessage(MESSAGE_ID, CUSTOMER, Template("boleto", "pt_BR", ("Ana", "10/12")))
    assert send_frame(message)["template"] == {
        "name": "boleto",
        "language": "pt_BR",
        "body_parameters": ["Ana", "10/12"],
    }
    assert "text" not in send_frame(message)


def test_send_frame_of_media_by_link_with_caption() -> None:
    media = Media(MediaKind.IMAGE, link="https://cdn.example/p.jpg", caption="Promoção")
    frame = send_frame(OutboundMessage(MESSAGE_ID, CUSTOMER, media))
    assert frame["media"] == {
        "kind": "image",
        "ref": "https://cdn.example/p.jpg",
        "caption": "Promoção",
    }


def test_send_frame_of_a_document_by_media_id_with_filename() -> None:
    media = Media(MediaKind.DOCUMENT, media_id="1013859", filename="boleto.pdf")
    frame = send_frame(OutboundMessage(MESSAGE_ID, CUSTOMER, media))
    assert frame["media"] == {"kind": "document", "ref": "1013859", "filename": "boleto.pdf"}


# --- incoming frames ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"no": "type"}', '{"type": 3}'])
def test_decode_frame_refuses_what_is_not_a_typed_object(raw: str) -> None:
    with pytest.raises(MalformedFrame):
        decode_frame(raw)


def test_decode_frame_reads_text_and_bytes() -> None:
    assert decode_frame('{"type": "pong"}') == {"type": "pong"}
    assert decode_frame(b'{"type": "pong", "id": "1"}') == {"type": "pong", "id": "1"}


def test_read_keepalive_takes_the_announced_terms() -> None:
    frame = {"type": "connected", "keepalive": {"interval_s": 10, "timeout_s": 30.0}}
    assert read_keepalive(frame) == Keepalive(interval_s=10.0, timeout_s=30.0)


@pytest.mark.parametrize(
    "keepalive",
    [None, "30", {"interval_s": 0, "timeout_s": 30}, {"interval_s": 40, "timeout_s": 30}, {}],
)
def test_read_keepalive_ignores_unusable_terms(keepalive: object) -> None:
    assert read_keepalive({"type": "connected", "keepalive": keepalive}) is None


def test_parse_pairing() -> None:
    frame = {"type": "pairing", "qr": "2@abc,def", "code": "ABCD-1234", "expires_in": 60}
    assert parse_pairing(frame) == Pairing(qr="2@abc,def", code="ABCD-1234", expires_in_s=60.0)
    with pytest.raises(MalformedFrame, match="qr"):
        parse_pairing({"type": "pairing", "code": "ABCD-1234", "expires_in": 60})


def _status_frame(status: str, **extra: object) -> dict[str, object]:
    return {
        "type": "status",
        "message_id": MESSAGE_ID,
        "provider_message_id": "wamid.sim.1",
        "status": status,
        "timestamp": STAMP,
        "recipient": CUSTOMER,
        **extra,
    }


@pytest.mark.parametrize(
    ("provider_status", "status"),
    [
        ("sent", MessageStatus.SENT),
        ("delivered", MessageStatus.DELIVERED),
        ("read", MessageStatus.READ),
        ("deleted", MessageStatus.UNSPECIFIED),
    ],
)
def test_parse_status_maps_the_status_and_keeps_our_message_id(
    provider_status: str, status: MessageStatus
) -> None:
    assert parse_status(_status_frame(provider_status), SESSION) == StatusUpdate(
        provider_message_id="wamid.sim.1",
        status=status,
        recipient_phone_e164=CUSTOMER,
        occurred_at=MOMENT,
        message_id=MESSAGE_ID,
        provider_number_id=SESSION,
        provider_status=provider_status,
    )


def test_parse_status_failed_carries_the_classified_error() -> None:
    error = {"code": 131026, "title": "Message undeliverable", "detail": "not a user"}
    update = parse_status(_status_frame("failed", error=error), SESSION)
    assert update.status is MessageStatus.FAILED
    assert update.error is not None
    assert (update.error.code, update.error.title, update.error.detail) == (
        "131026",
        "Message undeliverable",
        "not a user",
    )
    assert update.error.kind is FailureKind.UNDELIVERABLE


def test_parse_status_failed_with_a_quality_code_is_quality() -> None:
    update = parse_status(_status_frame("failed", error={"code": 131048}), SESSION)
    assert update.error is not None
    assert update.error.kind is FailureKind.QUALITY


def test_parse_status_without_our_message_id_leaves_it_empty() -> None:
    update = parse_status(_status_frame("sent", message_id=None), SESSION)
    assert update.message_id == ""


@pytest.mark.parametrize(
    "change",
    [
        {"provider_message_id": None},
        {"status": ""},
        {"timestamp": "yesterday"},
        {"timestamp": None},
        {"recipient": "+0"},
    ],
)
def test_parse_status_refuses_unreadable_frames(change: dict[str, object]) -> None:
    with pytest.raises(MalformedFrame):
        parse_status({**_status_frame("sent"), **change}, SESSION)


def test_parse_inbound_is_a_text_message_to_our_number() -> None:
    frame = {
        "type": "inbound",
        "provider_message_id": "wamid.in.1",
        "from": "+5511977776666",
        "text": "Quero saber mais",
        "timestamp": STAMP,
        "profile_name": "Ana",
        "reply_to": "wamid.sim.1",
    }
    assert parse_inbound(frame, SESSION, OUR_PHONE) == InboundMessage(
        provider_message_id="wamid.in.1",
        from_phone_e164="+5511977776666",
        to_phone_e164=OUR_PHONE,
        kind=MessageKind.TEXT,
        sent_at=MOMENT,
        provider_number_id=SESSION,
        text="Quero saber mais",
        profile_name="Ana",
        in_reply_to="wamid.sim.1",
        provider_type="text",
    )


def test_parse_inbound_accepts_a_string_timestamp_and_no_reply() -> None:
    frame = {
        "type": "inbound",
        "provider_message_id": "wamid.in.2",
        "from": "5511977776666",
        "text": "Oi",
        "timestamp": str(STAMP),
        "profile_name": "",
    }
    message = parse_inbound(frame, SESSION, OUR_PHONE)
    assert (message.from_phone_e164, message.sent_at, message.in_reply_to) == (
        "+5511977776666",
        MOMENT,
        "",
    )


def test_parse_inbound_refuses_a_sender_that_is_not_a_phone() -> None:
    frame = {"type": "inbound", "provider_message_id": "w", "from": "abc", "timestamp": STAMP}
    with pytest.raises(MalformedFrame, match="not an international phone"):
        parse_inbound(frame, SESSION, OUR_PHONE)


# --- error codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (NOT_CONNECTED_CODE, FailureKind.TRANSIENT),
        (130429, FailureKind.THROTTLED),
        (131056, FailureKind.PAIR_RATE_LIMITED),
        (131048, FailureKind.QUALITY),
        (131026, FailureKind.UNDELIVERABLE),
        (131047, FailureKind.REENGAGEMENT_REQUIRED),
        (131000, FailureKind.TRANSIENT),
        (100, FailureKind.INVALID_REQUEST),
        (190, FailureKind.AUTH),
        (424242, FailureKind.INVALID_REQUEST),
        (None, FailureKind.INVALID_REQUEST),
    ],
)
def test_error_kind(code: int | None, kind: FailureKind) -> None:
    assert error_kind(code) is kind


def test_failure_from_an_error_frame_is_known_and_has_no_retry_after() -> None:
    failure = failure_from_error(
        {
            "type": "error",
            "message_id": MESSAGE_ID,
            "code": 130429,
            "title": "Rate limit hit",
            "detail": "too many messages",
        }
    )
    assert (failure.kind, failure.code, failure.title, failure.detail) == (
        FailureKind.THROTTLED,
        "130429",
        "Rate limit hit",
        "too many messages",
    )
    assert failure.retryable
    assert not failure.outcome_unknown
    assert failure.retry_after is None


def test_failure_from_a_not_connected_error_is_retryable() -> None:
    failure = failure_from_error({"type": "error", "code": 9001, "title": "Not connected"})
    assert (failure.kind, failure.retryable, failure.outcome_unknown) == (
        FailureKind.TRANSIENT,
        True,
        False,
    )


def test_failure_from_an_undeliverable_error_is_final() -> None:
    failure = failure_from_error({"type": "error", "code": 131026})
    assert failure.kind is FailureKind.UNDELIVERABLE
    assert not failure.retryable


# --- close codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (4003, CloseKind.BANNED),
        (4004, CloseKind.LOGGED_OUT),
        (4005, CloseKind.REPLACED),
        (4000, CloseKind.DISCONNECTED),
        (4001, CloseKind.DISCONNECTED),
        (4002, CloseKind.DISCONNECTED),
        (4006, CloseKind.DISCONNECTED),
        (1012, CloseKind.DISCONNECTED),
        (1006, CloseKind.DISCONNECTED),
        (1000, CloseKind.DISCONNECTED),
        (None, CloseKind.DISCONNECTED),
    ],
)
def test_close_outcome_by_code(code: int | None, kind: CloseKind) -> None:
    assert close_outcome(code, "why") == ConnectionClosed(kind, "why", code)


def test_close_outcome_takes_the_reason_of_the_announcing_frame() -> None:
    announced = ConnectionClosed(CloseKind.BANNED, "spam reports")
    assert close_outcome(4003, "banned", announced=announced) == ConnectionClosed(
        CloseKind.BANNED, "spam reports", 4003
    )


def test_close_outcome_trusts_the_announcing_frame_when_the_link_drops_first() -> None:
    announced = ConnectionClosed(CloseKind.LOGGED_OUT, "logged out from the phone")
    assert close_outcome(1006, "", announced=announced) == ConnectionClosed(
        CloseKind.LOGGED_OUT, "logged out from the phone", 1006
    )


def test_close_outcome_is_closed_when_we_closed_it() -> None:
    assert close_outcome(1000, "", closed_by_us=True) == ConnectionClosed(
        CloseKind.CLOSED, "", 1000
    )


def test_close_outcome_reports_a_ban_even_when_we_were_closing() -> None:
    outcome = close_outcome(4003, "banned", closed_by_us=True)
    assert outcome.kind is CloseKind.BANNED


# --- the connection without a socket ------------------------------------------------------


class _Listener:
    async def inbound(self, message: InboundMessage) -> None: ...

    async def status(self, update: StatusUpdate) -> None: ...

    async def pairing(self, pairing: Pairing) -> None: ...

    async def connected(self, phone_e164: str, new_credentials: str | None) -> None: ...


def _connection(credentials: str | None = "simcred.secret-value") -> SimConnection:
    return SimConnection("http://127.0.0.1:9", SESSION, credentials, _Listener())


async def test_send_before_connecting_is_not_connected_and_safe_to_retry() -> None:
    connection: SessionConnection = _connection()
    with pytest.raises(ProviderFailure) as caught:
        await connection.send(OutboundMessage(MESSAGE_ID, CUSTOMER, Text("Oi")))
    failure = caught.value
    assert (failure.kind, failure.code, failure.retryable, failure.outcome_unknown) == (
        FailureKind.TRANSIENT,
        "not_connected",
        True,
        False,
    )


async def test_close_before_run_makes_run_end_closed_without_connecting() -> None:
    connection = _connection()
    await connection.close()
    await connection.close()
    assert (await connection.run()).kind is CloseKind.CLOSED
    with pytest.raises(RuntimeError, match="runs once"):
        await connection.run()


def test_repr_masks_the_credentials() -> None:
    assert "secret-value" not in repr(_connection())
    assert "'***'" in repr(_connection())
    assert "credentials=None" in repr(_connection(None))


@pytest.mark.parametrize(
    ("session_id", "timeouts"), [("", {}), ("a/b", {}), (SESSION, {"ack_timeout_s": 0})]
)
def test_connection_refuses_bad_arguments(session_id: str, timeouts: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimConnection("http://h:1", session_id, None, _Listener(), **timeouts)
