"""The provider port: how the send pipeline hands a message to WhatsApp, and what a refusal
means.

Two providers sit behind it: ``cloud`` (WhatsApp Business Cloud API: one HTTPS request per
send, receipts and inbound messages arrive later on a signed webhook) and ``sim`` (a
connection-oriented session like WhatsApp Web: sends go over a persistent connection, and
receipts and inbound messages are pushed on it). Both fit the same shape:

* :meth:`Provider.send` hands over one message and returns once the provider has accepted
  it (:class:`SendAccepted`) or raises :class:`ProviderFailure`. Acceptance is status
  SENT; delivery and reading come later as :class:`StatusUpdate`.
* Everything that arrives later, whatever carries it (the Cloud API webhook endpoint
  after :func:`whatsapp.adapters.cloud_webhooks.parse_webhook`, the ``sim`` connection as
  frames arrive), is fed to a :class:`ProviderEvents` sink, so the service handles both
  providers' receipts and inbound messages with the same code.

A provider never retries a send itself: only the pipeline, which holds the send ledger,
knows whether a second attempt is safe. Every failure says so through
:attr:`ProviderFailure.retryable` and :attr:`ProviderFailure.outcome_unknown`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

from whatsapp.domain.messages import InboundMessage, OutboundMessage, ProviderError, StatusUpdate


class FailureKind(enum.Enum):
    """What a provider's refusal means, and so what the send pipeline must do about it.

    ``THROTTLED``
        The number (or app) is over the provider's throughput. Slow down: tell the
        session's adaptive rate limiter (multiplicative decrease) and retry the message
        after ``retry_after`` or a backoff delay. Retryable.
    ``PAIR_RATE_LIMITED``
        Too many messages to this one recipient in a short time. Back off that recipient
        only (the pair limit), keep sending to others, retry the message later.
        Retryable.
    ``QUALITY``
        Spam or quality signal: the number is being restricted for how recipients
        reacted to it. Trip the session's circuit breaker at once (no counting), publish
        a session health event, fail the message: pushing more traffic through a flagged
        number is how numbers get banned, and the campaign re-routes or pauses. Not
        retryable.
    ``UNDELIVERABLE``
        This recipient cannot get this message (not on WhatsApp, blocked, opted out of
        marketing, ...). Fail the message; the session is fine. Not retryable.
    ``AUTH``
        The provider refused our credentials or the account cannot send at all (token
        expired, permissions removed, account locked). Fail the session (state FAILED,
        with the reason) and stop sending from it until an operator fixes it; the message
        was not sent and stays queued for when the session is back (or until it
        expires). Retryable only in that sense.
    ``INVALID_REQUEST``
        The request itself is wrong (bad parameter, unknown template, media that cannot
        be fetched). Fail the message; sending it again would fail the same way. Not
        retryable.
    ``REENGAGEMENT_REQUIRED``
        More than 24 hours since the customer last wrote: only a template may be sent.
        Fail the message with this kind so its sender can choose a template instead.
        Not retryable as it is.
    ``TRANSIENT``
        Provider outage, 5xx, timeout or connection error. Retry with backoff (and count
        towards the breaker) when ``retryable``; when ``outcome_unknown`` the request may
        have been accepted, so mark the message UNKNOWN and never re-send it on its own.
    """

    THROTTLED = "throttled"
    PAIR_RATE_LIMITED = "pair_rate_limited"
    QUALITY = "quality"
    UNDELIVERABLE = "undeliverable"
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    REENGAGEMENT_REQUIRED = "reengagement_required"
    TRANSIENT = "transient"


#: Whether the same message may be sent again later, when nothing else is known.
RETRYABLE_BY_KIND: Final = {
    FailureKind.THROTTLED: True,
    FailureKind.PAIR_RATE_LIMITED: True,
    FailureKind.QUALITY: False,
    FailureKind.UNDELIVERABLE: False,
    FailureKind.AUTH: True,
    FailureKind.INVALID_REQUEST: False,
    FailureKind.REENGAGEMENT_REQUIRED: False,
    FailureKind.TRANSIENT: True,
}


@dataclass(frozen=True)
class SendAccepted:
    """The provider accepted a message: from now on its status is SENT.

    ``recipient_id`` is the recipient as the provider resolved our phone (Cloud API
    ``contacts[0].wa_id`` in E.164 form), when it says; status updates carry that form.
    """

    provider_message_id: str
    recipient_id: str = ""


class ProviderFailure(Exception):
    """The provider did not accept a message (or we cannot tell whether it did).

    ``kind`` says what the pipeline must do (see :class:`FailureKind`); ``code``,
    ``title`` and ``detail`` are the provider's own words (``code`` is e.g. ``"131026"``,
    or ``"http_502"``/``"ReadTimeout"`` when no provider code exists). ``retry_after`` is
    the provider's requested wait in seconds (``Retry-After``), when it gave one.
    ``retryable`` defaults to :data:`RETRYABLE_BY_KIND` and is false whenever
    ``outcome_unknown``: the request may have reached the provider and been accepted, so
    a second send could deliver the message twice.

    The text of the exception holds no secret: adapters mask credentials before building
    it.
    """

    def __init__(
        self,
        kind: FailureKind,
        code: str,
        title: str = "",
        detail: str = "",
        *,
        retry_after: float | None = None,
        retryable: bool | None = None,
        http_status: int | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after cannot be negative")
        self.kind = kind
        self.code = code
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        self.http_status = http_status
        self.outcome_unknown = outcome_unknown
        default = RETRYABLE_BY_KIND[kind]
        self.retryable = (default if retryable is None else retryable) and not outcome_unknown
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"{self.kind.value} (code {self.code})"
        if self.title:
            text += f": {self.title}"
        if self.detail and self.detail != self.title:
            text += f" — {self.detail}"
        if self.outcome_unknown:
            text += " [outcome unknown]"
        return text

    @property
    def error(self) -> ProviderError:
        """The failure as an error value, for a FAILED status event."""
        return ProviderError(code=self.code, title=self.title, detail=self.detail, kind=self.kind)


class Provider(Protocol):
    """Sends messages through one WhatsApp number (one session)."""

    async def send(self, message: OutboundMessage) -> SendAccepted:
        """Hand ``message`` to WhatsApp once.

        Returns when the provider accepted it; raises :class:`ProviderFailure` when it
        refused it or the outcome cannot be known. Never retries on its own.
        """
        ...


class ProviderEvents(Protocol):
    """Where a provider's pushed traffic goes: inbound messages and status updates.

    Implementations must be idempotent (providers deliver at least once: the Cloud API
    retries a webhook it got no 200 for, a ``sim`` connection replays after a reconnect)
    and must have stored what they were given before returning, since returning is what
    lets the provider forget it.
    """

    async def inbound(self, message: InboundMessage) -> None: ...

    async def status(self, update: StatusUpdate) -> None: ...


# --- connection-oriented providers ----------------------------------------------------------


class CloseKind(enum.Enum):
    """Why a provider connection ended, and so what the session's state machine does next.

    ``DISCONNECTED``
        The link dropped (network, keep-alive timeout, server restart, random drop):
        reconnect with backoff.
    ``REPLACED``
        Another connection took the session over (a second owner, or the same phone
        opening WhatsApp Web elsewhere): do not fight it; stop and report.
    ``LOGGED_OUT``
        The credentials were revoked: they are forgotten and the session pairs again.
    ``BANNED``
        WhatsApp banned the number: terminal until an operator acts.
    ``CLOSED``
        We closed it (stop, ownership moved, shutdown).
    """

    DISCONNECTED = "disconnected"
    REPLACED = "replaced"
    LOGGED_OUT = "logged_out"
    BANNED = "banned"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionClosed:
    """How a connection ended: the kind, the provider's words, and its close code if any."""

    kind: CloseKind
    reason: str = ""
    code: int | None = None


