"""The ledger handlers (:mod:`whatsapp.service_layer.messages`) on Postgres: taking commands
in once, routing pool sends, claiming interactive before bulk without two claimers
sharing an entry, recording provider outcomes, resolving what a crash left in flight, and
receipts that only ever move a message forward, whatever their order or repetition."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.events import event_type_of, new_envelope
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from whatsapp.domain.events import BULK_TOPIC, EVENTS_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.ledger import LedgerEntry, Priority
from whatsapp.domain.messages import MessageStatus, ProviderError, StatusUpdate, advance
from whatsapp.domain.provider import FailureKind, ProviderFailure, SendAccepted
from whatsapp.domain.sessions import Session, SessionState
from whatsapp.service_layer import messages as ledger
from whatsapp.service_layer.driver import take_over
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

if TYPE_CHECKING:
    from conftest import MakeSession, ReadOutbox

pytestmark = pytest.mark.integration

UowFactory = Callable[[], WhatsappUnitOfWork]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
COMPANY = "co-ledger"
PHONE = "+5511987654321"


def send(session_id: str = "", **fields: Any) -> commands_pb2.SendMessage:
    command = commands_pb2.SendMessage(
        message_id=fields.pop("message_id", str(uuid.uuid4())),
        session_id=session_id,
        to_phone_e164=fields.pop("to_phone_e164", PHONE),
        **fields,
    )
    if not command.HasField("template") and not command.HasField("media"):
        command.text.body = "olá"
    return command


def envelope_for(command: commands_pb2.SendMessage, company: str = COMPANY) -> Any:
    record = commands_pb2.WhatsappCommand(send_message=command)
    return new_envelope(event_type_of(record), company, "tickets")


async def accept(
    uow_factory: UowFactory,
    command: commands_pb2.SendMessage,
    *,
    company: str = COMPANY,
    priority: Priority = Priority.INTERACTIVE,
    now: datetime = NOW,
) -> ledger.Accepted:
    topic = BULK_TOPIC if priority is Priority.BULK else INTERACTIVE_TOPIC
    async with uow_factory() as uow:
        outcome = await ledger.accept_command(
            uow, command, envelope_for(command, company), priority, topic, now
        )
        await uow.commit()
    return outcome


async def entry_of(uow_factory: UowFactory, message_id: str) -> LedgerEntry:
    async with uow_factory() as uow:
        entry = await uow.ledger.get(message_id)
    assert entry is not None, message_id
    return entry


async def status_events(outbox: ReadOutbox, message_id: str) -> list[tuple[int, int]]:
    """(previous, new) of the message's status events, in order."""
    changes = [
        s.record.message_status_changed
        for s in await outbox(topic=EVENTS_TOPIC)
        if s.payload == "message_status_changed"
    ]
    return [(c.previous_status, c.status) for c in changes if c.message_id == message_id]


@pytest.fixture
async def connected(make_session: MakeSession) -> Session:
    return await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)


# --- accept_command -----------------------------------------------------------------------


async def test_a_command_is_queued_once(
    uow_factory: UowFactory, outbox: ReadOutbox, connected: Session
) -> None:
    command = send(connected.id, origin=whatsapp_pb2.Origin(kind="ticket", id="t-1"))

    assert await accept(uow_factory, command) is ledger.Accepted.QUEUED
    assert await accept(uow_factory, command) is ledger.Accepted.DUPLICATE

    entry = await entry_of(uow_factory, command.message_id)
    assert entry.status is MessageStatus.QUEUED
    assert entry.session_id == connected.id
    assert entry.send_command() == command
    assert entry.origin.kind == "ticket"
    assert await status_events(outbox, command.message_id) == [
        (whatsapp_pb2.MESSAGE_STATUS_UNSPECIFIED, whatsapp_pb2.MESSAGE_STATUS_QUEUED)
    ]


