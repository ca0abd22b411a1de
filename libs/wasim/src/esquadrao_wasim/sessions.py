"""Session mode: WhatsApp-Web-like connections over WebSocket, for the ``sim`` provider.

``WS /sim/v1/sessions/{session_id}``, JSON text frames, each with a ``type``.

Client → server:

- ``hello {session_id?, credentials?}`` — first frame. Without credentials the session
  pairs (server: ``pairing``, then ``paired`` and ``connected``); with the credentials of
  an earlier ``paired`` it is ``connected`` at once; with others, ``logged_out`` and close.
- ``ping {id?}`` → ``pong {id?}``. Any frame counts as a sign of life: a connection silent
  for ``keepalive_timeout_s`` (announced in ``pairing`` and ``connected``) is closed.
- ``send {message_id, to, text | template | media}`` → ``ack {message_id,
  provider_message_id}`` or ``error {message_id, code, title, detail}`` (Meta's codes).
- ``logout`` → the credentials are revoked, ``logged_out``, close.

Server → client, besides the answers: ``status {message_id, provider_message_id, status,
timestamp, recipient, error?}`` receipts, ``inbound {provider_message_id, from, text,
timestamp, profile_name, reply_to?}``, ``banned {reason}`` and ``logged_out {reason}``
(then close), ``replaced`` (another connection took the session over; then close).
Receipts and inbound messages for a session that is not connected wait (up to
:data:`PENDING_LIMIT`) and follow its next ``connected``.

Close codes: see :class:`CloseCode`. Connections are handled as plain ASGI — one
coroutine and a few slots each, no per-connection timers while idle (one sweeper checks
every deadline) — so one process holds tens of thousands of idle sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from esquadrao_wasim import store
from esquadrao_wasim.errors import INVALID_PARAMETER, NOT_CONNECTED, WhatsappError
from esquadrao_wasim.knobs import Knobs
from esquadrao_wasim.simulator import (
    Channel,
    Event,
    OutboundMessage,
    Sender,
    Simulator,
    StatusEvent,
    digits,
)

log = logging.getLogger(__name__)

SESSIONS_PATH = "/sim/v1/sessions/"
#: Receipts and inbound messages kept for a session while it is not connected.
PENDING_LIMIT = 1000
#: How often the keep-alive deadlines are checked.
SWEEP_INTERVAL_S = 0.25

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class CloseCode(IntEnum):
    """Why the server closed a session's connection."""

    PROTOCOL_ERROR = 4000
    KEEPALIVE_TIMEOUT = 4001
    DISCONNECTED = 4002  # forced by the control API
    BANNED = 4003
    LOGGED_OUT = 4004
    REPLACED = 4005
    STREAM_ERROR = 4006  # a random disconnect (``disconnect_rate``)


class _Template(BaseModel):
    name: str = Field(min_length=1)
    language: str = "pt_BR"
    body_parameters: list[str] = Field(default_factory=list)


class _Media(BaseModel):
    kind: Literal["image", "audio", "video", "document", "sticker"]
    ref: str = Field(min_length=1)
    caption: str | None = None
    filename: str | None = None