@dataclass(frozen=True)
class Pairing:
    """What a phone needs to link a session: a QR payload and a typed pairing code."""

    qr: str
    code: str
    expires_in_s: float


class ConnectionListener(ProviderEvents, Protocol):
    """What a connection tells its session, besides inbound messages and receipts.

    ``connected`` gives the number's phone and, when the session just paired, the new
    credentials to save (encrypted) so the next connection resumes without pairing.
    """

    async def pairing(self, pairing: Pairing) -> None: ...

    async def connected(self, phone_e164: str, new_credentials: str | None) -> None: ...


class SessionConnection(Provider, Protocol):
    """One live connection of a connection-oriented session (``sim``, WhatsApp-Web-like).

    :meth:`run` connects, authenticates with the saved credentials (or pairs), keeps the
    connection alive, feeds pushed traffic to the listener, and returns how the connection
    ended; it raises ``OSError`` (or a subclass) when it could not connect at all.
    :meth:`send` works only while connected and raises :class:`ProviderFailure` otherwise
    (kind TRANSIENT, retryable, outcome known: nothing was handed over). When the
    connection drops while a send waits for its acknowledgement, the send raises
    ``ProviderFailure(TRANSIENT, outcome_unknown=True)``. :meth:`close` ends :meth:`run`
    (kind CLOSED) and is idempotent. A connection runs once; reconnecting is a new one.
    """

    async def run(self) -> ConnectionClosed: ...

    async def close(self) -> None: ...