@pytest.mark.parametrize(
    ("make_command", "code"),
    [
        (lambda s: send(str(uuid.uuid4())), "unknown_session"),
        (lambda s: send("not-a-uuid"), "unknown_session"),
        (lambda s: send(""), "unknown_session"),
        (
            lambda s: commands_pb2.SendMessage(
                message_id=str(uuid.uuid4()), session_id=s.id, to_phone_e164=PHONE
            ),
            "invalid_command",
        ),
        (lambda s: send(s.id, to_phone_e164="not a phone"), "invalid_command"),
        (lambda s: send(s.id, to_phone_e164="+5511987654321000000"), "invalid_command"),
        (lambda s: send(s.id, message_id="m" * 200), None),
    ],
    ids=[
        "unknown session",
        "session id not a uuid",
        "no session nor pool",
        "no content",
        "not a phone",
        "phone too long for E.164",
        "message id too long to keep",
    ],
)
async def test_a_command_that_cannot_be_sent_is_failed_with_why(
    uow_factory: UowFactory,
    outbox: ReadOutbox,
    connected: Session,
    make_command: Callable[[Session], commands_pb2.SendMessage],
    code: str | None,
) -> None:
    command = make_command(connected)

    assert await accept(uow_factory, command) is ledger.Accepted.REJECTED

    if code is None:
        async with uow_factory() as uow:
            assert await uow.ledger.get(command.message_id) is None
        return
    entry = await entry_of(uow_factory, command.message_id)
    assert entry.status is MessageStatus.FAILED
    assert entry.error is not None
    assert entry.error.code == code
    assert await status_events(outbox, command.message_id) == [
        (whatsapp_pb2.MESSAGE_STATUS_QUEUED, whatsapp_pb2.MESSAGE_STATUS_FAILED)
    ]
    assert await accept(uow_factory, command) is ledger.Accepted.DUPLICATE


async def test_a_session_of_another_company_or_deleted_is_unknown(
    uow_factory: UowFactory, make_session: MakeSession
) -> None:
    theirs = await make_session("co-other", state=SessionState.CONNECTED, desired_running=True)
    gone = await make_session(COMPANY, deleted_at=NOW)

    for session in (theirs, gone):
        command = send(session.id)
        assert await accept(uow_factory, command) is ledger.Accepted.REJECTED
        entry = await entry_of(uow_factory, command.message_id)
        assert entry.error is not None
        assert entry.error.code == "unknown_session"


async def test_a_command_past_not_after_expires(
    uow_factory: UowFactory, outbox: ReadOutbox, connected: Session
) -> None:
    command = send(connected.id)
    command.not_after.FromDatetime(NOW - timedelta(seconds=1))

    assert await accept(uow_factory, command) is ledger.Accepted.REJECTED

    assert (await entry_of(uow_factory, command.message_id)).status is MessageStatus.EXPIRED
    assert await status_events(outbox, command.message_id) == [
        (whatsapp_pb2.MESSAGE_STATUS_QUEUED, whatsapp_pb2.MESSAGE_STATUS_EXPIRED)
    ]


async def test_a_pool_send_is_routed_to_the_best_healthy_member(
    uow_factory: UowFactory, outbox: ReadOutbox, make_session: MakeSession
) -> None:
    live = {"state": SessionState.CONNECTED, "desired_running": True, "pool_id": "vendas"}
    await make_session(COMPANY, **live, pool_priority=0, breaker_state="open")
    await make_session(COMPANY, pool_id="vendas", pool_priority=0)
    busy = await make_session(COMPANY, **live, pool_priority=1)
    idle = await make_session(COMPANY, **live, pool_priority=1)
    await make_session("co-other", **live, pool_priority=0)
    assert await accept(uow_factory, send(busy.id)) is ledger.Accepted.QUEUED
    command = send(pool_id="vendas")
    cause = envelope_for(command)

    async with uow_factory() as uow:
        outcome = await ledger.accept_command(uow, command, cause, Priority.BULK, BULK_TOPIC, NOW)
        await uow.commit()

    assert outcome is ledger.Accepted.ROUTED
    async with uow_factory() as uow:
        assert await uow.ledger.get(command.message_id) is None
    (routed,) = [s for s in await outbox(topic=BULK_TOPIC)]
    assert routed.key == idle.id
    assert routed.record.send_message.session_id == idle.id
    assert routed.record.send_message.message_id == command.message_id
    assert routed.record.envelope.causation_id == cause.event_id
    assert routed.record.envelope.correlation_id == cause.correlation_id
    assert routed.record.envelope.company_id == COMPANY


async def test_a_pool_without_a_healthy_member_fails_the_send(
    uow_factory: UowFactory, make_session: MakeSession
) -> None:
    await make_session(
        COMPANY, pool_id="vendas", state=SessionState.DISCONNECTED, desired_running=True
    )
    command = send(pool_id="vendas")

    assert await accept(uow_factory, command) is ledger.Accepted.REJECTED

    entry = await entry_of(uow_factory, command.message_id)
    assert entry.status is MessageStatus.FAILED
    assert entry.error is not None
    assert entry.error.code == "no_healthy_session"


# --- claim --------------------------------------------------------------------------------


async def queue(
    uow_factory: UowFactory, session: Session, priority: Priority, n: int = 1, **fields: Any
) -> list[str]:
    ids = []
    for _ in range(n):
        command = send(session.id, **fields)
        assert await accept(uow_factory, command, priority=priority) is ledger.Accepted.QUEUED
        ids.append(command.message_id)
    return ids