class SendFrame(BaseModel):
    """A ``send`` frame: exactly one of ``text``, ``template``, ``media``."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(min_length=1)
    to: str = Field(min_length=8)
    text: str | None = Field(default=None, min_length=1)
    template: _Template | None = None
    media: _Media | None = None

    def message(self) -> OutboundMessage:
        contents = [c for c in (self.text, self.template, self.media) if c is not None]
        if len(contents) != 1:
            raise ValueError("a send carries exactly one of text, template, media")
        if self.template is not None:
            kind = "template"
        elif self.media is not None:
            kind = self.media.kind
        else:
            kind = "text"
        return OutboundMessage(self.message_id, digits(self.to), kind, kind != "template")


def default_phone(session_id: str) -> str:
    """The number a session gets unless one is configured: a São Paulo mobile number
    derived from the session id (stable across runs)."""
    number = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big")
    return f"+55119{number % 10**8:08d}"


class SessionRecord:
    """What the simulator knows of a session, connected or not."""

    __slots__ = (
        "banned_reason",
        "connection",
        "connects",
        "credentials",
        "pending",
        "phone_e164",
        "session_id",
    )

    def __init__(
        self,
        session_id: str,
        phone_e164: str,
        credentials: str | None = None,
        banned_reason: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.phone_e164 = phone_e164
        self.credentials = credentials
        self.banned_reason = banned_reason
        self.connection: Connection | None = None
        self.connects = 0
        self.pending: deque[dict[str, Any]] | None = None

    def row(self) -> store.SessionRow:
        return store.SessionRow(
            self.session_id, self.phone_e164, self.credentials, self.banned_reason
        )

    @property
    def state(self) -> str:
        if self.banned_reason is not None:
            return "banned"
        if self.connection is None:
            return "offline"
        return self.connection.state

    def describe(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "phone_e164": self.phone_e164,
            "state": self.state,
            "paired": self.credentials is not None,
            "banned_reason": self.banned_reason,
            "connects": self.connects,
            "pending_frames": len(self.pending or ()),
        }


_CLOSE = object()


class Connection:
    """One WebSocket connection of a session; frames go out in order through its outbox."""

    __slots__ = (
        "closed",
        "code_timer",
        "deadline",
        "hub",
        "outbox",
        "pairing_timer",
        "record",
        "send",
        "session_id",
        "state",
        "writer",
    )

    def __init__(self, hub: SessionHub, session_id: str, send: Send, deadline: float) -> None:
        self.hub = hub
        self.session_id = session_id
        self.send = send
        self.deadline = deadline
        self.state: Literal["new", "pairing", "connected"] = "new"
        self.closed = False
        self.record: SessionRecord | None = None
        self.outbox: deque[Any] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.pairing_timer: asyncio.TimerHandle | None = None
        self.code_timer: asyncio.TimerHandle | None = None

    def is_current(self) -> bool:
        """Connected, and still the session's connection."""
        return (
            not self.closed
            and self.state == "connected"
            and self.record is not None
            and self.record.connection is self
        )

    def push(self, frame: dict[str, Any]) -> bool:
        """Queue ``frame`` for the client; False when the connection is closing."""
        if self.closed:
            return False
        self._queue(frame)
        return True

    def close(self, code: CloseCode, reason: str) -> None:
        """Send what is queued, then close with ``code``; later pushes are dropped."""
        if self.closed:
            return
        self.closed = True
        self.stop_pairing()
        self._queue((_CLOSE, code, reason))

    def stop_pairing(self) -> None:
        for timer in (self.pairing_timer, self.code_timer):
            if timer is not None:
                timer.cancel()
        self.pairing_timer = self.code_timer = None

    def _queue(self, item: Any) -> None:
        if self.outbox is None:
            self.outbox = deque()
        self.outbox.append(item)
        if self.writer is None:
            self.writer = self.hub.spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, tuple) and item[0] is _CLOSE:
                    await self.send({"type": "websocket.close", "code": item[1], "reason": item[2]})
                    self.outbox.clear()
                    break
                await self.send({"type": "websocket.send", "text": json.dumps(item)})
        except Exception:  # the peer is gone: the receive loop will see the disconnect
            self.closed = True
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox = None


