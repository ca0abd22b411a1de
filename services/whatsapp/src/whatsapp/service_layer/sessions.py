"""Sessions as operators manage them: a company's numbers created, changed, deleted and
restored, and the requests to the worker driving one (start, stop, reconnect, reset its
breaker).

An operator never touches a connection: it belongs to the worker that owns the session's
partition of the command topics. A control handler writes what the operator wants where
it lasts (``desired_running``, for start and stop) and stages a ``SessionControl`` on
``whatsapp.send.interactive.v1`` keyed by the session id, in the same transaction: the
owning worker receives it and acts. What each action asks of that worker:

* ``START`` — ``desired_running`` is now true: connect (pairing if there is no saved
  login); a FAILED or BANNED session is restarted. Staged on creation with ``start``.
* ``STOP`` — ``desired_running`` is now false: disconnect and report STOPPED. Also staged
  when the session is deleted (``deleted_at`` set; the worker lets the session go).
* ``RECONNECT`` — drop the connection and connect again now, from a fresh read of the
  session and its credentials, with the backoff reset. Also staged when the credentials
  of a running session are replaced, so that they take effect.
* ``RESET_BREAKER`` — close the circuit breaker (an operator checked the number).

Every action is a request for a state, not a toggle: applying one twice is harmless, so a
redelivered command changes nothing. The ``reason`` says who asked, for the session's
state history.

Credentials arrive in plain text, are sealed here, and are never returned, logged or put
in an exception. Handlers never commit: the endpoint does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.events import event_type_of, new_envelope

from whatsapp.adapters.credentials import CredentialCipher
from whatsapp.adapters.limits import profile_named
from whatsapp.adapters.repositories import SessionFilter, SessionPage, SessionView
from whatsapp.domain.events import INTERACTIVE_TOPIC, PRODUCER
from whatsapp.domain.messages import MessageStatus
from whatsapp.domain.sessions import ProviderKind, Session, SessionState, new_session_id
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

#: The credentials member that is a Cloud API number's id, by which webhooks find it.
PHONE_NUMBER_ID: Final = "phone_number_id"


class SessionsError(Exception):
    """Base of what the session handlers refuse; entrypoints translate them."""


class SessionNotFound(SessionsError):
    """The company has no such session; another company's is reported the same way."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} does not exist")
        self.session_id = session_id


class SessionDeleted(SessionsError):
    """A change or request for a deleted session: restore it first."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is deleted; restore it first")
        self.session_id = session_id


class NumberInUse(SessionsError):
    """Another live session has this provider number; webhooks could not tell them apart.

    ``existing_id`` is that session's id when it belongs to the same company, else None
    (another company's session is not disclosed).
    """

    def __init__(self, provider_number_id: str, existing_id: str | None) -> None:
        super().__init__(f"another live session uses phone number id {provider_number_id}")
        self.provider_number_id = provider_number_id
        self.existing_id = existing_id


class SessionNotRunning(SessionsError):
    """A reconnect asked of a session that should not run: start it instead."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is stopped; start it instead of reconnecting")
        self.session_id = session_id