async def test_claims_take_interactive_before_bulk_then_arrival_order(
    uow_factory: UowFactory, connected: Session
) -> None:
    bulk = await queue(uow_factory, connected, Priority.BULK, 3)
    interactive = await queue(uow_factory, connected, Priority.INTERACTIVE, 2)

    async with uow_factory() as uow:
        first = await ledger.claim(uow, connected.id, NOW, 3)
        await uow.commit()
    async with uow_factory() as uow:
        second = await ledger.claim(uow, connected.id, NOW, 10)
        await uow.commit()

    assert [e.message_id for e in first] == [*interactive, bulk[0]]
    assert [e.message_id for e in second] == bulk[1:]
    assert all(e.in_flight for e in [*first, *second])
    async with uow_factory() as uow:
        assert await ledger.claim(uow, connected.id, NOW, 10) == []


async def test_a_second_claimer_skips_what_the_first_holds(
    uow_factory: UowFactory, connected: Session
) -> None:
    ids = await queue(uow_factory, connected, Priority.INTERACTIVE, 4)

    async with uow_factory() as holder:
        held = await ledger.claim(holder, connected.id, NOW, 2)
        async with uow_factory() as other:
            taken = await asyncio.wait_for(ledger.claim(other, connected.id, NOW, 10), 5)
            await other.commit()
        await holder.commit()

    assert [e.message_id for e in held] == ids[:2]
    assert [e.message_id for e in taken] == ids[2:]


async def test_claims_expire_late_entries_and_wait_for_retries(
    uow_factory: UowFactory, outbox: ReadOutbox, connected: Session
) -> None:
    (late,) = await queue(uow_factory, connected, Priority.BULK)
    (waiting,) = await queue(uow_factory, connected, Priority.BULK)
    async with uow_factory() as uow:
        entry = await uow.ledger.get(waiting, lock=True)
        assert entry is not None
        entry.next_attempt_at = NOW + timedelta(minutes=5)
        await uow.ledger.save(entry)
        await uow.commit()
    command = send(connected.id)
    command.not_after.FromDatetime(NOW + timedelta(seconds=30))
    assert await accept(uow_factory, command) is ledger.Accepted.QUEUED

    async with uow_factory() as uow:
        claimed = await ledger.claim(uow, connected.id, NOW + timedelta(minutes=1), 10)
        await uow.commit()

    assert [e.message_id for e in claimed] == [late]
    assert (await entry_of(uow_factory, command.message_id)).status is MessageStatus.EXPIRED
    assert (await status_events(outbox, command.message_id))[-1][
        1
    ] == whatsapp_pb2.MESSAGE_STATUS_EXPIRED


# --- outcomes -----------------------------------------------------------------------------


async def claimed_entries(uow_factory: UowFactory, session: Session, n: int) -> list[LedgerEntry]:
    await queue(uow_factory, session, Priority.INTERACTIVE, n)
    async with uow_factory() as uow:
        entries = await ledger.claim(uow, session.id, NOW, n)
        await uow.commit()
    return entries


async def test_outcomes_decide_each_entrys_fate(
    uow_factory: UowFactory, outbox: ReadOutbox, connected: Session
) -> None:
    entries = await claimed_entries(uow_factory, connected, 7)
    later = NOW + timedelta(seconds=10)
    entries[5].next_attempt_at = later
    outcomes: list[tuple[LedgerEntry, ledger.Outcome]] = [
        (entries[0], SendAccepted("wamid.ok")),
        (entries[1], ProviderFailure(FailureKind.TRANSIENT, "ReadTimeout", outcome_unknown=True)),
        (entries[2], ProviderFailure(FailureKind.THROTTLED, "130429", retry_after=30)),
        (entries[3], ProviderFailure(FailureKind.AUTH, "190", "token expired")),
        (entries[4], ProviderFailure(FailureKind.UNDELIVERABLE, "131026", "undeliverable")),
        (entries[5], None),
        (entries[6], ProviderFailure(FailureKind.THROTTLED, "130429")),
    ]
    retry = ledger.RetryPolicy(max_attempts=2)
    async with uow_factory() as uow:
        statuses = await ledger.record_outcomes(uow, outcomes[:6], NOW, retry)
        await uow.commit()

    ids = [entry.message_id for entry in entries]
    assert statuses == {
        ids[0]: MessageStatus.SENT,
        ids[1]: MessageStatus.UNKNOWN,
        ids[2]: MessageStatus.QUEUED,
        ids[3]: MessageStatus.QUEUED,
        ids[4]: MessageStatus.FAILED,
        ids[5]: MessageStatus.QUEUED,
    }
    stored = [await entry_of(uow_factory, message_id) for message_id in ids]
    assert all(not entry.in_flight for entry in stored[:6])
    assert (stored[0].provider_message_id, stored[0].attempts) == ("wamid.ok", 1)
    assert stored[1].error is not None and stored[1].error.code == "ReadTimeout"
    assert stored[2].attempts == 1
    assert stored[2].next_attempt_at == NOW + timedelta(seconds=30)
    assert (stored[3].attempts, stored[3].next_attempt_at) == (0, None)
    assert stored[4].error == ProviderError("131026", "undeliverable", "")
    assert stored[5].next_attempt_at == later
    assert stored[6].in_flight
    assert await status_events(outbox, ids[2]) == [
        (whatsapp_pb2.MESSAGE_STATUS_UNSPECIFIED, whatsapp_pb2.MESSAGE_STATUS_QUEUED)
    ]

    async with uow_factory() as uow:
        again = await ledger.claim(uow, connected.id, NOW + timedelta(minutes=1), 10)
        retried = await ledger.record_outcomes(
            uow, [(e, outcomes[2][1]) for e in again if e.message_id == ids[2]], NOW, retry
        )
        await uow.commit()
    assert retried == {ids[2]: MessageStatus.FAILED}


