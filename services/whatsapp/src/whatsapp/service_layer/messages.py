"""Handlers of the send ledger: accepting commands, handing entries over, recording what
the provider said, and applying receipts and inbound messages.

Every handler works in the unit of work it is given and never commits: state and events
go together. See :mod:`whatsapp.domain.ledger` for the claim → send → record protocol.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from esquadrao.common.v1.envelope_pb2 import Envelope
from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.resilience.backoff import backoff_ceiling
from prometheus_client import Counter

from whatsapp.adapters.orm import MESSAGE_ID_LENGTH, PHONE_LENGTH
from whatsapp.domain.events import (
    EVENTS_TOPIC,
    message_received,
    message_status_changed,
    routed_command,
)
from whatsapp.domain.ledger import LedgerEntry, Origin, Priority
from whatsapp.domain.messages import (
    InboundMessage,
    MessageStatus,
    ProviderError,
    StatusUpdate,
    advance,
    outbound_from_command,
)
from whatsapp.domain.provider import FailureKind, ProviderFailure, SendAccepted
from whatsapp.domain.sessions import Session, SessionState
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

log = logging.getLogger(__name__)

STATUS_CHANGES = Counter(
    "esquadrao_whatsapp_message_status_changes",
    "Ledger status changes, by the status reached.",
    ["status"],
)
IGNORED_CALLBACKS = Counter(
    "esquadrao_whatsapp_ignored_callbacks",
    "Receipts that changed nothing, by why (duplicate or late: 'stale'; no such message: "
    "'unknown_message').",
    ["reason"],
)


class Accepted(StrEnum):
    """What became of a ``SendMessage`` command."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    ROUTED = "routed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class RejectedCommand:
    """Why a command cannot be sent at all (it still gets a FAILED entry and event)."""

    code: str
    detail: str


def _change(
    uow: WhatsappUnitOfWork,
    entry: LedgerEntry,
    new: MessageStatus,
    now: datetime,
    *,
    causation_id: str | None = None,
) -> bool:
    """Move ``entry`` to ``new`` if the forward-only rule allows; stage the event."""
    previous = entry.status
    reached = advance(previous, new)
    if reached is previous:
        return False
    entry.status = reached
    entry.updated_at = now
    key, event = message_status_changed(entry, previous, now, causation_id=causation_id)
    uow.stage(EVENTS_TOPIC, key, event)
    STATUS_CHANGES.labels(reached.name.lower()).inc()
    return True


def _entry_for(
    command: commands_pb2.SendMessage,
    company_id: str,
    priority: Priority,
    session_id: str,
    now: datetime,
) -> LedgerEntry:
    not_after = (
        command.not_after.ToDatetime(tzinfo=now.tzinfo) if command.HasField("not_after") else None
    )
    return LedgerEntry(
        message_id=command.message_id,
        company_id=company_id,
        session_id=session_id,
        to_phone_e164=command.to_phone_e164,
        command=command.SerializeToString(),
        priority=priority,
        status=MessageStatus.UNSPECIFIED,
        queued_at=now,
        updated_at=now,
        origin=Origin.from_proto(command.origin),
        pool_id=command.pool_id,
        not_after=not_after,
    )


def healthy(session: Session) -> bool:
    """Whether a pool may route to ``session``: running, connected, breaker closed."""
    return (
        session.deleted_at is None
        and session.desired_running
        and session.state is SessionState.CONNECTED
        and session.breaker_state == "closed"
    )


async def choose_pool_member(
    uow: WhatsappUnitOfWork, company_id: str, pool_id: str
) -> Session | None:
    """A healthy member of the pool: lowest ``pool_priority`` first, then the one with
    the fewest queued messages (so a pool spreads its load instead of piling it on one
    number)."""
    members = await uow.sessions.pool_members(company_id, pool_id)
    candidates = [member for member in members if healthy(member)]
    if not candidates:
        return None
    best = min(member.pool_priority for member in candidates)
    tier = [member for member in candidates if member.pool_priority == best]
    backlog = await uow.ledger.queued_by_session([member.id for member in tier])
    return min(tier, key=lambda member: (backlog.get(member.id, 0), member.id))


