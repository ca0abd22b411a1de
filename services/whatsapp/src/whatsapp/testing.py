"""Helpers shared by the whatsapp service's tests and benchmarks.

* **Sessions** seeded straight into the database (:func:`seed_sim_sessions`), as the API
  would create them but without its round trips, so that hundreds or thousands of them
  cost one transaction per batch.
* **Commands**: ``SendMessage`` records built as the other services publish them — a
  ``WhatsappCommand`` with a proper envelope, keyed by the session id
  (:func:`send_message`, :func:`command_record`, :func:`plan_sends`) — and published
  through any :class:`~esquadrao_common.messaging.Publisher` (:func:`publish_records`).
* **What the service recorded**: the ledger and the sessions of a company as plain values
  (:func:`ledger_rows`, :func:`ledger_summary`, :func:`session_rows`), to wait on and to
  compare with the simulator's witness.
* A **bounded wait** (:func:`wait_until`) that can give up early when something it depends
  on died.

Nothing in the service uses this module. It only imports what the service depends on
anyway (no simulator, no devstack), so benchmarks under ``bench/`` and tests of every tier
can share it. Everything is scoped by company id: give each test or run a company of its
own (:func:`new_company_id`) and it never sees another's rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.db import Database
from esquadrao_common.events import event_type_of, new_envelope, record_headers
from esquadrao_common.messaging import OutgoingRecord, Publisher
from sqlalchemy import ColumnElement, func, select

from whatsapp.adapters.limits import profile_named
from whatsapp.adapters.orm import messages, sessions
from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.messages import MessageStatus
from whatsapp.domain.sessions import ProviderKind, Session, SessionState, new_session_id
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

#: The envelope's ``producer`` of the commands built here.
PRODUCER: Final = "whatsapp-testing"

#: Sessions seeded per transaction.
SEED_BATCH: Final = 500

#: Where the unit of work of a helper comes from: a database, or a factory of units.
UnitsOfWork = Database | Callable[[], WhatsappUnitOfWork]


def new_company_id(prefix: str = "co-test") -> str:
    """A company id of its own for one test or run (``<prefix>-<12 hex digits>``)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unit_of_work_factory(source: UnitsOfWork) -> Callable[[], WhatsappUnitOfWork]:
    """Units of work on ``source``: a :class:`Database`, or already a factory of them."""
    if isinstance(source, Database):
        database = source
        return lambda: WhatsappUnitOfWork(database)
    return source


def recipient_phone(index: int) -> str:
    """A distinct São Paulo mobile number (E.164) for each ``index`` in ``[0, 10⁸)``."""
    if not 0 <= index < 100_000_000:
        raise ValueError(f"recipient index {index} is outside [0, 10**8)")
    return f"+55119{index:08d}"


# --- sessions -----------------------------------------------------------------------------


async def seed_sim_sessions(
    units: UnitsOfWork,
    n: int,
    company_id: str,
    *,
    profile: str = "lifted",
    desired_running: bool = True,
    name_prefix: str = "sim",
    now: datetime | None = None,
) -> list[str]:
    """Insert ``n`` sessions of provider ``sim`` for ``company_id``; return their ids.

    They are STOPPED with no owner and no credentials, as the API creates them: the
    worker owning a session's partition adopts it when it is assigned (sessions must
    exist before the workers start, or be started by a ``SessionControl`` START) and,
    with ``desired_running``, connects it, pairing first since no credentials are saved.
    Ids are fresh UUIDs, so sessions never collide on a simulator shared by several
    tests. ``profile`` must name a known limits profile (``lifted``: no practical limit).
    """
    if n < 0:
        raise ValueError(f"cannot seed {n} sessions")
    profile_named(profile)  # fail here, not in every driver, on an unknown profile
    at = now or datetime.now(UTC)
    new_uow = unit_of_work_factory(units)
    ids = [new_session_id() for _ in range(n)]
    for first in range(0, n, SEED_BATCH):
        async with new_uow() as uow:
            for number, session_id in enumerate(ids[first : first + SEED_BATCH], start=first):
                session = Session(
                    id=session_id,
                    company_id=company_id,
                    name=f"{name_prefix}-{number}",
                    provider=ProviderKind.SIM,
                    desired_running=desired_running,
                    profile=profile,
                    created_at=at,
                    updated_at=at,
                )
                await uow.sessions.add(session, None)
            await uow.commit()
    return ids


@dataclass(frozen=True)
class SessionRow:
    """A session as its row says now: who drives it, and the state it last reported."""

    id: str
    state: SessionState
    owner: str
    state_reason: str
    #: When the owning worker last wrote the state (None: never driven).
    state_changed_at: datetime | None