async def test_a_crash_leaves_unknown_never_resent(
    uow_factory: UowFactory, outbox: ReadOutbox, connected: Session, make_session: MakeSession
) -> None:
    other = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    mine = await claimed_entries(uow_factory, connected, 2)
    theirs = await claimed_entries(uow_factory, other, 1)

    async with uow_factory() as uow:
        assert await ledger.resolve_in_flight(uow, [connected.id], NOW) == 2
        await uow.commit()
    async with uow_factory() as uow:
        late = await ledger.record_outcomes(
            uow, [(mine[0], SendAccepted("wamid.late"))], NOW, ledger.RetryPolicy(8)
        )
        claimed_again = await ledger.claim(uow, connected.id, NOW, 10)
        await uow.commit()

    assert late == {}
    assert claimed_again == []
    for entry in mine:
        stored = await entry_of(uow_factory, entry.message_id)
        assert stored.status is MessageStatus.UNKNOWN
        assert stored.error is not None and stored.error.code == "outcome_unknown"
        assert not stored.in_flight
        assert (await status_events(outbox, entry.message_id))[-1] == (
            whatsapp_pb2.MESSAGE_STATUS_QUEUED,
            whatsapp_pb2.MESSAGE_STATUS_UNKNOWN,
        )
    assert (await entry_of(uow_factory, theirs[0].message_id)).in_flight


async def test_a_takeover_resolves_in_flight_and_reports_live_states_disconnected(
    uow_factory: UowFactory, outbox: ReadOutbox, make_session: MakeSession
) -> None:
    live = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    stopped = await make_session(COMPANY, state=SessionState.STOPPED)
    deleted = await make_session(COMPANY, state=SessionState.CONNECTED, deleted_at=NOW)
    in_flight = await claimed_entries(uow_factory, live, 3)

    async with uow_factory() as uow:
        takeover = await take_over(
            uow, [live.id, stopped.id, deleted.id], "worker-b", NOW + timedelta(seconds=1)
        )
        await uow.commit()

    assert takeover.unknown == 3
    assert {session.id for session in takeover.sessions} == {live.id, stopped.id}
    by_id = {session.id: session for session in takeover.sessions}
    assert by_id[live.id].state is SessionState.DISCONNECTED
    assert by_id[stopped.id].state is SessionState.STOPPED
    for entry in in_flight:
        assert (await entry_of(uow_factory, entry.message_id)).status is MessageStatus.UNKNOWN
    async with uow_factory() as uow:
        views = {
            session_id: await uow.sessions.view(session_id, COMPANY)
            for session_id in (live.id, stopped.id)
        }
        stored_live = await uow.sessions.get(live.id)
    assert all(view is not None and view.owner == "worker-b" for view in views.values())
    assert stored_live is not None and stored_live.state is SessionState.DISCONNECTED
    assert "taken over by worker-b" in stored_live.state_reason
    changes = [
        (s.record.session_state_changed.session_id, s.record.session_state_changed.state)
        for s in await outbox(topic=EVENTS_TOPIC)
        if s.payload == "session_state_changed"
        and s.record.session_state_changed.session_id in (live.id, stopped.id, deleted.id)
    ]
    assert changes == [(live.id, whatsapp_pb2.SESSION_STATE_DISCONNECTED)]