async def accept_command(
    uow: WhatsappUnitOfWork,
    command: commands_pb2.SendMessage,
    envelope: Envelope,
    priority: Priority,
    source_topic: str,
    now: datetime,
) -> Accepted:
    """Take a ``SendMessage`` into the ledger, once per message id.

    * A known message id changes nothing (DUPLICATE): no second entry, no second send.
    * A command naming a pool and no session is re-published on ``source_topic`` keyed by
      the chosen healthy member (ROUTED), so the member's owner takes it in; with no
      healthy member it fails at once with ``no_healthy_session``.
    * A command that cannot be sent (no such session of the company, invalid content,
      already past ``not_after``) gets an entry in a terminal status and its event
      (REJECTED): the sender learns why through the same status stream.
    """
    company_id = envelope.company_id
    if not command.session_id and command.pool_id:
        member = await choose_pool_member(uow, company_id, command.pool_id)
        if member is not None:
            uow.stage(source_topic, member.id, routed_command(command, member.id, envelope))
            return Accepted.ROUTED
        return await _reject(
            uow,
            _entry_for(command, company_id, priority, _NO_SESSION, now),
            RejectedCommand("no_healthy_session", f"no healthy session in pool {command.pool_id}"),
            now,
            envelope,
        )
    # A session id that is not a UUID cannot be stored (nor name a session): the entry
    # that records the refusal gets none.
    session_id = command.session_id if _is_uuid(command.session_id) else _NO_SESSION
    entry = _entry_for(command, company_id, priority, session_id, now)
    problem = await _problem_with(uow, command, company_id)
    if problem is not None:
        return await _reject(uow, entry, problem, now, envelope)
    if entry.expired(now):
        entry.status = MessageStatus.QUEUED
        if not await uow.ledger.add(entry):
            return Accepted.DUPLICATE
        _change(uow, entry, MessageStatus.EXPIRED, now, causation_id=envelope.event_id)
        await uow.ledger.save(entry)
        return Accepted.REJECTED
    entry.status = MessageStatus.QUEUED
    if not await uow.ledger.add(entry):
        return Accepted.DUPLICATE
    key, event = message_status_changed(
        entry, MessageStatus.UNSPECIFIED, now, causation_id=envelope.event_id
    )
    uow.stage(EVENTS_TOPIC, key, event)
    STATUS_CHANGES.labels("queued").inc()
    return Accepted.QUEUED


@dataclass(frozen=True)
class IncomingCommand:
    """A ``SendMessage`` as read from a command topic."""

    command: commands_pb2.SendMessage
    envelope: Envelope
    priority: Priority
    source_topic: str


async def accept_commands(
    uow: WhatsappUnitOfWork, incoming: list[IncomingCommand], now: datetime
) -> list[Accepted]:
    """:func:`accept_command` for many commands at once, with the same outcomes in order.

    The common case — a valid command for a live session of its company, not expired —
    costs one session lookup per company and one multi-row insert for all of them; the
    rest (pool sends, invalid or expired commands) go through :func:`accept_command`.
    Commands repeating a message id within the batch are duplicates of the first.
    """
    outcomes: list[Accepted | None] = [None] * len(incoming)
    simple: dict[int, LedgerEntry] = {}
    wanted: dict[str, set[str]] = {}
    for index, item in enumerate(incoming):
        command = item.command
        if _is_uuid(command.session_id) and _command_problem(command) is None:
            entry = _entry_for(
                command, item.envelope.company_id, item.priority, command.session_id, now
            )
            if not entry.expired(now):
                simple[index] = entry
                wanted.setdefault(entry.company_id, set()).add(entry.session_id)
    live: set[tuple[str, str]] = set()
    for company_id, session_ids in wanted.items():
        for session_id in await uow.sessions.live_of_company(company_id, sorted(session_ids)):
            live.add((company_id, session_id))
    batch: dict[str, tuple[int, LedgerEntry]] = {}
    for index, entry in simple.items():
        if (entry.company_id, entry.session_id) not in live:
            continue
        if entry.message_id in batch:
            outcomes[index] = Accepted.DUPLICATE
            continue
        entry.status = MessageStatus.QUEUED
        batch[entry.message_id] = (index, entry)
    inserted = await uow.ledger.add_many([entry for _, entry in batch.values()])
    for message_id, (index, entry) in batch.items():
        if message_id not in inserted:
            outcomes[index] = Accepted.DUPLICATE
            continue
        key, event = message_status_changed(
            entry, MessageStatus.UNSPECIFIED, now, causation_id=incoming[index].envelope.event_id
        )
        uow.stage(EVENTS_TOPIC, key, event)
        STATUS_CHANGES.labels("queued").inc()
        outcomes[index] = Accepted.QUEUED
    for index, item in enumerate(incoming):
        if outcomes[index] is None:
            outcomes[index] = await accept_command(
                uow, item.command, item.envelope, item.priority, item.source_topic, now
            )
    return [outcome for outcome in outcomes if outcome is not None]