class SessionHub:
    """Every session and connection; the ASGI handler of ``/sim/v1/sessions/{id}`` and the
    session channel's event sink."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.sessions: dict[str, SessionRecord] = {}
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._pushed_offline = 0

    async def start(self) -> None:
        """Load saved sessions and start the keep-alive sweeper."""
        for row in await self.simulator.database.run(store.load_sessions):
            self.sessions[row.session_id] = SessionRecord(
                row.session_id, row.phone_e164, row.credentials, row.banned_reason
            )
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def sender(self, session_id: str) -> Sender:
        return Sender(Channel.SESSION, session_id)

    def knobs(self, session_id: str) -> Knobs:
        return self.simulator.knobs(self.sender(session_id))

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = scope["path"][len(SESSIONS_PATH) :]  # ASGI paths are decoded already
        if (await receive())["type"] != "websocket.connect":
            return
        if not session_id or "/" in session_id:
            await send({"type": "websocket.close", "code": CloseCode.PROTOCOL_ERROR})
            return
        await send({"type": "websocket.accept"})
        timeout = self.knobs(session_id).keepalive_timeout_s
        connection = Connection(self, session_id, send, time.monotonic() + timeout)
        self.connections.add(connection)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                if connection.closed:
                    continue
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode(errors="replace")
                connection.deadline = time.monotonic() + self.knobs(session_id).keepalive_timeout_s
                self._on_frame(connection, text)
        finally:
            connection.closed = True
            connection.stop_pairing()
            self.connections.discard(connection)
            record = connection.record
            if record is not None and record.connection is connection:
                record.connection = None

    # -- frames ------------------------------------------------------------------------

    def _on_frame(self, connection: Connection, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self._protocol_error(connection, "a frame is a JSON object with a string type")
            return
        kind = frame["type"]
        if connection.state == "new" and connection.record is None:
            if kind != "hello":
                self._protocol_error(connection, "the first frame must be hello")
                return
            self._hello(connection, frame)
        elif kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if "id" in frame:
                pong["id"] = frame["id"]
            connection.push(pong)
        elif kind == "send":
            self._send(connection, frame)
        elif kind == "logout":
            self._logout(connection)
        elif kind == "hello":
            self._protocol_error(connection, "hello was already received")
            return
        else:
            connection.push(_error_frame(None, INVALID_PARAMETER, f"unknown frame type {kind!r}"))
        if not connection.closed:
            rate = self.knobs(connection.session_id).disconnect_rate
            if rate > 0 and self.simulator.rng(self.sender(connection.session_id)).random() < rate:
                connection.close(CloseCode.STREAM_ERROR, "stream error (random disconnect)")

    def _protocol_error(self, connection: Connection, detail: str) -> None:
        connection.push(_error_frame(None, INVALID_PARAMETER, detail))
        connection.close(CloseCode.PROTOCOL_ERROR, detail)

    def _hello(self, connection: Connection, frame: dict[str, Any]) -> None:
        session_id = connection.session_id
        claimed = frame.get("session_id")
        if claimed is not None and claimed != session_id:
            self._protocol_error(connection, "hello.session_id differs from the URL's")
            return
        record = self.sessions.get(session_id)
        if record is None:
            record = self.sessions[session_id] = SessionRecord(
                session_id, default_phone(session_id)
            )
        connection.record = record
        if record.banned_reason is not None:
            connection.push({"type": "banned", "reason": record.banned_reason})
            connection.close(CloseCode.BANNED, "banned")
            return
        previous = record.connection
        if previous is not None and previous is not connection:
            previous.push({"type": "replaced"})
            previous.close(CloseCode.REPLACED, "replaced by a new connection")
        record.connection = connection
        credentials = frame.get("credentials")
        if credentials:
            if record.credentials is not None and secrets.compare_digest(
                str(credentials), record.credentials
            ):
                self._connected(connection)
            else:
                connection.push({"type": "logged_out", "reason": "the credentials are not valid"})
                connection.close(CloseCode.LOGGED_OUT, "logged out")
            return
        self._start_pairing(connection)

    def _keepalive(self, session_id: str) -> dict[str, float]:
        timeout = self.knobs(session_id).keepalive_timeout_s
        return {"interval_s": timeout / 3, "timeout_s": timeout}

    def _start_pairing(self, connection: Connection) -> None:
        connection.state = "pairing"
        knobs = self.knobs(connection.session_id)
        self._new_code(connection)
        if knobs.pairing_delay_s is not None:
            connection.pairing_timer = asyncio.get_running_loop().call_later(
                knobs.pairing_delay_s, self.complete_pairing, connection
            )

    def _new_code(self, connection: Connection) -> None:
        if connection.closed or connection.state != "pairing":
            return
        ttl = self.knobs(connection.session_id).pairing_code_ttl_s
        alphabet = string.ascii_uppercase + string.digits
        code = "".join(secrets.choice(alphabet) for _ in range(8))
        connection.push(
            {
                "type": "pairing",
                "qr": f"2@{secrets.token_urlsafe(24)},{secrets.token_urlsafe(16)}",
                "code": f"{code[:4]}-{code[4:]}",
                "expires_in": ttl,
                "keepalive": self._keepalive(connection.session_id),
            }
        )
        connection.code_timer = asyncio.get_running_loop().call_later(
            ttl, self._new_code, connection
        )

    def complete_pairing(self, connection: Connection) -> None:
        """The phone scanned the code: new credentials, ``paired``, ``connected``."""
        if connection.closed or connection.state != "pairing" or connection.record is None:
            return
        connection.stop_pairing()
        record = connection.record
        record.credentials = f"simcred.{secrets.token_urlsafe(24)}"
        self.simulator.database.run_soon(store.save_session(record.row()))
        connection.push({"type": "paired", "credentials": record.credentials})
        self._connected(connection)

    def _connected(self, connection: Connection) -> None:
        record = connection.record
        assert record is not None
        connection.state = "connected"
        record.connects += 1
        connection.push(
            {
                "type": "connected",
                "phone_e164": record.phone_e164,
                "keepalive": self._keepalive(record.session_id),
            }
        )
        if record.pending:
            for frame in record.pending:
                connection.push(frame)
        record.pending = None

    def _send(self, connection: Connection, frame: dict[str, Any]) -> None:
        message_id = frame.get("message_id") if isinstance(frame.get("message_id"), str) else None
        if not connection.is_current():
            connection.push(_error_frame(message_id, NOT_CONNECTED))
            return
        try:
            message = SendFrame.model_validate(frame).message()
        except (ValidationError, ValueError) as error:
            connection.push(_error_frame(message_id, INVALID_PARAMETER, _first_error(error)))
            return
        self.spawn(self._submit(connection, message))

    async def _submit(self, connection: Connection, message: OutboundMessage) -> None:
        outcome = await self.simulator.submit(
            self.sender(connection.session_id), message, still_open=connection.is_current
        )
        if outcome.provider_message_id is not None:
            connection.push(
                {
                    "type": "ack",
                    "message_id": message.message_id,
                    "provider_message_id": outcome.provider_message_id,
                }
            )
        elif outcome.error is not None:
            connection.push(_error_frame(message.message_id, outcome.error, outcome.details))

    def _logout(self, connection: Connection) -> None:
        record = connection.record
        assert record is not None
        record.credentials = None
        self.simulator.database.run_soon(store.save_session(record.row()))
        connection.push({"type": "logged_out", "reason": "logged out by the client"})
        connection.close(CloseCode.LOGGED_OUT, "logged out")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            for connection in [c for c in self.connections if c.deadline < now and not c.closed]:
                connection.close(CloseCode.KEEPALIVE_TIMEOUT, "keep-alive timeout")

    # -- event sink --------------------------------------------------------------------

    def deliver(self, sender_id: str, event: Event, knobs: Knobs) -> None:
        record = self.sessions.get(sender_id)
        if record is None:
            return
        frame = _event_frame(event)
        connection = record.connection
        if connection is not None and connection.is_current():
            connection.push(frame)
            return
        if record.pending is None:
            record.pending = deque(maxlen=PENDING_LIMIT)
        record.pending.append(frame)
        self._pushed_offline += 1

    def stats(self) -> dict[str, Any]:
        states = {"pairing": 0, "connected": 0, "banned": 0, "offline": 0}
        for record in self.sessions.values():
            state = record.state
            states[state] = states.get(state, 0) + 1
        return {
            "known": len(self.sessions),
            "open_connections": len(self.connections),
            **states,
            "queued_while_offline": self._pushed_offline,
        }

    def clear(self) -> None:
        for record in self.sessions.values():
            record.pending = None
        self._pushed_offline = 0

    # -- control -----------------------------------------------------------------------

    async def configure(self, session_id: str, phone_e164: str | None) -> SessionRecord:
        """Create or update a session before (or between) its connections."""
        record = self.sessions.get(session_id)
        if record is None:
            record = SessionRecord(session_id, phone_e164 or default_phone(session_id))
            self.sessions[session_id] = record
        elif phone_e164 is not None:
            record.phone_e164 = phone_e164
        await self.simulator.database.run(store.save_session(record.row()))
        return record

    def pair(self, session_id: str) -> bool:
        """Complete the pairing of the session's connection now; False if none pairs."""
        record = self.sessions.get(session_id)
        connection = None if record is None else record.connection
        if connection is None or connection.state != "pairing":
            return False
        self.complete_pairing(connection)
        return True

    def disconnect(self, session_id: str) -> bool:
        """Drop the session's connection (the client may reconnect); False if none."""
        record = self.sessions.get(session_id)
        if record is None or record.connection is None:
            return False
        record.connection.close(CloseCode.DISCONNECTED, "disconnected by the simulator")
        return True

    async def ban(self, session_id: str, reason: str) -> SessionRecord:
        """Ban the session: ``banned`` and close now, and at every hello until unbanned."""
        record = await self.configure(session_id, None)
        record.banned_reason = reason
        await self.simulator.database.run(store.save_session(record.row()))
        if record.connection is not None:
            record.connection.push({"type": "banned", "reason": reason})
            record.connection.close(CloseCode.BANNED, "banned")
        return record

    async def unban(self, session_id: str) -> SessionRecord | None:
        record = self.sessions.get(session_id)
        if record is None:
            return None
        record.banned_reason = None
        await self.simulator.database.run(store.save_session(record.row()))
        return record

    async def logout(self, session_id: str) -> SessionRecord | None:
        """Revoke the credentials: the session must pair again."""
        record = self.sessions.get(session_id)
        if record is None:
            return None
        record.credentials = None
        await self.simulator.database.run(store.save_session(record.row()))
        if record.connection is not None:
            record.connection.push({"type": "logged_out", "reason": "logged out from the phone"})
            record.connection.close(CloseCode.LOGGED_OUT, "logged out")
        return record

    def forget_all(self) -> None:
        """Close every connection and forget every session (a full reset)."""
        for connection in list(self.connections):
            connection.close(CloseCode.DISCONNECTED, "the simulator was reset")
        self.sessions.clear()


def _first_error(error: ValidationError | ValueError) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        return f"{location}: {message}" if location else message
    return str(error)


def _error_frame(
    message_id: str | None, error: WhatsappError, detail: str | None = None
) -> dict[str, Any]:
    return {
        "type": "error",
        "message_id": message_id,
        "code": error.code,
        "title": error.title,
        "detail": detail or error.details,
    }


def _event_frame(event: Event) -> dict[str, Any]:
    if isinstance(event, StatusEvent):
        frame: dict[str, Any] = {
            "type": "status",
            "message_id": event.message_id,
            "provider_message_id": event.provider_message_id,
            "status": event.status,
            "timestamp": event.timestamp,
            "recipient": f"+{event.recipient}",
        }
        if event.error is not None:
            frame["error"] = {
                "code": event.error["code"],
                "title": event.error["title"],
                "detail": event.error["error_data"]["details"],
            }
        return frame
    frame = {
        "type": "inbound",
        "provider_message_id": event.provider_message_id,
        "from": f"+{event.from_}",
        "text": event.text,
        "timestamp": event.timestamp,
        "profile_name": event.profile_name,
    }
    if event.reply_to is not None:
        frame["reply_to"] = event.reply_to
    return frame
