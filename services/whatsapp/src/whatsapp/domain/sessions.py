"""Sessions: a company's WhatsApp numbers, and the state machine of their connections.

A session is one number of one company, sent through one provider (``cloud`` or ``sim``).
Operators say whether it should run (:attr:`Session.desired_running`); the worker that
owns it drives its connection through the states below, and every transition becomes a
``SessionStateChanged`` event::

    STOPPED ──start──▶ STARTING ──▶ PAIRING ──▶ CONNECTED ◀──────────────┐
                          │            │           │                     │
                          └────────────┴──▶ DISCONNECTED ──▶ RECONNECTING┘
                                                    │              │
                                                    ▼              ▼
                                                 BANNED         FAILED

* DISCONNECTED is where every lost connection lands; RECONNECTING is a scheduled attempt
  (exponential backoff with full jitter); FAILED is where attempts ran out, the
  credentials were refused, or the session was replaced — an operator restarts it.
* BANNED is terminal until an operator acts (restart after an unban).
* STOPPED is reachable from every state: an operator stopped it, or it was deleted.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from esquadrao.whatsapp.v1 import whatsapp_pb2
from esquadrao_common.resilience.backoff import Uniform, full_jitter

from whatsapp.domain.messages import to_timestamp


class ProviderKind(enum.Enum):
    """Which provider a session sends through."""

    CLOUD = "cloud"
    SIM = "sim"


class SessionState(enum.Enum):
    """Connection state of a session; mirrors ``esquadrao.whatsapp.v1.SessionState``."""

    STOPPED = "stopped"
    STARTING = "starting"
    PAIRING = "pairing"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    BANNED = "banned"

    def to_proto(self) -> whatsapp_pb2.SessionState:
        return _STATE_TO_PROTO[self]


_STATE_TO_PROTO: Final[dict[SessionState, whatsapp_pb2.SessionState]] = {
    state: getattr(whatsapp_pb2, f"SESSION_STATE_{state.name}") for state in SessionState
}

_S = SessionState

#: Where each state may go next (besides STOPPED, always allowed).
TRANSITIONS: Final[dict[SessionState, frozenset[SessionState]]] = {
    _S.STOPPED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.PAIRING, _S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.BANNED}),
    _S.PAIRING: frozenset({_S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.BANNED}),
    _S.CONNECTED: frozenset({_S.DISCONNECTED, _S.FAILED, _S.BANNED}),
    _S.DISCONNECTED: frozenset({_S.RECONNECTING, _S.STARTING, _S.FAILED, _S.BANNED}),
    _S.RECONNECTING: frozenset({_S.PAIRING, _S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.BANNED}),
    _S.FAILED: frozenset({_S.STARTING}),
    _S.BANNED: frozenset({_S.STARTING}),
}

#: States in which the session can hand messages to its provider.
SENDING_STATES: Final = frozenset({SessionState.CONNECTED})

#: States a session is in only while a driver drives it: found on a session being taken
#: over, they are what its previous driver left behind.
LIVE_STATES: Final = frozenset({_S.STARTING, _S.PAIRING, _S.CONNECTED, _S.RECONNECTING})


class InvalidTransition(ValueError):
    """A state change the machine does not allow (a bug in the driver, never input)."""


def can_move(current: SessionState, new: SessionState) -> bool:
    """Whether ``current`` may become ``new``; STOPPED is always reachable."""
    return new is SessionState.STOPPED or new in TRANSITIONS[current]


@dataclass(frozen=True)
class StateChange:
    """One transition of one session, as it is stored and published."""

    session_id: str
    company_id: str
    previous: SessionState
    state: SessionState
    reason: str
    at: datetime
    phone_e164: str = ""

    def to_proto(self) -> whatsapp_pb2.SessionStateChanged:
        return whatsapp_pb2.SessionStateChanged(
            session_id=self.session_id,
            state=self.state.to_proto(),
            previous_state=self.previous.to_proto(),
            reason=self.reason,
            changed_at=to_timestamp(self.at),
            phone_e164=self.phone_e164,
        )


@dataclass
class Session:
    """A company's WhatsApp number. Credentials are kept apart (encrypted at rest) and
    never part of this value, so it can be logged and returned as it is.

    ``pool_id``/``pool_priority``: sends that name the pool instead of a session go to a
    healthy member, lowest priority first. ``profile`` names the provider limits
    (see :mod:`whatsapp.adapters.limits`), ``limit_overrides`` adjusts them per number.
    ``provider_number_id`` is the provider's id of the number (Cloud API
    ``phone_number_id``), by which webhooks find the session.
    """

    id: str
    company_id: str
    name: str
    provider: ProviderKind
    state: SessionState = SessionState.STOPPED
    state_reason: str = ""
    desired_running: bool = False
    phone_e164: str = ""
    provider_number_id: str = ""
    pool_id: str = ""
    pool_priority: int = 0
    profile: str = ""
    limit_overrides: dict[str, Any] = field(default_factory=dict)
    breaker_state: str = "closed"
    breaker_reason: str = ""
    reconnect_attempts: int = 0
    next_reconnect_at: datetime | None = None
    connected_since: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    version: int = 1

    def move(self, new: SessionState, reason: str, at: datetime) -> StateChange | None:
        """Move to ``new`` for ``reason``; the change to publish, or None when already there.

        Raises :class:`InvalidTransition` when the machine forbids it.
        """
        if new is self.state:
            return None
        if not can_move(self.state, new):
            raise InvalidTransition(f"session {self.id}: {self.state.value} → {new.value}")
        change = StateChange(
            session_id=self.id,
            company_id=self.company_id,
            previous=self.state,
            state=new,
            reason=reason,
            at=at,
            phone_e164=self.phone_e164,
        )
        self.state = new
        self.state_reason = reason
        if new is SessionState.CONNECTED:
            self.connected_since = at
            self.reconnect_attempts = 0
            self.next_reconnect_at = None
        elif self.connected_since is not None:
            self.connected_since = None
        return change


def new_session_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter between reconnection attempts.

    The delay before attempt ``n`` (from 0) is uniform in ``[0, min(max, base·2ⁿ)]``:
    jitter spreads the reconnections of many sessions dropped at once (a broker or
    provider blip) instead of hammering the provider in waves. After ``max_retries``
    attempts in a row without a connection the session is FAILED. Defaults are seed 003's
    ``WHATSAPP_RECONNECTION_*`` values.
    """

    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    max_retries: int = 10

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("reconnection delays need 0 < base ≤ max")
        if self.max_retries < 1:
            raise ValueError("max_retries must be at least 1")

    def delay(self, attempt: int, rng: Uniform) -> float:
        return full_jitter(attempt, self.base_delay_s, self.max_delay_s, rng)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_retries