async def test_the_sweep_finds_sessions_with_claimable_entries_only(
    uow_factory: UowFactory, connected: Session, make_session: MakeSession
) -> None:
    waiting = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    busy = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    idle = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    await accept(uow_factory, send(connected.id))
    retry = send(waiting.id)
    await accept(uow_factory, retry)
    async with uow_factory() as uow:
        entry = await uow.ledger.get(retry.message_id)
        assert entry is not None
        entry.next_attempt_at = NOW + timedelta(minutes=5)
        await uow.ledger.save(entry)
        await uow.commit()
    await claimed_entries(uow_factory, busy, 1)
    ids = [connected.id, waiting.id, busy.id, idle.id]

    async with uow_factory() as uow:
        due_now = await uow.ledger.sessions_with_due(ids, NOW)
        due_later = await uow.ledger.sessions_with_due(ids, NOW + timedelta(minutes=6))
        none_asked = await uow.ledger.sessions_with_due([], NOW)

    assert due_now == {connected.id}
    assert due_later == {connected.id, waiting.id}
    assert none_asked == set()


# --- receipts -----------------------------------------------------------------------------

RECEIPTS = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.FAILED,
    MessageStatus.UNSPECIFIED,
)


def receipt(provider_id: str, status: MessageStatus, by_our_id: str = "") -> StatusUpdate:
    error = ProviderError("131026", "undeliverable") if status is MessageStatus.FAILED else None
    return StatusUpdate(
        provider_message_id=provider_id,
        status=status,
        recipient_phone_e164=PHONE,
        occurred_at=NOW,
        message_id=by_our_id,
        error=error,
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(RECEIPTS), st.booleans()), min_size=1, max_size=8
    ).flatmap(lambda r: st.permutations(r)),
    cuts=st.lists(st.integers(min_value=1, max_value=7), max_size=3),
)
async def test_receipts_in_any_order_and_repetition_only_move_forward(
    uow_factory: UowFactory,
    outbox: ReadOutbox,
    connected: Session,
    reports: list[tuple[MessageStatus, bool]],
    cuts: list[int],
) -> None:
    (claimed,) = await claimed_entries(uow_factory, connected, 1)
    provider_id = f"wamid.{uuid.uuid4().hex}"
    async with uow_factory() as uow:
        await ledger.record_outcomes(
            uow, [(claimed, SendAccepted(provider_id))], NOW, ledger.RetryPolicy(8)
        )
        await uow.commit()
    updates = [
        receipt(provider_id, status, claimed.message_id if by_id else "")
        for status, by_id in [*reports, *reports]
    ]
    bounds = sorted({0, *(c for c in cuts if c < len(updates)), len(updates)})

    changes = 0
    for start, end in itertools.pairwise(bounds):
        async with uow_factory() as uow:
            changes += await ledger.apply_statuses(uow, connected.id, updates[start:end], NOW)
            await uow.commit()

    expected = MessageStatus.SENT
    steps = 0
    for update in updates:
        reached = advance(expected, update.status)
        steps += reached is not expected
        expected = reached
    stored = await entry_of(uow_factory, claimed.message_id)
    assert stored.status is expected
    events = await status_events(outbox, claimed.message_id)
    assert len(events) == 2 + steps
    assert changes <= steps
    progress = [s for s, _ in reports if s is not MessageStatus.FAILED]
    if MessageStatus.FAILED not in {s for s, _ in reports}:
        highest = max([MessageStatus.SENT, *progress], key=lambda s: s.value)
        assert stored.status is highest
    if stored.status is MessageStatus.FAILED:
        assert stored.error is not None and stored.error.code == "131026"
    else:
        assert stored.error is None


async def test_receipts_of_another_session_or_unknown_messages_change_nothing(
    uow_factory: UowFactory, connected: Session, make_session: MakeSession
) -> None:
    other = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
    (claimed,) = await claimed_entries(uow_factory, connected, 1)
    async with uow_factory() as uow:
        await ledger.record_outcomes(
            uow, [(claimed, SendAccepted("wamid.a"))], NOW, ledger.RetryPolicy(8)
        )
        await uow.commit()

    async with uow_factory() as uow:
        changed = await ledger.apply_statuses(
            uow,
            other.id,
            [
                receipt("wamid.a", MessageStatus.READ),
                receipt("wamid.a", MessageStatus.READ, claimed.message_id),
                receipt("wamid.nobody", MessageStatus.DELIVERED),
            ],
            NOW,
        )
        await uow.commit()

    assert changed == 0
    assert (await entry_of(uow_factory, claimed.message_id)).status is MessageStatus.SENT
