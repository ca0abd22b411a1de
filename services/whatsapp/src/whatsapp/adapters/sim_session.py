"""Provider for the WhatsApp simulator's session protocol: the ``sim`` provider.

A :class:`SimConnection` is one WebSocket connection to ``/sim/v1/sessions/{session_id}``
of ``esquadrao-wasim`` (protocol: ``docs/whatsapp-simulator.md``, "Session protocol"),
behaving like a WhatsApp-Web session: it says ``hello`` with the saved credentials (or
none, and the session pairs), keeps the connection alive, sends messages and feeds the
receipts and inbound messages pushed on it to a :class:`ConnectionListener`.

What the session runtime that drives it must know:

* **Credentials and pairing.** Without credentials the simulator pairs: the listener's
  ``pairing`` is called with each code it shows (a new one every ``expires_in_s``), and
  once a phone linked the session, ``connected(phone, new_credentials)`` carries the
  credentials to save (encrypted) for the next connection. With saved credentials
  ``connected(phone, None)`` comes at once. Credentials are never logged, and ``repr``
  masks them. A run that ends LOGGED_OUT means they were revoked (or were never valid):
  forget them, the next connection pairs again.
* **Listener calls happen on the task that awaits** :meth:`SimConnection.run`, one at a
  time and in frame order: each call must have stored what it was given before it
  returns (the simulator does not push a frame twice), and must not wait for anything
  that needs a later frame — above all not for :meth:`SimConnection.send`, whose
  acknowledgement would queue behind the call and time out as ``ack_lost``. An exception
  from the listener closes the connection and propagates out of ``run``.
* **Sends** are accepted only between ``connected`` and the end of the run. Each waits for
  its own ``ack`` or ``error`` (they may come out of order); see :meth:`SimConnection.send`
  for which failures leave the outcome unknown.
* **How a run ends** is a :class:`ConnectionClosed` (see :func:`close_outcome`); ``run``
  raises :class:`SimConnectError` (an ``OSError``) only when it could not connect at all.

Ten thousand idle sessions must be cheap in one process, so a connection is the
``websockets`` client connection (no per-message compression: its zlib state costs tens
of KiB per connection; no library-level pings, the protocol has its own), the task that
runs it, one keep-alive task that sends ``ping`` frames at the interval the simulator
announces, and a few slotted attributes. A dead link (no frame, not even a ``pong``, for
the announced keep-alive timeout) is detected by the reader and ends the run as
DISCONNECTED instead of leaving a session that looks connected and is not.

The frame building and parsing are the pure functions of this module, testable without a
socket. This module must not import ``esquadrao_wasim``: the simulator is a test and
development tool, and this adapter only speaks its wire protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.exceptions import WebSocketException
from websockets.protocol import State

from whatsapp.adapters.cloud_errors import KIND_BY_CODE, classify_delivery_error
from whatsapp.domain.messages import (
    InboundMessage,
    MessageKind,
    MessageStatus,
    OutboundMessage,
    ProviderError,
    StatusUpdate,
    Template,
    Text,
    e164_from_digits,
    is_e164,
)
from whatsapp.domain.provider import (
    CloseKind,
    ConnectionClosed,
    ConnectionListener,
    FailureKind,
    Pairing,
    ProviderFailure,
    SendAccepted,
)

log = logging.getLogger(__name__)

#: Where session connections live under the simulator's base URL.
SESSIONS_PATH: Final = "/sim/v1/sessions/"

#: The simulator's error code for a send on a connection that is not (or no longer)
#: connected: nothing was handed over, so retrying is safe.
NOT_CONNECTED_CODE: Final = 9001

#: Close codes that end the session itself, not just this link. Every other code —
#: 4000 protocol error, 4001 keep-alive timeout, 4002 forced disconnect, 4006 random
#: drop, 1012 simulator stopping, 1006 link lost — is DISCONNECTED: reconnect.
_CLOSE_KINDS: Final = {
    4003: CloseKind.BANNED,
    4004: CloseKind.LOGGED_OUT,
    4005: CloseKind.REPLACED,
}

#: Frames the simulator sends just before such a close, with the reason in words.
_ANNOUNCING_FRAMES: Final = {
    "banned": CloseKind.BANNED,
    "logged_out": CloseKind.LOGGED_OUT,
    "replaced": CloseKind.REPLACED,
}

_STATUSES: Final = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "failed": MessageStatus.FAILED,
}

_PING: Final = '{"type":"ping"}'


class SimConnectError(ConnectionError):
    """The session's connection could not be opened (refused, timed out, or the URL is not
    a session endpoint). Nothing was sent; the caller reconnects with backoff."""


class MalformedFrame(ValueError):
    """A frame from the simulator that this client cannot read; it is logged and skipped."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The simulator's keep-alive terms: it closes a connection silent for ``timeout_s``
    and expects a frame every ``interval_s``."""

    interval_s: float
    timeout_s: float


# --- frames: pure functions ---------------------------------------------------------------


def sessions_url(base_url: str, session_id: str) -> str:
    """The WebSocket URL of ``session_id`` under the simulator's ``base_url``.

    ``http://`` becomes ``ws://`` and ``https://`` ``wss://`` (the simulator serves its
    control API and its sessions on one port); the session id is percent-encoded.
    """
    base = base_url.rstrip("/")
    if base.startswith(("http://", "https://")):
        base = "ws" + base.removeprefix("http")
    if not base.startswith(("ws://", "wss://")):
        raise ValueError(f"{base_url!r} is not an http(s) or ws(s) URL")
    return base + SESSIONS_PATH + quote(session_id, safe="")


def hello_frame(session_id: str, credentials: str | None) -> dict[str, Any]:
    """The first frame: the session, and its saved credentials when it has some."""
    frame: dict[str, Any] = {"type": "hello", "session_id": session_id}
    if credentials:
        frame["credentials"] = credentials
    return frame


def send_frame(message: OutboundMessage) -> dict[str, Any]:
    """The ``send`` frame of ``message``: our message id (the simulator counts by it), the
    recipient in E.164 form and one of ``text``, ``template``, ``media``.

    The session protocol has no link previews, quoted replies or MIME types, so
    ``preview_url``, ``reply_to`` and ``mime_type`` are not carried. Media go by reference:
    the link or the media id, whichever the message has.
    """
    frame: dict[str, Any] = {
        "type": "send",
        "message_id": message.message_id,
        "to": message.to_phone_e164,
    }
    content = message.content
    if isinstance(content, Text):
        frame["text"] = content.body
    elif isinstance(content, Template):
        frame["template"] = {
            "name": content.name,
            "language": content.language,
            "body_parameters": list(content.body_parameters),
        }
    else:
        media: dict[str, str] = {
            "kind": content.kind.value,
            "ref": content.link if content.link is not None else content.media_id or "",
        }
        if content.caption:
            media["caption"] = content.caption
        if content.filename:
            media["filename"] = content.filename
        frame["media"] = media
    return frame


def decode_frame(raw: str | bytes) -> dict[str, Any]:
    """A received WebSocket message as a frame: a JSON object with a string ``type``."""
    try:
        frame = json.loads(raw)
    except ValueError:
        raise MalformedFrame("a frame that is not JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise MalformedFrame("a frame that is not a JSON object with a string type")
    return frame


def read_keepalive(frame: Mapping[str, Any]) -> Keepalive | None:
    """The keep-alive terms a ``pairing`` or ``connected`` frame announces, if readable."""
    terms = frame.get("keepalive")
    if not isinstance(terms, Mapping):
        return None
    interval, timeout = _number(terms.get("interval_s")), _number(terms.get("timeout_s"))
    if interval is None or timeout is None or not 0 < interval <= timeout:
        return None
    return Keepalive(interval_s=interval, timeout_s=timeout)


def parse_pairing(frame: Mapping[str, Any]) -> Pairing:
    """A ``pairing`` frame: the QR payload and typed code a phone links the session with."""
    expires_in = _number(frame.get("expires_in"))
    if expires_in is None:
        raise MalformedFrame("pairing frame without a numeric expires_in")
    return Pairing(
        qr=_required(frame, "qr"), code=_required(frame, "code"), expires_in_s=expires_in
    )


def parse_status(frame: Mapping[str, Any], session_id: str) -> StatusUpdate:
    """A ``status`` frame as a status update of a message sent by session ``session_id``.

    ``message_id`` is ours (the simulator echoes the send's), empty for a send that had
    none. A status this module does not know becomes UNSPECIFIED, kept in
    ``provider_status``. A ``failed`` status carries its error, classified as the Cloud
    API's webhook errors are (an unknown code means undeliverable).
    """
    provider_id = _required(frame, "provider_message_id")
    provider_status = _required(frame, "status")
    recipient = _text(frame.get("recipient"))
    raw_error = frame.get("error")
    error: ProviderError | None = None
    if isinstance(raw_error, Mapping):
        code = _integer(raw_error.get("code"))
        error = ProviderError(
            code=_text(raw_error.get("code")),
            title=_text(raw_error.get("title")),
            detail=_text(raw_error.get("detail")),
            kind=classify_delivery_error(code),
        )
    try:
        return StatusUpdate(
            provider_message_id=provider_id,
            status=_STATUSES.get(provider_status, MessageStatus.UNSPECIFIED),
            recipient_phone_e164=e164_from_digits(recipient) if recipient else "",
            occurred_at=_moment(frame.get("timestamp")),
            message_id=_text(frame.get("message_id")),
            provider_number_id=session_id,
            provider_status=provider_status,
            error=error,
        )
    except ValueError as problem:
        raise MalformedFrame(f"status of {provider_id}: {problem}") from None


def parse_inbound(frame: Mapping[str, Any], session_id: str, phone_e164: str) -> InboundMessage:
    """An ``inbound`` frame as a text message to session ``session_id``, whose number is
    ``phone_e164`` (announced by ``connected``; the frame does not repeat it)."""
    provider_id = _required(frame, "provider_message_id")
    try:
        return InboundMessage(
            provider_message_id=provider_id,
            from_phone_e164=e164_from_digits(_required(frame, "from")),
            to_phone_e164=phone_e164,
            kind=MessageKind.TEXT,
            sent_at=_moment(frame.get("timestamp")),
            provider_number_id=session_id,
            text=_text(frame.get("text")),
            profile_name=_text(frame.get("profile_name")),
            in_reply_to=_text(frame.get("reply_to")),
            provider_type="text",
        )
    except ValueError as problem:
        raise MalformedFrame(f"inbound message {provider_id}: {problem}") from None


def error_kind(code: int | None) -> FailureKind:
    """What an ``error`` answer to a send means.

    The simulator answers with Meta's codes, classified as the Cloud API's are
    (:data:`whatsapp.adapters.cloud_errors.KIND_BY_CODE`); 9001 (not connected) is
    TRANSIENT. An unknown code is INVALID_REQUEST: the send was refused for a reason we
    cannot tell, and the Cloud API adapter reads an unknown client error the same way.
    """
    if code == NOT_CONNECTED_CODE:
        return FailureKind.TRANSIENT
    if code is not None and code in KIND_BY_CODE:
        return KIND_BY_CODE[code]
    return FailureKind.INVALID_REQUEST


def failure_from_error(frame: Mapping[str, Any]) -> ProviderFailure:
    """An ``error`` frame as the refusal of a send. The simulator refused it, so the
    outcome is known; it never says how long to wait, so ``retry_after`` is None."""
    return ProviderFailure(
        error_kind(_integer(frame.get("code"))),
        _text(frame.get("code")) or "unknown",
        _text(frame.get("title")),
        _text(frame.get("detail")),
    )


def close_outcome(
    code: int | None,
    reason: str,
    *,
    announced: ConnectionClosed | None = None,
    closed_by_us: bool = False,
) -> ConnectionClosed:
    """How a connection ended, from its close ``code`` and ``reason``, the ``banned``,
    ``logged_out`` or ``replaced`` frame that ``announced`` it, if one came, and whether
    :meth:`SimConnection.close` was called.

    The end of the session itself wins over everything else, since the runtime must act
    on it whatever it intended: a 4003/4004/4005 close code, or else the announcing frame
    (the link may drop before the close code arrives), with the frame's words as reason.
    Otherwise it is CLOSED when we closed it, else DISCONNECTED.
    """
    kind = _CLOSE_KINDS.get(code) if code is not None else None
    if kind is None and announced is not None:
        kind = announced.kind
    if kind is not None:
        words = announced.reason if announced is not None and announced.kind is kind else ""
        return ConnectionClosed(kind, words or reason, code)
    return ConnectionClosed(
        CloseKind.CLOSED if closed_by_us else CloseKind.DISCONNECTED, reason, code
    )


def _required(frame: Mapping[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedFrame(f"{_text(frame.get('type')) or 'frame'} without {key!r}")
    return value


def _text(value: Any) -> str:
    """Strings as they are, numbers as digits, anything else (missing, null) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _moment(raw: Any) -> datetime:
    """A frame timestamp (Unix seconds) as an aware UTC datetime."""
    seconds = _number(raw) if not isinstance(raw, str) else _integer(raw)
    if seconds is None:
        raise MalformedFrame(f"timestamp {raw!r} is not Unix seconds")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedFrame(f"timestamp {raw!r} is out of range") from None


# --- the connection ---------------------------------------------------------------------


class SimConnection:
    """One connection of a ``sim`` session; implements
    :class:`whatsapp.domain.provider.SessionConnection`.

    ``base_url`` is the simulator's (``http://host:port``); ``credentials`` those saved
    from an earlier pairing, or None to pair. ``ack_timeout_s`` bounds the wait for each
    send's answer, ``connect_timeout_s`` the opening of the connection and the wait for the
    answer to ``hello``. See the module docstring for what the listener must respect.
    """

    __slots__ = (
        "_ack_timeout_s",
        "_announced",
        "_closing",
        "_connect_timeout_s",
        "_connected",
        "_credentials",
        "_keepalive",
        "_listener",
        "_new_credentials",
        "_pending",
        "_phone",
        "_pinger",
        "_session_id",
        "_silence",
        "_started",
        "_url",
        "_ws",
    )

    def __init__(
        self,
        base_url: str,
        session_id: str,
        credentials: str | None,
        listener: ConnectionListener,
        *,
        ack_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not session_id or "/" in session_id:
            raise ValueError("a session id is a non-empty name without '/'")
        if ack_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self._url = sessions_url(base_url, session_id)
        self._session_id = session_id
        self._credentials = credentials
        self._listener = listener
        self._ack_timeout_s = ack_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._ws: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._phone: str | None = None
        self._new_credentials: str | None = None
        self._keepalive: Keepalive | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._announced: ConnectionClosed | None = None
        self._silence = ""
        self._started = False
        self._closing = False
        self._connected = False

    def __repr__(self) -> str:
        credentials = "'***'" if self._credentials else "None"
        return (
            f"SimConnection(url={self._url!r}, session_id={self._session_id!r}, "
            f"credentials={credentials})"
        )

    @property
    def is_connected(self) -> bool:
        """Whether sends are accepted now: ``connected`` came and the run has not ended."""
        return self._connected

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> ConnectionClosed:
        """Connect, say hello, and handle frames until the connection ends; return how.

        Raises :class:`SimConnectError` when the connection cannot be opened, RuntimeError
        when called twice (a connection runs once), and whatever a listener call raised.
        Pending sends fail with outcome unknown when it ends.
        """
        if self._started:
            raise RuntimeError("a SimConnection runs once; reconnecting is a new connection")
        self._started = True
        if self._closing:
            return ConnectionClosed(CloseKind.CLOSED, "closed before it connected")
        ws = await self._open()
        self._ws = ws
        try:
            if not self._closing:  # close() may have been called while connecting
                await ws.send(json.dumps(hello_frame(self._session_id, self._credentials)))
                await self._read(ws)
        except WebSocketClosed:
            pass  # the close code says why; read below
        finally:
            self._connected = False
            if self._pinger is not None:
                self._pinger.cancel()
            self._fail_pending("the connection ended before the answer")
            await ws.close()
        outcome = close_outcome(
            ws.close_code,
            self._silence or ws.close_reason or "",
            announced=self._announced,
            closed_by_us=self._closing,
        )
        log.info(
            "sim session %s ended: %s (code %s) %s",
            self._session_id,
            outcome.kind.value,
            outcome.code,
            outcome.reason,
        )
        return outcome

    async def _open(self) -> ClientConnection:
        try:
            return await connect(
                self._url,
                compression=None,
                ping_interval=None,
                open_timeout=self._connect_timeout_s,
            )
        except (OSError, WebSocketException) as error:
            raise SimConnectError(
                f"cannot open sim session {self._session_id} at {self._url}: {error}"
            ) from error

    async def _read(self, ws: ClientConnection) -> None:
        """Handle frames in order until the connection closes (WebSocketClosed) or stays
        silent past the keep-alive timeout (the link is dead: drop it)."""
        while True:
            # Before the keep-alive terms are known, the answer to hello is awaited.
            limit = self._keepalive.timeout_s if self._keepalive else self._connect_timeout_s
            try:
                async with asyncio.timeout(limit):
                    raw = await ws.recv()
            except TimeoutError:
                self._silence = f"no frame from the simulator for {limit:g} s"
                log.warning(
                    "sim session %s: %s, dropping the link", self._session_id, self._silence
                )
                ws.transport.abort()
                await ws.wait_closed()
                return
            try:
                await self._on_frame(ws, decode_frame(raw))
            except MalformedFrame as problem:  # raised by the parsing, never by the listener
                log.warning("sim session %s: skipping a frame: %s", self._session_id, problem)

    async def _on_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ack":
            self._acknowledged(frame)
        elif kind == "error":
            self._refused(frame)
        elif kind == "status":
            await self._listener.status(parse_status(frame, self._session_id))
        elif kind == "inbound":
            if self._phone is None:
                raise MalformedFrame("inbound message before connected")
            await self._listener.inbound(parse_inbound(frame, self._session_id, self._phone))
        elif kind == "pairing":
            pairing = parse_pairing(frame)
            self._keep_alive(ws, frame)
            await self._listener.pairing(pairing)
        elif kind == "paired":
            self._new_credentials = _required(frame, "credentials")
        elif kind == "connected":
            await self._on_connected(ws, frame)
        elif kind in _ANNOUNCING_FRAMES:
            self._connected = False
            self._announced = ConnectionClosed(_ANNOUNCING_FRAMES[kind], _text(frame.get("reason")))
        elif kind != "pong":  # a pong's only job is to be a frame: the reader saw it
            log.debug("sim session %s: ignoring a %r frame", self._session_id, kind)

    async def _on_connected(self, ws: ClientConnection, frame: Mapping[str, Any]) -> None:
        phone = _required(frame, "phone_e164")
        if not is_e164(phone):
            raise MalformedFrame(f"connected as {phone!r}, which is not an E.164 phone")
        self._phone = phone
        self._keep_alive(ws, frame)
        self._connected = True
        paired = self._new_credentials is not None
        log.info(
            "sim session %s connected as %s%s",
            self._session_id,
            phone,
            " (newly paired)" if paired else "",
        )
        await self._listener.connected(phone, self._new_credentials)

    def _keep_alive(self, ws: ClientConnection, frame: Mapping[str, Any]) -> None:
        """Adopt the announced keep-alive terms and start pinging at their interval."""
        keepalive = read_keepalive(frame)
        if keepalive is None:
            return
        self._keepalive = keepalive
        if self._pinger is None:
            self._pinger = asyncio.create_task(
                self._ping(ws), name=f"sim-keepalive-{self._session_id}"
            )

    async def _ping(self, ws: ClientConnection) -> None:
        """Send a ``ping`` every announced interval, even while a listener call is slow:
        the simulator closes a connection that is silent for its keep-alive timeout."""
        while self._keepalive is not None:
            await asyncio.sleep(self._keepalive.interval_s)
            try:
                await ws.send(_PING)
            except WebSocketClosed:
                return

    # -- send --------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendAccepted:
        """Send ``message`` once and wait for the simulator's answer.

        * ``ack`` → :class:`SendAccepted` (``recipient_id`` is the number we sent to).
        * ``error`` → ProviderFailure of the kind its code means (:func:`error_kind`),
          outcome known.
        * Not connected (pairing, ended, closed) → ProviderFailure TRANSIENT
          ``not_connected``, retryable: nothing was written.
        * Written, but no answer within ``ack_timeout_s``, or the connection ended first
          → ProviderFailure TRANSIENT ``ack_lost`` with ``outcome_unknown``: the simulator
          commits a send before it acknowledges it, so it may well have been accepted.

        Raises ValueError when a send of the same message id is already waiting on this
        connection: the send pipeline never sends one message twice at once.
        """
        try:
            return await self._send(message)
        except ProviderFailure as failure:
            log.warning(
                "sim send failed: %s",
                failure,
                extra={
                    "message_id": message.message_id,
                    "session_id": self._session_id,
                    "failure_kind": failure.kind.value,
                    "provider_code": failure.code,
                    "retryable": failure.retryable,
                    "outcome_unknown": failure.outcome_unknown,
                },
            )
            raise

    async def _send(self, message: OutboundMessage) -> SendAccepted:
        ws = self._ws
        if not self._connected or ws is None or ws.state is not State.OPEN:
            raise ProviderFailure(
                FailureKind.TRANSIENT, "not_connected", "the session is not connected"
            )
        if message.message_id in self._pending:
            raise ValueError(f"message {message.message_id} is already being sent")
        frame = json.dumps(send_frame(message))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[message.message_id] = future
        try:
            try:
                await ws.send(frame)
            except WebSocketClosed:
                # The connection was open a moment ago: some of the frame may have left.
                raise _ack_lost("the connection dropped while the send was written") from None
            try:
                async with asyncio.timeout(self._ack_timeout_s):
                    provider_id = await future
            except TimeoutError:
                raise _ack_lost(f"no answer within {self._ack_timeout_s:g} s") from None
        finally:
            if self._pending.get(message.message_id) is future:
                del self._pending[message.message_id]
        return SendAccepted(provider_message_id=provider_id, recipient_id=message.to_phone_e164)

    def _acknowledged(self, frame: Mapping[str, Any]) -> None:
        message_id = _required(frame, "message_id")
        provider_id = _required(frame, "provider_message_id")
        future = self._pending.get(message_id)
        if future is None or future.done():
            # Its send already gave up (outcome unknown): say that it was accepted.
            log.warning(
                "sim session %s: message %s was accepted as %s after its send gave up",
                self._session_id,
                message_id,
                provider_id,
            )
            return
        future.set_result(provider_id)

    def _refused(self, frame: Mapping[str, Any]) -> None:
        failure = failure_from_error(frame)
        message_id = frame.get("message_id")
        future = self._pending.get(message_id) if isinstance(message_id, str) else None
        if future is None:
            log.warning(
                "sim session %s: error for %s, no send waits for it: %s",
                self._session_id,
                message_id or "no message",
                failure,
            )
        elif not future.done():
            future.set_exception(failure)

    def _fail_pending(self, detail: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(_ack_lost(detail))
        self._pending.clear()

    # -- close -------------------------------------------------------------------------

    async def close(self) -> None:
        """End the connection: :meth:`run` returns CLOSED (unless the simulator ended the
        session first, see :func:`close_outcome`). Sends still waiting fail with outcome
        unknown, since the simulator may have accepted them. Idempotent; returns once the
        closing handshake is done (bounded by the library's close timeout)."""
        self._closing = True
        self._connected = False
        self._fail_pending("the connection was closed by us")
        if self._ws is not None:
            await self._ws.close()


def _ack_lost(detail: str) -> ProviderFailure:
    return ProviderFailure(
        FailureKind.TRANSIENT,
        "ack_lost",
        "no acknowledgement of the send",
        detail,
        outcome_unknown=True,
    )