async def session_rows(units: UnitsOfWork, company_id: str) -> dict[str, SessionRow]:
    """Every session of ``company_id`` (deleted ones too), by id."""
    query = select(
        sessions.c.id,
        sessions.c.state,
        sessions.c.owner,
        sessions.c.state_reason,
        sessions.c.state_changed_at,
    ).where(sessions.c.company_id == company_id)
    async with unit_of_work_factory(units)() as uow:
        result = await uow.session.execute(query)
        return {
            str(row.id): SessionRow(
                id=str(row.id),
                state=SessionState(row.state),
                owner=row.owner,
                state_reason=row.state_reason,
                state_changed_at=row.state_changed_at,
            )
            for row in result
        }


# --- commands -----------------------------------------------------------------------------


def send_message(
    session_id: str,
    company_id: str,
    *,
    to_phone_e164: str,
    body: str = "Olá!",
    message_id: str | None = None,
    origin: whatsapp_pb2.Origin | None = None,
    producer: str = PRODUCER,
) -> commands_pb2.WhatsappCommand:
    """A ``WhatsappCommand`` carrying one text ``SendMessage`` from ``session_id``, with a
    new envelope of ``company_id`` (who owns the session: the service rejects a send of
    another company's session). ``message_id`` defaults to a fresh UUID."""
    send = commands_pb2.SendMessage(
        message_id=message_id or str(uuid.uuid4()),
        session_id=session_id,
        to_phone_e164=to_phone_e164,
        text=commands_pb2.TextContent(body=body),
    )
    if origin is not None:
        send.origin.CopyFrom(origin)
    command = commands_pb2.WhatsappCommand(send_message=send)
    command.envelope.CopyFrom(new_envelope(event_type_of(command), company_id, producer))
    return command


def command_key(command: commands_pb2.WhatsappCommand) -> str:
    """The key a command is published with: its session id (or, for a pool send, its
    pool id), so that a session's commands keep their order and reach its owner."""
    which = command.WhichOneof("payload")
    if which == "send_message":
        return command.send_message.session_id or command.send_message.pool_id
    if which == "session_control":
        return command.session_control.session_id
    raise ValueError("the command has no payload")


def command_record(command: commands_pb2.WhatsappCommand, topic: str) -> OutgoingRecord:
    """``command`` as a record of ``topic`` (``whatsapp.send.interactive.v1`` or
    ``whatsapp.send.bulk.v1``), keyed and with the envelope's headers."""
    if topic not in (INTERACTIVE_TOPIC, BULK_TOPIC):
        raise ValueError(f"{topic!r} is not a command topic of the whatsapp service")
    return OutgoingRecord(
        topic=topic,
        key=command_key(command).encode(),
        value=command.SerializeToString(),
        headers=record_headers(command.envelope),
    )


@dataclass(frozen=True)
class PlannedSend:
    """One message of a plan: what it is, which session sends it, and its record."""

    message_id: str
    session_id: str
    topic: str
    record: OutgoingRecord


def plan_sends(
    session_ids: Sequence[str],
    company_id: str,
    per_session: int,
    *,
    interactive_every: int | None = 4,
    body: str = "Olá!",
) -> list[PlannedSend]:
    """``per_session`` text messages from each session, ready to publish.

    Message ``k`` of a session goes to :func:`recipient_phone` ``(k)``, so a session's
    messages have distinct recipients (the driver sends those concurrently). Every
    ``interactive_every``-th message (``k % interactive_every == 0``) goes on the
    interactive topic, the others on the bulk topic; None: all bulk. The plan is ordered
    round by round (message ``k`` of every session, then ``k + 1``), so publishing it in
    slices spreads the load over every session.
    """
    if per_session < 0:
        raise ValueError(f"cannot plan {per_session} messages per session")
    if interactive_every is not None and interactive_every < 1:
        raise ValueError("interactive_every must be positive (or None: all bulk)")
    plan: list[PlannedSend] = []
    for k in range(per_session):
        interactive = interactive_every is not None and k % interactive_every == 0
        topic = INTERACTIVE_TOPIC if interactive else BULK_TOPIC
        for session_id in session_ids:
            command = send_message(
                session_id, company_id, to_phone_e164=recipient_phone(k), body=body
            )
            plan.append(
                PlannedSend(
                    message_id=command.send_message.message_id,
                    session_id=session_id,
                    topic=topic,
                    record=command_record(command, topic),
                )
            )
    return plan


