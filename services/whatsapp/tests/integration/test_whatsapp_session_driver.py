"""The session driver on a real database, with a scripted connection standing in for the
provider: state machine, breaker, reconnection, send outcomes, and what gets published.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import whatsapp
from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.db import Database
from esquadrao_common.events import new_envelope
from esquadrao_common.migrations import upgrade
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.resilience.ratelimit import LocalTokenBucket
from sqlalchemy import select
from whatsapp.adapters.limits import SessionLimiter
from whatsapp.domain.ledger import Priority
from whatsapp.domain.messages import MessageStatus, OutboundMessage
from whatsapp.domain.provider import (
    CloseKind,
    ConnectionClosed,
    ConnectionListener,
    FailureKind,
    ProviderFailure,
    SendAccepted,
    SessionConnection,
)
from whatsapp.domain.sessions import ProviderKind, ReconnectPolicy, Session, SessionState
from whatsapp.service_layer import messages as ledger
from whatsapp.service_layer.driver import DriverPolicy, SessionDriver
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

pytestmark = pytest.mark.integration

MIGRATIONS = Path(whatsapp.__file__).parent / "migrations"
COMPANY = "co-driver"
OWNER = "test-worker"
#: Bound of every wait for the driver to reach a state.
WAIT_S = 15.0


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url)
    db = Database(database_url)
    yield db
    await db.dispose()


class JsonVault:
    """Credentials "sealed" as plain JSON: the driver only needs the round trip."""

    def seal(self, secrets: Mapping[str, Any]) -> bytes:
        return json.dumps(dict(secrets)).encode()

    def open(self, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(sealed)
        return opened


#: What a scripted send does: answer with a provider id, or raise a failure.
SendScript = Callable[[OutboundMessage], SendAccepted]


@dataclass
class Script:
    """How the fake provider behaves, connection by connection."""

    #: For each successive connection: "ok" (connects), "refuse" (cannot connect),
    #: "ban" (connects, then banned), or "drop" (connects, then drops).
    connections: list[str] = field(default_factory=list)
    send: SendScript = lambda message: SendAccepted(f"wamid.{message.message_id}")
    sent: list[str] = field(default_factory=list)
    opened: int = 0


class FakeConnection:
    def __init__(self, script: Script, listener: ConnectionListener) -> None:
        self.script = script
        self.listener = listener
        self.closed = asyncio.Event()
        self.ending: ConnectionClosed | None = None
        self.connected = False

    async def run(self) -> ConnectionClosed:
        index = self.script.opened
        self.script.opened += 1
        behaviour = self.script.connections[index] if index < len(self.script.connections) else "ok"
        if behaviour == "refuse":
            raise ConnectionRefusedError("refused")
        await self.listener.connected("+5511900000001", None)
        self.connected = True
        if behaviour == "ban":
            return ConnectionClosed(CloseKind.BANNED, "spam reports")
        if behaviour == "drop":
            return ConnectionClosed(CloseKind.DISCONNECTED, "link dropped")
        await self.closed.wait()
        return ConnectionClosed(CloseKind.CLOSED)

    async def send(self, message: OutboundMessage) -> SendAccepted:
        accepted = self.script.send(message)
        self.script.sent.append(message.message_id)
        return accepted

    async def close(self) -> None:
        self.closed.set()


@dataclass
class Harness:
    database: Database
    script: Script
    session_id: str
    driver: SessionDriver
    limiter: SessionLimiter

    def uow(self) -> WhatsappUnitOfWork:
        return WhatsappUnitOfWork(self.database)

    async def session(self) -> Session:
        async with self.uow() as uow:
            session = await uow.sessions.get(self.session_id)
        assert session is not None
        return session

    async def wait_state(self, state: SessionState) -> Session:
        async with asyncio.timeout(WAIT_S):
            while True:
                session = await self.session()
                if session.state is state:
                    return session
                await asyncio.sleep(0.02)

    async def queue(self, *, priority: Priority = Priority.INTERACTIVE) -> str:
        message_id = str(uuid.uuid4())
        command = commands_pb2.SendMessage(
            message_id=message_id,
            session_id=self.session_id,
            to_phone_e164="+5511988887777",
            text=commands_pb2.TextContent(body="Olá"),
        )
        wrapper = commands_pb2.WhatsappCommand(send_message=command)
        envelope = new_envelope("esquadrao.whatsapp.v1.SendMessage", COMPANY, "test")
        async with self.uow() as uow:
            accepted = await ledger.accept_command(
                uow, wrapper.send_message, envelope, priority, "whatsapp.send.interactive.v1", now()
            )
            await uow.commit()
        assert accepted is ledger.Accepted.QUEUED
        self.driver.wake()
        return message_id

    async def status_of(self, message_id: str) -> MessageStatus:
        async with self.uow() as uow:
            entry = await uow.ledger.get(message_id)
        assert entry is not None
        return entry.status

    async def wait_status(self, message_id: str, status: MessageStatus) -> None:
        async with asyncio.timeout(WAIT_S):
            while await self.status_of(message_id) is not status:
                await asyncio.sleep(0.02)

    async def events(self) -> list[whatsapp_pb2.WhatsappEvent]:
        async with self.database.sessionmaker() as db:
            rows = await db.execute(
                select(outbox_table.c.value)
                .where(outbox_table.c.topic == "whatsapp.events.v1")
                .order_by(outbox_table.c.id)
            )
            return [whatsapp_pb2.WhatsappEvent.FromString(value) for (value,) in rows]

    async def health_changes(self) -> list[tuple[int, str]]:
        return [
            (event.session_health_changed.breaker_state, event.session_health_changed.reason)
            for event in await self.events()
            if event.WhichOneof("payload") == "session_health_changed"
        ]


@pytest.fixture
async def make_harness(database: Database) -> AsyncIterator[Callable[..., Any]]:
    drivers: list[SessionDriver] = []

    async def build(script: Script, **policy: Any) -> Harness:
        session_id = str(uuid.uuid4())
        moment = now()
        session = Session(
            id=session_id,
            company_id=COMPANY,
            name="loja",
            provider=ProviderKind.SIM,
            desired_running=True,
            profile="lifted",
            created_at=moment,
            updated_at=moment,
        )
        async with WhatsappUnitOfWork(database) as uow:
            await uow.sessions.add(session, None)
            await uow.sessions.set_owner([session_id], OWNER)
            await uow.commit()
        limiter = SessionLimiter(LocalTokenBucket())

        def connect(
            session: Session, secrets: dict[str, Any], listener: ConnectionListener
        ) -> SessionConnection:
            return FakeConnection(script, listener)

        defaults: dict[str, Any] = {
            "reconnect": ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.05, max_retries=50),
            "breaker_threshold": 3,
            "breaker_timeout_s": 0.3,
            "retry": ledger.RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2),
        }
        driver = SessionDriver(
            session,
            owner=OWNER,
            uow=lambda: WhatsappUnitOfWork(database),
            connect=connect,
            vault=JsonVault(),
            limiter=limiter,
            receipts=lambda session, update: None,
            policy=DriverPolicy(**(defaults | policy)),
            rng=random.Random(7),
        )
        drivers.append(driver)
        driver.start()
        return Harness(database, script, session_id, driver, limiter)

    yield build
    for driver in drivers:
        await driver.stop()


async def test_connects_sends_and_publishes_each_transition(make_harness: Any) -> None:
    harness: Harness = await make_harness(Script())
    session = await harness.wait_state(SessionState.CONNECTED)
    assert session.phone_e164 == "+5511900000001"
    message_id = await harness.queue()
    await harness.wait_status(message_id, MessageStatus.SENT)
    assert harness.script.sent == [message_id]
    states = [
        (event.session_state_changed.previous_state, event.session_state_changed.state)
        for event in await harness.events()
        if event.WhichOneof("payload") == "session_state_changed"
    ]
    assert states == [
        (whatsapp_pb2.SESSION_STATE_STOPPED, whatsapp_pb2.SESSION_STATE_STARTING),
        (whatsapp_pb2.SESSION_STATE_STARTING, whatsapp_pb2.SESSION_STATE_CONNECTED),
    ]


async def test_breaker_opens_after_failed_connections_then_half_open_probe_closes_it(
    make_harness: Any,
) -> None:
    harness: Harness = await make_harness(Script(connections=["refuse"] * 3 + ["ok"]))
    await harness.wait_state(SessionState.CONNECTED)
    assert harness.script.opened == 4
    changes = [state for state, _ in await harness.health_changes()]
    assert changes == [
        whatsapp_pb2.BREAKER_STATE_OPEN,
        whatsapp_pb2.BREAKER_STATE_HALF_OPEN,
        whatsapp_pb2.BREAKER_STATE_CLOSED,
    ]
    assert (await harness.session()).breaker_state == "closed"


async def test_quality_signal_trips_the_breaker_at_once_and_fails_the_message(
    make_harness: Any,
) -> None:
    def spam(message: OutboundMessage) -> SendAccepted:
        raise ProviderFailure(FailureKind.QUALITY, "131048", "Spam rate limit hit")

    harness: Harness = await make_harness(Script(send=spam), breaker_timeout_s=60.0)
    await harness.wait_state(SessionState.CONNECTED)
    first = await harness.queue()
    await harness.wait_status(first, MessageStatus.FAILED)
    second = await harness.queue()
    await asyncio.sleep(0.3)
    # Open: nothing else goes to the provider, the next message waits.
    assert harness.script.sent == []
    assert await harness.status_of(second) is MessageStatus.QUEUED
    changes = await harness.health_changes()
    assert changes[0][0] == whatsapp_pb2.BREAKER_STATE_OPEN
    assert "131048" in changes[0][1]
    assert (await harness.session()).breaker_state == "open"
    # An operator resets it: the waiting message goes (and fails the same way here).
    await harness.driver.control(commands_pb2.SESSION_ACTION_RESET_BREAKER, "checked")
    await harness.wait_status(second, MessageStatus.FAILED)


async def test_throttle_halves_the_rate_and_the_message_is_retried(make_harness: Any) -> None:
    answers = iter(["throttle", "ok"])

    def throttled_once(message: OutboundMessage) -> SendAccepted:
        if next(answers) == "throttle":
            raise ProviderFailure(FailureKind.THROTTLED, "130429", "Rate limit hit")
        return SendAccepted(f"wamid.{message.message_id}")

    harness: Harness = await make_harness(Script(send=throttled_once))
    await harness.wait_state(SessionState.CONNECTED)
    ceiling = harness.limiter.current_rate(harness.session_id)
    message_id = await harness.queue()
    await harness.wait_status(message_id, MessageStatus.SENT)
    assert harness.limiter.current_rate(harness.session_id) < ceiling
    async with harness.uow() as uow:
        entry = await uow.ledger.get(message_id)
    assert entry is not None and entry.attempts == 2


async def test_unknown_outcome_is_never_resent(make_harness: Any) -> None:
    def lost(message: OutboundMessage) -> SendAccepted:
        raise ProviderFailure(FailureKind.TRANSIENT, "ack_lost", outcome_unknown=True)

    harness: Harness = await make_harness(Script(send=lost))
    await harness.wait_state(SessionState.CONNECTED)
    message_id = await harness.queue()
    await harness.wait_status(message_id, MessageStatus.UNKNOWN)
    await asyncio.sleep(0.3)
    assert harness.script.opened == 1


async def test_auth_failure_fails_the_session_and_keeps_the_message(make_harness: Any) -> None:
    def expired(message: OutboundMessage) -> SendAccepted:
        raise ProviderFailure(FailureKind.AUTH, "190", "token expired")

    harness: Harness = await make_harness(Script(send=expired))
    await harness.wait_state(SessionState.CONNECTED)
    message_id = await harness.queue()
    session = await harness.wait_state(SessionState.FAILED)
    assert "credentials refused" in session.state_reason
    assert await harness.status_of(message_id) is MessageStatus.QUEUED


async def test_ban_is_terminal_until_restarted(make_harness: Any) -> None:
    harness: Harness = await make_harness(Script(connections=["ban", "ok"]))
    session = await harness.wait_state(SessionState.BANNED)
    assert session.state_reason == "spam reports"
    await asyncio.sleep(0.2)
    assert harness.script.opened == 1
    await harness.driver.control(commands_pb2.SESSION_ACTION_START, "unbanned")
    await harness.wait_state(SessionState.CONNECTED)
    assert harness.script.opened == 2


async def test_a_flapping_connection_keeps_reconnecting(make_harness: Any) -> None:
    # Each connection succeeds, then drops: attempts count in a row without a connection,
    # so a flapping session reconnects for good instead of failing.
    harness: Harness = await make_harness(
        Script(connections=["drop"] * 6),
        reconnect=ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02, max_retries=2),
        breaker_threshold=100,
    )
    async with asyncio.timeout(WAIT_S):
        while harness.script.opened <= 6:
            await asyncio.sleep(0.02)
    session = await harness.wait_state(SessionState.CONNECTED)
    assert session.reconnect_attempts == 0
    assert harness.driver.figures.reconnects == 6


async def test_reconnection_gives_up_after_max_retries_in_a_row(make_harness: Any) -> None:
    harness: Harness = await make_harness(
        Script(connections=["refuse"] * 10),
        reconnect=ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02, max_retries=4),
        breaker_threshold=100,
    )
    session = await harness.wait_state(SessionState.FAILED)
    assert session.reconnect_attempts == 4
    assert "gave up after 4" in session.state_reason
    assert harness.script.opened == 4


async def test_interactive_goes_before_queued_bulk(make_harness: Any) -> None:
    harness: Harness = await make_harness(
        Script(connections=["refuse"] * 50), breaker_threshold=100
    )
    bulk = [await harness.queue(priority=Priority.BULK) for _ in range(3)]
    interactive = await harness.queue(priority=Priority.INTERACTIVE)
    async with harness.uow() as uow:
        claimed = await ledger.claim(uow, harness.session_id, now(), 4)
        await uow.rollback()
    assert [entry.message_id for entry in claimed] == [interactive, *bulk]


async def test_stopping_lets_the_sends_in_progress_get_their_answer(make_harness: Any) -> None:
    # A rebalance stops drivers while sends wait for the provider's acknowledgement:
    # closing the connection first would turn them into "unknown", most never delivered.
    answered = asyncio.Event()
    sending = asyncio.Event()

    class SlowConnection(FakeConnection):
        """Like the real ones: closing it fails the sends still waiting for an answer."""

        async def send(self, message: OutboundMessage) -> SendAccepted:
            sending.set()
            answer = asyncio.ensure_future(answered.wait())
            closed = asyncio.ensure_future(self.closed.wait())
            await asyncio.wait({answer, closed}, return_when=asyncio.FIRST_COMPLETED)
            answer.cancel()
            closed.cancel()
            if not answered.is_set():
                raise ProviderFailure(FailureKind.TRANSIENT, "ack_lost", outcome_unknown=True)
            return await super().send(message)

    script = Script()
    harness: Harness = await make_harness(script)
    await harness.wait_state(SessionState.CONNECTED)
    harness.driver._connect = lambda session, secrets, listener: SlowConnection(  # type: ignore[method-assign]
        script, listener
    )
    await harness.driver.control(commands_pb2.SESSION_ACTION_RECONNECT, "use the slow one")
    await harness.wait_state(SessionState.CONNECTED)
    message_id = await harness.queue()
    await asyncio.wait_for(sending.wait(), WAIT_S)
    stopping = asyncio.create_task(harness.driver.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done(), "stop() must wait for the answer of the send in progress"
    answered.set()
    await asyncio.wait_for(stopping, WAIT_S)
    assert await harness.status_of(message_id) is MessageStatus.SENT
    assert script.sent == [message_id]


async def test_a_held_driver_keeps_its_connection_and_sends_nothing_until_released(
    make_harness: Any,
) -> None:
    # A rebalance revokes the session's partition and, most often, gives it back.
    script = Script()
    harness: Harness = await make_harness(script)
    await harness.wait_state(SessionState.CONNECTED)
    sent_before = await harness.queue()
    await harness.wait_status(sent_before, MessageStatus.SENT)

    await harness.driver.hold()
    held_message = await harness.queue()
    await asyncio.sleep(0.3)
    assert await harness.status_of(held_message) is MessageStatus.QUEUED
    assert script.sent == [sent_before]

    harness.driver.release()
    await harness.wait_status(held_message, MessageStatus.SENT)
    assert script.opened == 1, "the same connection throughout"
    assert (await harness.session()).state is SessionState.CONNECTED