#: Session id of entries that never had one (a bad command, an unroutable pool send).
_NO_SESSION = "00000000-0000-0000-0000-000000000000"


async def _problem_with(
    uow: WhatsappUnitOfWork, command: commands_pb2.SendMessage, company_id: str
) -> RejectedCommand | None:
    problem = _command_problem(command)
    if problem is not None:
        return problem
    session = None
    if _is_uuid(command.session_id):
        session = await uow.sessions.get(command.session_id, company_id=company_id)
    if session is None or session.deleted_at is not None:
        return RejectedCommand("unknown_session", f"no session {command.session_id!r}")
    return None


def _command_problem(command: commands_pb2.SendMessage) -> RejectedCommand | None:
    """What makes the command itself unsendable, whatever its session."""
    if not command.message_id:
        return RejectedCommand("invalid_command", "message_id is required")
    if len(command.message_id) > MESSAGE_ID_LENGTH:
        return RejectedCommand(
            "invalid_command", f"message_id is longer than {MESSAGE_ID_LENGTH} characters"
        )
    try:
        outbound_from_command(command)
    except ValueError as error:
        return RejectedCommand("invalid_command", str(error))
    return None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def _reject(
    uow: WhatsappUnitOfWork,
    entry: LedgerEntry,
    problem: RejectedCommand,
    now: datetime,
    envelope: Envelope,
) -> Accepted:
    if not entry.message_id or len(entry.message_id) > MESSAGE_ID_LENGTH:
        # No ledger key to record the refusal under (nor to send its status event with).
        log.warning("dropping a SendMessage without a usable message_id: %s", problem.detail)
        return Accepted.REJECTED
    # What is kept of a recipient that is not a phone: the column holds E.164 lengths.
    entry.to_phone_e164 = entry.to_phone_e164[:PHONE_LENGTH]
    entry.status = MessageStatus.QUEUED
    if not await uow.ledger.add(entry):
        return Accepted.DUPLICATE
    entry.error = ProviderError(code=problem.code, title=problem.detail)
    _change(uow, entry, MessageStatus.FAILED, now, causation_id=envelope.event_id)
    await uow.ledger.save(entry)
    return Accepted.REJECTED