async def publish_records(
    publisher: Publisher, records: Iterable[OutgoingRecord], *, batch_size: int = 1_000
) -> int:
    """Publish ``records`` in order, ``batch_size`` at a time, each batch acknowledged
    before the next; return how many were published."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    batch: list[OutgoingRecord] = []
    published = 0
    for record in records:
        batch.append(record)
        if len(batch) == batch_size:
            await publisher.publish(batch)
            published += len(batch)
            batch = []
    if batch:
        await publisher.publish(batch)
        published += len(batch)
    return published


# --- the ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    """One ledger entry as its row says now."""

    message_id: str
    session_id: str
    status: MessageStatus
    #: Claimed by a driver and not resolved yet (handed to the provider, or about to be).
    in_flight: bool
    attempts: int
    error_code: str

    @property
    def pending(self) -> bool:
        """Still to be sent or resolved: queued, in flight or not."""
        return self.status is MessageStatus.QUEUED


def _of_company(company_id: str, session_ids: Collection[str] | None) -> list[ColumnElement[bool]]:
    """The conditions of a company's ledger entries, of some sessions only if given."""
    conditions: list[ColumnElement[bool]] = [messages.c.company_id == company_id]
    if session_ids is not None:
        conditions.append(messages.c.session_id.in_(list(session_ids)))
    return conditions


async def ledger_rows(
    units: UnitsOfWork, company_id: str, *, session_ids: Collection[str] | None = None
) -> dict[str, LedgerRow]:
    """Every ledger entry of ``company_id`` (of ``session_ids`` only, when given), by
    message id."""
    query = select(
        messages.c.message_id,
        messages.c.session_id,
        messages.c.status,
        messages.c.sending_since,
        messages.c.attempts,
        messages.c.error_code,
    ).where(*_of_company(company_id, session_ids))
    async with unit_of_work_factory(units)() as uow:
        result = await uow.session.execute(query)
        return {
            row.message_id: LedgerRow(
                message_id=row.message_id,
                session_id=str(row.session_id),
                status=MessageStatus[row.status.upper()],
                in_flight=row.sending_since is not None,
                attempts=row.attempts,
                error_code=row.error_code,
            )
            for row in result
        }


@dataclass(frozen=True)
class LedgerSummary:
    """How many ledger entries a company has, by status, and how many are in flight."""

    by_status: dict[MessageStatus, int]
    #: Claimed by a driver and not resolved yet, whatever their status.
    in_flight: int
    #: In flight with no word from the provider yet (a receipt may move an entry in
    #: flight to "sent" before the driver records the answer to the send).
    awaiting_answer: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def pending(self) -> int:
        """Still to be sent or resolved: queued, in flight or not."""
        return self.by_status.get(MessageStatus.QUEUED, 0)

    @property
    def sent(self) -> int:
        """Accepted by the provider as far as the ledger knows: sent, delivered or read."""
        done = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)
        return sum(self.by_status.get(status, 0) for status in done)

    def __str__(self) -> str:
        counts = ", ".join(f"{status.name.lower()} {n}" for status, n in self.by_status.items())
        return f"{self.total} entries ({counts or 'none'}; {self.in_flight} in flight)"


async def ledger_summary(
    units: UnitsOfWork, company_id: str, *, session_ids: Collection[str] | None = None
) -> LedgerSummary:
    """The ledger of ``company_id`` (of ``session_ids`` only, when given) counted: one
    query, cheap enough to poll."""
    query = (
        select(messages.c.status, func.count(), func.count(messages.c.sending_since))
        .where(*_of_company(company_id, session_ids))
        .group_by(messages.c.status)
    )
    async with unit_of_work_factory(units)() as uow:
        rows = (await uow.session.execute(query)).tuples().all()
    counts = {MessageStatus[status.upper()]: (int(n), int(flying)) for status, n, flying in rows}
    return LedgerSummary(
        by_status={status: n for status, (n, _) in counts.items()},
        in_flight=sum(flying for _, flying in counts.values()),
        awaiting_answer=counts.get(MessageStatus.QUEUED, (0, 0))[1],
    )


# --- waiting ------------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.2,
    abort: Callable[[], str | None] | None = None,
    describe: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """Return once ``await check()`` is true, with the seconds it took.

    Raises TimeoutError naming ``what`` after ``timeout_s`` seconds, and RuntimeError as
    soon as ``abort()`` gives a reason to stop waiting (say, a process the condition
    depends on exited); either message ends with ``await describe()`` when given (what
    the system looks like: the reader of a failure needs it more than the deadline).
    Never decides anything on how long the wait took: the bound is there so that a
    broken system fails the run instead of hanging it.
    """
    started = time.monotonic()
    deadline = started + timeout_s

    async def state() -> str:
        return f"; {await describe()}" if describe is not None else ""

    while True:
        if abort is not None and (reason := abort()) is not None:
            raise RuntimeError(f"gave up waiting for {what}{await state()}: {reason}")
        if await check():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}{await state()}")
        await asyncio.sleep(interval_s)