class NotPairing(SessionsError):
    """The session shows no pairing code now (it is not waiting for a phone)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is not pairing")
        self.session_id = session_id


class InvalidSessionInput(SessionsError):
    """A value the request's shape allowed but the session cannot take; ``field`` is its
    name in the request (``profile``, ``limit_overrides``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Action(enum.Enum):
    """An operator's request to the worker driving a session."""

    START = commands_pb2.SESSION_ACTION_START
    STOP = commands_pb2.SESSION_ACTION_STOP
    RECONNECT = commands_pb2.SESSION_ACTION_RECONNECT
    RESET_BREAKER = commands_pb2.SESSION_ACTION_RESET_BREAKER

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ControlRequested:
    """A ``SessionControl`` staged for the session's worker; ``command_id`` is its
    envelope's event id (to follow it through the logs and traces)."""

    session_id: str
    action: Action
    command_id: str


@dataclass(frozen=True)
class SessionDraft:
    """A session to create, validated for shape by the entrypoint.

    ``credentials`` is the plain document to seal (see :mod:`whatsapp.adapters.credentials`);
    for ``cloud`` it holds ``phone_number_id``, which becomes the session's
    ``provider_number_id``.
    """

    name: str
    provider: ProviderKind
    credentials: Mapping[str, str] | None = field(default=None, repr=False)
    phone_e164: str = ""
    pool_id: str = ""
    pool_priority: int = 0
    profile: str = ""
    limit_overrides: Mapping[str, float] = field(default_factory=dict)
    start: bool = False


@dataclass(frozen=True)
class SessionChanges:
    """Changes to a session's configuration; None leaves a member as it is.
    ``limit_overrides`` replaces the whole set, ``credentials`` the whole document."""

    name: str | None = None
    pool_id: str | None = None
    pool_priority: int | None = None
    profile: str | None = None
    limit_overrides: Mapping[str, float] | None = None
    credentials: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SessionMetrics:
    """What the owning worker last flushed (``figures``, at ``flushed_at``; empty and
    None before its first flush) and the session's ledger entries by status."""

    figures: dict[str, Any]
    flushed_at: datetime | None
    messages: dict[MessageStatus, int]


#: Statuses a ledger entry can be stored in (an entry is never stored UNSPECIFIED).
LEDGER_STATUSES: Final = tuple(s for s in MessageStatus if s is not MessageStatus.UNSPECIFIED)


def check_limits(
    provider: ProviderKind,
    profile: str,
    limit_overrides: Mapping[str, float],
    default_profile: str,
) -> None:
    """Refuse a profile that does not exist, or overrides it would not take.

    The overrides are checked against the profile the worker will use: the session's,
    else the service's default, else the provider's own.
    """
    try:
        effective = profile_named(profile or default_profile or provider.value)
    except ValueError as error:
        raise InvalidSessionInput("profile", str(error)) from None
    try:
        effective.with_overrides(limit_overrides)
    except ValueError as error:
        raise InvalidSessionInput("limit_overrides", str(error)) from None


def _number_of(provider: ProviderKind, credentials: Mapping[str, str] | None) -> str:
    if provider is ProviderKind.CLOUD and credentials is not None:
        return credentials.get(PHONE_NUMBER_ID, "")
    return ""


async def _claim_number(
    uow: WhatsappUnitOfWork, company_id: str, provider_number_id: str, session_id: str
) -> None:
    """Make sure no other live session has ``provider_number_id``, and keep it so until
    the transaction ends. :class:`NumberInUse` otherwise."""
    await uow.sessions.lock_provider_number(provider_number_id)
    holder = await uow.sessions.by_provider_number(provider_number_id)
    if holder is not None and holder.id != session_id:
        same_company = holder.company_id == company_id
        raise NumberInUse(provider_number_id, holder.id if same_company else None)


async def _view(uow: WhatsappUnitOfWork, company_id: str, session_id: str) -> SessionView:
    view = await uow.sessions.view(session_id, company_id)
    if view is None:
        raise SessionNotFound(session_id)
    return view


async def _locked(uow: WhatsappUnitOfWork, company_id: str, session_id: str) -> Session:
    """The company's session, locked until the transaction ends: the worker writes the
    state fields of the same row, and a locked read sees its latest commit."""
    session = await uow.sessions.get(session_id, company_id=company_id, lock=True)
    if session is None:
        raise SessionNotFound(session_id)
    return session


async def _live(uow: WhatsappUnitOfWork, company_id: str, session_id: str) -> Session:
    session = await _locked(uow, company_id, session_id)
    if session.deleted_at is not None:
        raise SessionDeleted(session_id)
    return session


def control_command(
    session: Session, action: Action, reason: str, now: datetime
) -> commands_pb2.WhatsappCommand:
    """The ``SessionControl`` record asking the session's worker for ``action``."""
    record = commands_pb2.WhatsappCommand(
        session_control=commands_pb2.SessionControl(
            session_id=session.id, action=action.value, reason=reason
        )
    )
    record.envelope.CopyFrom(
        new_envelope(event_type_of(record), session.company_id, PRODUCER, occurred_at=now)
    )
    return record


def _request(
    uow: WhatsappUnitOfWork, session: Session, action: Action, reason: str, now: datetime
) -> ControlRequested:
    record = control_command(session, action, reason, now)
    uow.stage(INTERACTIVE_TOPIC, session.id, record)
    return ControlRequested(session.id, action, record.envelope.event_id)


# --- configuration ------------------------------------------------------------------------


async def create_session(
    uow: WhatsappUnitOfWork,
    cipher: CredentialCipher,
    company_id: str,
    draft: SessionDraft,
    *,
    now: datetime,
    default_profile: str,
    requested_by: str,
) -> SessionView:
    """A new session of the company, stopped unless ``draft.start`` (then START is
    staged). :class:`NumberInUse` when a live session has its Cloud API number,
    :class:`InvalidSessionInput` for an unknown profile or overrides it refuses."""
    check_limits(draft.provider, draft.profile, draft.limit_overrides, default_profile)
    session = Session(
        id=new_session_id(),
        company_id=company_id,
        name=draft.name,
        provider=draft.provider,
        desired_running=draft.start,
        phone_e164=draft.phone_e164,
        provider_number_id=_number_of(draft.provider, draft.credentials),
        pool_id=draft.pool_id,
        pool_priority=draft.pool_priority,
        profile=draft.profile,
        limit_overrides=dict(draft.limit_overrides),
        created_at=now,
        updated_at=now,
    )
    if session.provider_number_id:
        await _claim_number(uow, company_id, session.provider_number_id, session.id)
    sealed = cipher.seal(draft.credentials) if draft.credentials else None
    await uow.sessions.add(session, sealed)
    if draft.start:
        _request(uow, session, Action.START, f"created and started by {requested_by}", now)
    return SessionView(session, sealed is not None, state_changed_at=None, owner="")


async def update_session(
    uow: WhatsappUnitOfWork,
    cipher: CredentialCipher,
    company_id: str,
    session_id: str,
    changes: SessionChanges,
    *,
    now: datetime,
    default_profile: str,
    requested_by: str,
) -> SessionView:
    """Apply ``changes`` to a live session.

    New credentials replace the old ones whole (empty ones remove them: a ``sim`` session
    pairs again); for a ``cloud`` session they may move it to another number
    (:class:`NumberInUse` if a live session has it). A running session is asked to
    RECONNECT so that they take effect.
    """
    session = await _live(uow, company_id, session_id)
    if changes.name is not None:
        session.name = changes.name
    if changes.pool_id is not None:
        session.pool_id = changes.pool_id
    if changes.pool_priority is not None:
        session.pool_priority = changes.pool_priority
    if changes.profile is not None:
        session.profile = changes.profile
    if changes.limit_overrides is not None:
        session.limit_overrides = dict(changes.limit_overrides)
    if changes.profile is not None or changes.limit_overrides is not None:
        check_limits(session.provider, session.profile, session.limit_overrides, default_profile)
    if changes.credentials is not None:
        number = _number_of(session.provider, changes.credentials)
        if number and number != session.provider_number_id:
            await _claim_number(uow, company_id, number, session.id)
        session.provider_number_id = number
        sealed = cipher.seal(changes.credentials) if changes.credentials else None
        await uow.sessions.set_credentials(session.id, sealed)
        if session.desired_running:
            reason = f"credentials replaced by {requested_by}"
            _request(uow, session, Action.RECONNECT, reason, now)
    await uow.sessions.save(session, now=now)
    return await _view(uow, company_id, session_id)


async def delete_session(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime, requested_by: str
) -> None:
    """Mark the session deleted and not to run, and ask its worker to STOP it. Its ledger
    entries and credentials are kept (it can be restored); deleting it again does nothing.
    """
    session = await _locked(uow, company_id, session_id)
    if session.deleted_at is not None:
        return
    session.deleted_at = now
    session.desired_running = False
    await uow.sessions.save(session, now=now)
    _request(uow, session, Action.STOP, f"deleted by {requested_by}", now)


async def restore_session(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime
) -> SessionView:
    """Bring a deleted session back, stopped (start it to connect). :class:`NumberInUse`
    when a live session took its Cloud API number meanwhile; restoring a live session
    does nothing."""
    session = await _locked(uow, company_id, session_id)
    if session.deleted_at is not None:
        if session.provider_number_id:
            await _claim_number(uow, company_id, session.provider_number_id, session.id)
        session.deleted_at = None
        await uow.sessions.save(session, now=now)
    return await _view(uow, company_id, session_id)


# --- control ------------------------------------------------------------------------------


async def start_session(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime, requested_by: str
) -> ControlRequested:
    """The session should run: ``desired_running`` and START (also a restart of a FAILED
    or BANNED session)."""
    session = await _live(uow, company_id, session_id)
    if not session.desired_running:
        session.desired_running = True
        await uow.sessions.save(session, now=now)
    return _request(uow, session, Action.START, f"started by {requested_by}", now)


async def stop_session(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime, requested_by: str
) -> ControlRequested:
    """The session should not run: ``desired_running`` false and STOP. Its queued
    messages wait (or expire) until it is started again."""
    session = await _live(uow, company_id, session_id)
    if session.desired_running:
        session.desired_running = False
        await uow.sessions.save(session, now=now)
    return _request(uow, session, Action.STOP, f"stopped by {requested_by}", now)


async def reconnect_session(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime, requested_by: str
) -> ControlRequested:
    """RECONNECT a session that should run; :class:`SessionNotRunning` otherwise."""
    session = await _live(uow, company_id, session_id)
    if not session.desired_running:
        raise SessionNotRunning(session_id)
    return _request(uow, session, Action.RECONNECT, f"reconnect asked by {requested_by}", now)


async def reset_breaker(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str, *, now: datetime, requested_by: str
) -> ControlRequested:
    """RESET_BREAKER: the worker closes the session's circuit breaker."""
    session = await _live(uow, company_id, session_id)
    return _request(uow, session, Action.RESET_BREAKER, f"breaker reset by {requested_by}", now)


# --- reads --------------------------------------------------------------------------------


async def get_session(uow: WhatsappUnitOfWork, company_id: str, session_id: str) -> SessionView:
    """The company's session, deleted ones too; :class:`SessionNotFound` otherwise."""
    return await _view(uow, company_id, session_id)


async def list_sessions(
    uow: WhatsappUnitOfWork,
    company_id: str,
    criteria: SessionFilter,
    *,
    cursor: str | None,
    limit: int,
) -> SessionPage:
    """One page of the company's sessions matching ``criteria``, oldest first."""
    return await uow.sessions.page(company_id, criteria, cursor=cursor, limit=limit)


async def session_pairing(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str
) -> dict[str, Any]:
    """What the phone needs to link the session, as the worker stored it (``qr``,
    ``code``, ``expires_at``); :class:`NotPairing` unless the session is PAIRING.

    The state is checked too, so that a code left behind by a worker that died while
    pairing is never shown for a session that went on.
    """
    view = await _view(uow, company_id, session_id)
    pairing = await uow.sessions.pairing(session_id)
    if pairing is None or view.session.state is not SessionState.PAIRING:
        raise NotPairing(session_id)
    return pairing


async def session_metrics(
    uow: WhatsappUnitOfWork, company_id: str, session_id: str
) -> SessionMetrics:
    """The worker's figures for the session and its ledger counts (every status)."""
    await _view(uow, company_id, session_id)
    figures, flushed_at = await uow.sessions.metrics(session_id)
    counts = await uow.ledger.status_counts(company_id, session_id)
    return SessionMetrics(
        figures=figures,
        flushed_at=flushed_at,
        messages={status: counts.get(status.name.lower(), 0) for status in LEDGER_STATUSES},
    )