async def claim(
    uow: WhatsappUnitOfWork, session_id: str, now: datetime, limit: int
) -> list[LedgerEntry]:
    """Expire what is past ``not_after``, then take up to ``limit`` due entries."""
    for entry in await uow.ledger.expire_due(session_id, now):
        _change(uow, entry, MessageStatus.EXPIRED, now)
        await uow.ledger.save(entry)
    return await uow.ledger.claim(session_id, now, limit)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a refused message again: ``delay(attempt)`` seconds later, at most
    ``max_attempts`` attempts in all."""

    max_attempts: int
    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = backoff_ceiling(max(0, attempt - 1), self.base_s, self.cap_s)
        return max(backoff, retry_after or 0.0)


#: What happened to one claimed entry: accepted, refused, or never handed over (None:
#: give it back to the queue as it is, e.g. its recipient's pair limit refused it).
Outcome = SendAccepted | ProviderFailure | None


async def record_outcomes(
    uow: WhatsappUnitOfWork,
    outcomes: list[tuple[LedgerEntry, Outcome]],
    now: datetime,
    retry: RetryPolicy,
) -> dict[str, MessageStatus]:
    """Record what became of claimed entries, all in ``uow``; the status of each, by id.

    * accepted → SENT with the provider's id;
    * outcome unknown → UNKNOWN (never re-sent on its own);
    * AUTH → back to the queue, no attempt counted: the session fails until an operator
      fixes its credentials, and the message goes when it restarts (or expires);
    * retryable with attempts left → back to the queue after a backoff;
    * otherwise refused → FAILED with the provider's error;
    * not handed over → back to the queue, due at the entry's ``next_attempt_at``.

    An entry no longer in flight was resolved meanwhile (declared UNKNOWN by a new owner
    after this worker lost the session): it is left as decided. The provider got it once,
    and that is all that matters.
    """
    current = await uow.ledger.get_many(
        [entry.message_id for entry, _ in outcomes], in_flight_only=True
    )
    statuses: dict[str, MessageStatus] = {}
    changed: list[LedgerEntry] = []
    for claimed, outcome in outcomes:
        entry = current.get(claimed.message_id)
        if entry is None:
            log.warning("send of %s finished after it was resolved", claimed.message_id)
            continue
        entry.sending_since = None
        entry.updated_at = now
        if isinstance(outcome, SendAccepted):
            entry.provider_message_id = outcome.provider_message_id
            entry.attempts += 1
            _change(uow, entry, MessageStatus.SENT, now)
        elif outcome is None:
            entry.next_attempt_at = claimed.next_attempt_at
        elif outcome.kind is FailureKind.AUTH and not outcome.outcome_unknown:
            pass
        elif outcome.retryable and entry.attempts + 1 < retry.max_attempts:
            entry.attempts += 1
            delay = retry.delay(entry.attempts, outcome.retry_after)
            entry.next_attempt_at = now + timedelta(seconds=delay)
        else:
            entry.attempts += 1
            entry.error = outcome.error
            _change(
                uow,
                entry,
                MessageStatus.UNKNOWN if outcome.outcome_unknown else MessageStatus.FAILED,
                now,
            )
        statuses[entry.message_id] = entry.status
        changed.append(entry)
    await uow.ledger.save_many(changed)
    return statuses


async def resolve_in_flight(uow: WhatsappUnitOfWork, session_ids: list[str], now: datetime) -> int:
    """Entries a previous driver claimed and never resolved become UNKNOWN.

    Called when sessions are adopted (a new owner, or a restart), before any new claim.
    Returns how many there were.
    """
    entries = await uow.ledger.in_flight(session_ids)
    for entry in entries:
        entry.sending_since = None
        entry.error = ProviderError(
            code="outcome_unknown",
            title="the worker sending it stopped before the provider's answer was recorded",
        )
        _change(uow, entry, MessageStatus.UNKNOWN, now)
        await uow.ledger.save(entry)
    return len(entries)


async def apply_statuses(
    uow: WhatsappUnitOfWork, session_id: str, updates: list[StatusUpdate], now: datetime
) -> int:
    """Provider receipts of one session: move each message forward if it does; how many
    changes were made.

    A receipt finds its message by our message id when the provider echoes it, else by
    the provider's id. Duplicate, late and out-of-order receipts change nothing (the
    forward-only rule); receipts for messages we do not know are counted and dropped.
    """
    by_id = await uow.ledger.get_many([u.message_id for u in updates if u.message_id])
    changed: dict[str, LedgerEntry] = {}
    for update in updates:
        entry = changed.get(update.message_id) or by_id.get(update.message_id)
        if entry is not None and entry.session_id != session_id:
            entry = None
        if entry is None:
            entry = await uow.ledger.by_provider_id(
                session_id, update.provider_message_id, lock=True
            )
            entry = changed.get(entry.message_id, entry) if entry is not None else None
        if entry is None:
            IGNORED_CALLBACKS.labels("unknown_message").inc()
            continue
        if not entry.provider_message_id:
            entry.provider_message_id = update.provider_message_id
        error = entry.error
        if update.error is not None:
            entry.error = update.error
        if not _change(uow, entry, update.status, update.occurred_at):
            entry.error = error
            IGNORED_CALLBACKS.labels("stale").inc()
            continue
        entry.updated_at = now
        changed[entry.message_id] = entry
    await uow.ledger.save_many(list(changed.values()))
    return len(changed)


async def record_inbound(
    uow: WhatsappUnitOfWork, session: Session, message: InboundMessage, now: datetime
) -> bool:
    """A customer's message: publish ``MessageReceived`` once per provider id."""
    if not await uow.inbound.remember(
        session.id, message.provider_message_id, session.company_id, now
    ):
        return False
    key, event = message_received(message, session.id, session.company_id, now)
    uow.stage(EVENTS_TOPIC, key, event)
    return True
