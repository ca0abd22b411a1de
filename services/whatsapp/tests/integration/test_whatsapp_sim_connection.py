"""SimConnection against the real WhatsApp simulator: pairing, resuming, sends and their
answers, pushed receipts and inbound messages, every way a connection ends, keep-alive.

The simulator (fixture ``whatsapp_simulator``) may be shared with other tests: each test
uses its own session id and steers only that session (its knobs, pairing, drops), and
counts by its own message ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.testing import eventually
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from whatsapp.adapters.sim_session import SimConnectError, SimConnection
from whatsapp.domain.messages import (
    InboundMessage,
    Media,
    MediaKind,
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

pytestmark = pytest.mark.integration

CUSTOMER = "+5511988887777"
WITHIN = 10.0


class Recorder:
    """A ConnectionListener that keeps everything it is told and lets a test wait for it."""

    def __init__(self) -> None:
        self.pairings: list[Pairing] = []
        self.connects: list[tuple[str, str | None]] = []
        self.statuses: list[StatusUpdate] = []
        self.inbound_messages: list[InboundMessage] = []
        self._changed = asyncio.Condition()

    async def _note(self, record: Callable[[], None]) -> None:
        async with self._changed:
            record()
            self._changed.notify_all()

    async def pairing(self, pairing: Pairing) -> None:
        await self._note(lambda: self.pairings.append(pairing))

    async def connected(self, phone_e164: str, new_credentials: str | None) -> None:
        await self._note(lambda: self.connects.append((phone_e164, new_credentials)))

    async def status(self, update: StatusUpdate) -> None:
        await self._note(lambda: self.statuses.append(update))

    async def inbound(self, message: InboundMessage) -> None:
        await self._note(lambda: self.inbound_messages.append(message))

    async def until(self, condition: Callable[[], bool], within: float = WITHIN) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)


@dataclass
class Live:
    """A connection, its listener and the task running it."""

    connection: SimConnection
    listener: Recorder
    run: asyncio.Task[ConnectionClosed]

    async def ended(self, within: float = WITHIN) -> ConnectionClosed:
        async with asyncio.timeout(within):
            return await asyncio.shield(self.run)

    async def connected(self) -> tuple[str, str | None]:
        await self.listener.until(lambda: bool(self.listener.connects))
        return self.listener.connects[-1]


@dataclass
class Harness:
    """Starts connections to the simulator and closes them all at the end of a test."""

    base_url: str
    wasim: SimulatorControl
    session_id: str = field(default_factory=lambda: f"test-sim-{uuid.uuid4().hex}")
    lives: list[Live] = field(default_factory=list)

    def start(
        self,
        credentials: str | None = None,
        *,
        listener: Recorder | None = None,
        ack_timeout_s: float = 10.0,
    ) -> Live:
        listener = listener or Recorder()
        connection = SimConnection(
            self.base_url, self.session_id, credentials, listener, ack_timeout_s=ack_timeout_s
        )
        live = Live(connection, listener, asyncio.create_task(connection.run()))
        self.lives.append(live)
        return live

    async def connect(self, credentials: str | None = None, *, ack_timeout_s: float = 10.0) -> Live:
        live = self.start(credentials, ack_timeout_s=ack_timeout_s)
        await live.connected()
        return live

    async def paired(self, **knobs: Any) -> tuple[Live, str]:
        """A connection of a freshly paired session (``knobs`` set first), and its
        credentials."""
        await self.wasim.set_session_knobs(self.session_id, pairing_delay_s=0, **knobs)
        live = await self.connect()
        credentials = live.listener.connects[-1][1]
        assert credentials
        return live, credentials


@pytest.fixture
async def harness(whatsapp_simulator: str) -> AsyncIterator[Harness]:
    async with SimulatorControl(whatsapp_simulator) as wasim:
        harness = Harness(whatsapp_simulator, wasim)
        try:
            yield harness
        finally:
            for live in harness.lives:
                await live.connection.close()
            await asyncio.gather(*(live.run for live in harness.lives), return_exceptions=True)


def text(message_id: str | None = None, to: str = CUSTOMER) -> OutboundMessage:
    return OutboundMessage(message_id or str(uuid.uuid4()), to, Text("Olá! Seu pedido saiu."))


# --- pairing and resuming -----------------------------------------------------------------


async def test_pairing_is_reported_then_connected_with_new_credentials(
    harness: Harness,
) -> None:
    await harness.wasim.set_session_knobs(harness.session_id, pairing_delay_s=None)
    live = harness.start()
    await live.listener.until(lambda: bool(live.listener.pairings))
    pairing = live.listener.pairings[0]
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", pairing.code)
    assert pairing.qr
    assert pairing.expires_in_s > 0
    assert not live.connection.is_connected

    await harness.wasim.pair(harness.session_id)
    phone, credentials = await live.connected()

    assert phone == (await harness.wasim.session(harness.session_id))["phone_e164"]
    assert credentials
    assert live.connection.is_connected


async def test_saved_credentials_resume_without_pairing(harness: Harness) -> None:
    first, credentials = await harness.paired()
    await first.connection.close()
    assert (await first.ended()).kind is CloseKind.CLOSED

    again = await harness.connect(credentials)

    assert again.listener.connects == [(first.listener.connects[0][0], None)]
    assert again.listener.pairings == []
    assert (await harness.wasim.session(harness.session_id))["connects"] == 2


async def test_send_while_pairing_is_not_connected_and_retryable(harness: Harness) -> None:
    await harness.wasim.set_session_knobs(harness.session_id, pairing_delay_s=None)
    live = harness.start()
    await live.listener.until(lambda: bool(live.listener.pairings))
    message = text()

    with pytest.raises(ProviderFailure) as caught:
        await live.connection.send(message)

    assert (caught.value.code, caught.value.retryable, caught.value.outcome_unknown) == (
        "not_connected",
        True,
        False,
    )
    assert await harness.wasim.accepted_count(message.message_id) == 0


# --- sends --------------------------------------------------------------------------------


async def test_a_text_is_acknowledged_and_accepted_exactly_once(harness: Harness) -> None:
    live, _ = await harness.paired()
    connection: SessionConnection = live.connection
    message = text()

    accepted = await connection.send(message)

    assert accepted.recipient_id == CUSTOMER
    record = await harness.wasim.message(message.message_id)
    assert record["accepted_count"] == 1
    assert record["accepted"][0]["provider_message_id"] == accepted.provider_message_id


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (Template("boleto_vencendo", "pt_BR", ("Ana", "10/12")), "template"),
        (Media(MediaKind.IMAGE, link="https://cdn.example/promo.jpg", caption="Oferta"), "image"),
        (Media(MediaKind.DOCUMENT, media_id="1013859", filename="boleto.pdf"), "document"),
    ],
)
async def test_templates_and_media_are_accepted_as_their_kind(
    harness: Harness, content: Template | Media, kind: str
) -> None:
    live, _ = await harness.paired()
    message = OutboundMessage(str(uuid.uuid4()), CUSTOMER, content)

    await live.connection.send(message)

    record = await harness.wasim.message(message.message_id)
    assert [item["kind"] for item in record["accepted"]] == [kind]


@pytest.mark.parametrize(
    ("knobs", "kind", "code", "retryable"),
    [
        ({"not_on_whatsapp": [CUSTOMER]}, FailureKind.UNDELIVERABLE, "131026", False),
        ({"throttle_rate": 1}, FailureKind.THROTTLED, "130429", True),
        ({"spam_rate": 1}, FailureKind.QUALITY, "131048", False),
    ],
)
async def test_a_refused_send_fails_with_the_kind_of_its_code(
    harness: Harness, knobs: dict[str, Any], kind: FailureKind, code: str, retryable: bool
) -> None:
    live, _ = await harness.paired(**knobs)
    message = text()

    with pytest.raises(ProviderFailure) as caught:
        await live.connection.send(message)

    failure = caught.value
    assert (failure.kind, failure.code, failure.retryable) == (kind, code, retryable)
    assert not failure.outcome_unknown
    assert failure.retry_after is None
    assert await harness.wasim.accepted_count(message.message_id) == 0


async def test_over_the_throughput_of_the_number_is_throttled(harness: Harness) -> None:
    # A bucket of one message, refilled once in 1,000 s: the second send is over it.
    live, _ = await harness.paired(max_mps=0.001)
    await live.connection.send(text())
    message = text()

    with pytest.raises(ProviderFailure) as caught:
        await live.connection.send(message)

    assert (caught.value.kind, caught.value.code) == (FailureKind.THROTTLED, "130429")
    assert caught.value.retryable
    assert await harness.wasim.accepted_count(message.message_id) == 0


async def test_no_answer_in_time_is_outcome_unknown_and_may_have_been_accepted(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    live, credentials = await harness.paired(latency_ms=500)
    await live.connection.close()
    slow = await harness.connect(credentials, ack_timeout_s=0.05)
    message = text()

    with (
        caplog.at_level(logging.WARNING, logger="whatsapp.adapters.sim_session"),
        pytest.raises(ProviderFailure) as caught,
    ):
        await slow.connection.send(message)

    assert (caught.value.code, caught.value.outcome_unknown, caught.value.retryable) == (
        "ack_lost",
        True,
        False,
    )
    # The simulator committed it anyway, and the late ack is reported in the log.
    await eventually(_count_is(harness, message.message_id, 1))
    await eventually(_async(lambda: "after its send gave up" in caplog.text))
    assert credentials not in caplog.text


async def test_a_send_waiting_when_the_connection_drops_is_outcome_unknown(
    harness: Harness,
) -> None:
    # A long keep-alive, so no ping of ours is the frame that triggers the drop.
    live, _ = await harness.paired(keepalive_timeout_s=300)
    await harness.wasim.set_session_knobs(harness.session_id, disconnect_rate=1)
    message = text()

    with pytest.raises(ProviderFailure) as caught:
        await live.connection.send(message)

    assert (caught.value.code, caught.value.outcome_unknown, caught.value.retryable) == (
        "ack_lost",
        True,
        False,
    )
    assert (await live.ended()).code == 4006
    assert not live.connection.is_connected


# --- pushed traffic -----------------------------------------------------------------------


async def test_receipts_reach_the_listener_in_order(harness: Harness) -> None:
    live, _ = await harness.paired(
        receipt_delays={"sent": 0, "delivered": 0.05, "read": 0.1},
        delivered_rate=1,
        read_rate=1,
    )
    message = text()
    accepted = await live.connection.send(message)

    statuses = live.listener.statuses
    await live.listener.until(lambda: len(statuses) == 3)

    assert [s.status for s in statuses] == [
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.READ,
    ]
    assert {(s.message_id, s.provider_message_id, s.recipient_phone_e164) for s in statuses} == {
        (message.message_id, accepted.provider_message_id, CUSTOMER)
    }
    assert all(s.provider_number_id == harness.session_id for s in statuses)


async def test_a_failed_receipt_carries_the_classified_error(harness: Harness) -> None:
    live, _ = await harness.paired(
        error_delivery="webhook",
        not_on_whatsapp=[CUSTOMER],
        receipt_delays={"sent": 0, "delivered": 0.05, "read": 0.1},
    )
    message = text()

    accepted = await live.connection.send(message)
    await live.listener.until(lambda: bool(live.listener.statuses))

    update = live.listener.statuses[0]
    assert (update.status, update.provider_message_id) == (
        MessageStatus.FAILED,
        accepted.provider_message_id,
    )
    assert update.error is not None
    assert (update.error.code, update.error.kind) == ("131026", FailureKind.UNDELIVERABLE)


async def test_an_inbound_message_reaches_the_listener(harness: Harness) -> None:
    live, _ = await harness.paired()
    phone = live.listener.connects[0][0]

    provider_id = await harness.wasim.inject_inbound(
        session_id=harness.session_id,
        from_phone="+5511977776666",
        text="Quero saber mais",
        profile_name="Ana",
    )
    await live.listener.until(lambda: bool(live.listener.inbound_messages))

    message = live.listener.inbound_messages[0]
    assert (message.provider_message_id, message.from_phone_e164, message.to_phone_e164) == (
        provider_id,
        "+5511977776666",
        phone,
    )
    assert (message.text, message.profile_name) == ("Quero saber mais", "Ana")


# --- how connections end ------------------------------------------------------------------


async def test_a_forced_disconnect_ends_disconnected(harness: Harness) -> None:
    live, _ = await harness.paired()

    await harness.wasim.disconnect(harness.session_id)

    assert await live.ended() == ConnectionClosed(
        CloseKind.DISCONNECTED, "disconnected by the simulator", 4002
    )
    with pytest.raises(ProviderFailure, match="not_connected"):
        await live.connection.send(text())


async def test_a_ban_ends_banned_with_its_reason_and_holds_at_the_next_hello(
    harness: Harness,
) -> None:
    live, credentials = await harness.paired()

    await harness.wasim.ban(harness.session_id, "spam reports")

    assert await live.ended() == ConnectionClosed(CloseKind.BANNED, "spam reports", 4003)
    again = harness.start(credentials)
    assert await again.ended() == ConnectionClosed(CloseKind.BANNED, "spam reports", 4003)
    assert again.listener.connects == []


async def test_a_logout_from_the_phone_ends_logged_out_and_voids_the_credentials(
    harness: Harness,
) -> None:
    live, credentials = await harness.paired()

    await harness.wasim.logout(harness.session_id)

    assert await live.ended() == ConnectionClosed(
        CloseKind.LOGGED_OUT, "logged out from the phone", 4004
    )
    again = harness.start(credentials)
    ended = await again.ended()
    assert (ended.kind, ended.reason) == (CloseKind.LOGGED_OUT, "the credentials are not valid")


async def test_a_second_connection_replaces_the_first(harness: Harness) -> None:
    first, credentials = await harness.paired()

    second = await harness.connect(credentials)

    assert await first.ended() == ConnectionClosed(
        CloseKind.REPLACED, "replaced by a new connection", 4005
    )
    assert second.connection.is_connected
    await second.connection.send(text())


async def test_close_ends_the_run_closed_and_is_idempotent(harness: Harness) -> None:
    live, _ = await harness.paired()

    await live.connection.close()
    await live.connection.close()

    assert (await live.ended()).kind is CloseKind.CLOSED
    with pytest.raises(ProviderFailure, match="not_connected"):
        await live.connection.send(text())
    await eventually(_session_state_is(harness, "offline"))


class _StoreDown(Recorder):
    async def inbound(self, message: InboundMessage) -> None:
        raise RuntimeError("the store is down")


async def test_a_failing_listener_call_closes_the_connection_and_propagates(
    harness: Harness,
) -> None:
    await harness.wasim.set_session_knobs(harness.session_id, pairing_delay_s=0)
    live = harness.start(listener=_StoreDown())
    await live.connected()

    await harness.wasim.inject_inbound(
        session_id=harness.session_id, from_phone="+5511977776666", text="Oi"
    )

    with pytest.raises(RuntimeError, match="the store is down"):
        await live.ended()
    assert not live.connection.is_connected
    await eventually(_session_state_is(harness, "offline"))


async def test_an_unreachable_simulator_raises_an_oserror() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = SimConnection(f"http://127.0.0.1:{port}", "nobody", None, Recorder())

    with pytest.raises(SimConnectError) as caught:
        await connection.run()

    assert isinstance(caught.value, OSError)


# --- keep-alive ---------------------------------------------------------------------------


async def test_pings_keep_the_connection_up_past_the_keepalive_timeout(
    harness: Harness,
) -> None:
    live, _ = await harness.paired(keepalive_timeout_s=1.0)

    done, _ = await asyncio.wait({live.run}, timeout=3.0)

    assert not done, f"the connection ended: {live.run.result()}"
    assert (await harness.wasim.session(harness.session_id))["state"] == "connected"
    await live.connection.send(text())


async def test_a_silent_simulator_is_dropped_as_disconnected() -> None:
    received: list[dict[str, Any]] = []

    async def mute(websocket: ServerConnection) -> None:
        """Answers hello with connected, then never says a word again."""
        await websocket.recv()
        await websocket.send(
            json.dumps(
                {
                    "type": "connected",
                    "phone_e164": "+5511940001000",
                    "keepalive": {"interval_s": 0.1, "timeout_s": 0.5},
                }
            )
        )
        try:
            async for raw in websocket:
                received.append(json.loads(raw))
        except WebSocketClosed:
            pass

    async with serve(mute, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        connection = SimConnection(f"http://127.0.0.1:{port}", "mute", None, Recorder())
        async with asyncio.timeout(WITHIN):
            outcome = await connection.run()

    assert outcome.kind is CloseKind.DISCONNECTED
    assert "no frame from the simulator" in outcome.reason
    assert len([frame for frame in received if frame == {"type": "ping"}]) >= 2


# --- helpers ------------------------------------------------------------------------------


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return check()

    return condition


def _count_is(harness: Harness, message_id: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return await harness.wasim.accepted_count(message_id) == count

    return condition


def _session_state_is(harness: Harness, state: str) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        session = await harness.wasim.session(harness.session_id)
        return bool(session["state"] == state)

    return condition
