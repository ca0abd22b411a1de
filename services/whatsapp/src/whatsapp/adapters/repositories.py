"""Rows of the whatsapp tables as domain values, and the queries the service needs.

Every read by a company is scoped by it (a foreign id is "not found"); the worker-side
queries (by session id) run for sessions the worker owns, found by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from esquadrao_common.pagination import keyset_page
from sqlalchemy import ColumnElement, and_, any_, bindparam, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from whatsapp.adapters.orm import inbound_messages, messages, sessions
from whatsapp.domain.ledger import LedgerEntry, Origin, Priority
from whatsapp.domain.messages import MessageStatus, ProviderError
from whatsapp.domain.sessions import ProviderKind, Session, SessionState

_SESSION_FIELDS = (
    "id",
    "company_id",
    "name",
    "state_reason",
    "desired_running",
    "phone_e164",
    "provider_number_id",
    "pool_id",
    "pool_priority",
    "profile",
    "limit_overrides",
    "breaker_state",
    "breaker_reason",
    "reconnect_attempts",
    "next_reconnect_at",
    "connected_since",
    "created_at",
    "updated_at",
    "deleted_at",
    "version",
)


def among(column: ColumnElement[Any], session_ids: Sequence[str]) -> ColumnElement[bool]:
    """``column = ANY($1)`` with the ids as one array parameter: a worker asks about all
    its sessions at once (thousands), past what one parameter per id allows."""
    return column == any_(literal(list(session_ids), ARRAY(UUID(as_uuid=False))))


def session_from_row(row: Mapping[Any, Any]) -> Session:
    values = {name: row[name] for name in _SESSION_FIELDS}
    return Session(
        provider=ProviderKind(row["provider"]), state=SessionState(row["state"]), **values
    )


def session_values(session: Session) -> dict[str, Any]:
    values = {name: getattr(session, name) for name in _SESSION_FIELDS}
    values["provider"] = session.provider.value
    values["state"] = session.state.value
    return values


@dataclass(frozen=True)
class SessionView:
    """A session as operators see it: the value, plus what only its row tells."""

    session: Session
    #: Whether credentials are stored (they are never read for a view).
    has_credentials: bool
    #: When the owning worker last changed the state.
    state_changed_at: datetime | None
    #: The worker driving the session (``host:pid``), empty when none has adopted it.
    owner: str


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions of a company a listing shows; every criterion given must hold.
    ``deleted`` False shows live sessions only, True deleted ones only."""

    state: SessionState | None = None
    pool_id: str | None = None
    provider: ProviderKind | None = None
    deleted: bool = False


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionView]
    next_cursor: str | None


#: The columns of a view: every one but the credentials, and whether there are any.
_VIEW_COLUMNS = (
    *(column for column in sessions.c if column.name != "credentials"),
    sessions.c.credentials.is_not(None).label("has_credentials"),
)


def _view_of(values: Mapping[Any, Any]) -> SessionView:
    return SessionView(
        session=session_from_row(values),
        has_credentials=bool(values["has_credentials"]),
        state_changed_at=values["state_changed_at"],
        owner=values["owner"],
    )


class SessionRepository:
    """The ``sessions`` table."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, session: Session, credentials: bytes | None) -> None:
        await self.db.execute(
            insert(sessions).values(**session_values(session), credentials=credentials)
        )

    async def get(
        self, session_id: str, *, company_id: str | None = None, lock: bool = False
    ) -> Session | None:
        """The session ``session_id`` (of ``company_id`` when given), deleted ones too."""
        query = select(sessions).where(sessions.c.id == session_id)
        if company_id is not None:
            query = query.where(sessions.c.company_id == company_id)
        if lock:
            query = query.with_for_update()
        row = (await self.db.execute(query)).mappings().first()
        return session_from_row(row) if row is not None else None

    async def save(self, session: Session, *, now: datetime) -> None:
        """Write what operators change (bumping the version). The connection's state,
        breaker and attempts belong to the driver (:meth:`set_state`): an operator's
        read-modify-write must not put back a state the driver has since left."""
        session.version += 1
        session.updated_at = now
        await self.db.execute(
            update(sessions)
            .where(sessions.c.id == session.id)
            .values(
                name=session.name,
                desired_running=session.desired_running,
                provider_number_id=session.provider_number_id,
                pool_id=session.pool_id,
                pool_priority=session.pool_priority,
                profile=session.profile,
                limit_overrides=session.limit_overrides,
                deleted_at=session.deleted_at,
                updated_at=now,
                version=session.version,
            )
        )

    async def set_state(self, session: Session, *, now: datetime, owner: str) -> bool:
        """Write the state fields only (drivers change them often, operators the rest),
        and only while ``owner`` still owns the session: a driver that lost its session
        to another worker must not overwrite what the new owner reports. Whether it wrote.
        """
        result = await self.db.execute(
            update(sessions)
            .where(sessions.c.id == session.id, sessions.c.owner == owner)
            .values(
                state=session.state.value,
                state_reason=session.state_reason,
                state_changed_at=now,
                phone_e164=session.phone_e164,
                reconnect_attempts=session.reconnect_attempts,
                next_reconnect_at=session.next_reconnect_at,
                connected_since=session.connected_since,
                breaker_state=session.breaker_state,
                breaker_reason=session.breaker_reason,
                updated_at=now,
            )
            .returning(sessions.c.id)
        )
        return result.first() is not None

    async def credentials(self, session_id: str) -> bytes | None:
        return (
            await self.db.execute(select(sessions.c.credentials).where(sessions.c.id == session_id))
        ).scalar_one_or_none()

    async def set_credentials(self, session_id: str, credentials: bytes | None) -> None:
        await self.db.execute(
            update(sessions).where(sessions.c.id == session_id).values(credentials=credentials)
        )

    async def set_pairing(self, session_id: str, pairing: dict[str, Any] | None) -> None:
        await self.db.execute(
            update(sessions).where(sessions.c.id == session_id).values(pairing=pairing)
        )

    async def pairing(self, session_id: str) -> dict[str, Any] | None:
        result = await self.db.execute(
            select(sessions.c.pairing).where(sessions.c.id == session_id)
        )
        value: dict[str, Any] | None = result.scalar_one_or_none()
        return value

    async def set_owner(self, session_ids: Iterable[str], owner: str) -> None:
        ids = list(session_ids)
        if ids:
            await self.db.execute(
                update(sessions).where(among(sessions.c.id, ids)).values(owner=owner)
            )

    async def owners(self, session_ids: Sequence[str]) -> dict[str, str]:
        """The worker each of ``session_ids`` is driven by (``owner``)."""
        if not session_ids:
            return {}
        rows = await self.db.execute(
            select(sessions.c.id, sessions.c.owner).where(among(sessions.c.id, session_ids))
        )
        return {str(session_id): str(owner) for session_id, owner in rows.tuples()}

    async def save_metrics(self, session_id: str, metrics: dict[str, Any], now: datetime) -> None:
        await self.db.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(metrics=metrics, metrics_at=now)
        )

    async def live_of_company(self, company_id: str, session_ids: Sequence[str]) -> set[str]:
        """Which of ``session_ids`` are live sessions of ``company_id``."""
        if not session_ids:
            return set()
        rows = await self.db.execute(
            select(sessions.c.id).where(
                sessions.c.id.in_(session_ids),
                sessions.c.company_id == company_id,
                sessions.c.deleted_at.is_(None),
            )
        )
        return {str(session_id) for (session_id,) in rows}

    async def live_ids(self) -> list[tuple[str, bool]]:
        """Every session not deleted, with whether it should run (workers filter by
        partition)."""
        rows = await self.db.execute(
            select(sessions.c.id, sessions.c.desired_running).where(sessions.c.deleted_at.is_(None))
        )
        return [(str(row.id), bool(row.desired_running)) for row in rows]

    async def live(self, session_ids: Sequence[str]) -> list[Session]:
        """The sessions of ``session_ids`` that are not deleted."""
        if not session_ids:
            return []
        rows = await self.db.execute(
            select(sessions).where(
                among(sessions.c.id, session_ids), sessions.c.deleted_at.is_(None)
            )
        )
        return [session_from_row(row) for row in rows.mappings()]

    async def by_provider_number(self, provider_number_id: str) -> Session | None:
        row = (
            (
                await self.db.execute(
                    select(sessions).where(
                        sessions.c.provider_number_id == provider_number_id,
                        sessions.c.deleted_at.is_(None),
                    )
                )
            )
            .mappings()
            .first()
        )
        return session_from_row(row) if row is not None else None

    async def pool_members(self, company_id: str, pool_id: str) -> list[Session]:
        rows = await self.db.execute(
            select(sessions)
            .where(
                sessions.c.company_id == company_id,
                sessions.c.pool_id == pool_id,
                sessions.c.deleted_at.is_(None),
            )
            .order_by(sessions.c.pool_priority, sessions.c.id)
        )
        return [session_from_row(row) for row in rows.mappings()]

    async def view(self, session_id: str, company_id: str) -> SessionView | None:
        """The company's session ``session_id`` as operators see it, deleted ones too."""
        row = (
            (
                await self.db.execute(
                    select(*_VIEW_COLUMNS).where(
                        sessions.c.id == session_id, sessions.c.company_id == company_id
                    )
                )
            )
            .mappings()
            .first()
        )
        return _view_of(row) if row is not None else None

    async def page(
        self, company_id: str, criteria: SessionFilter, *, cursor: str | None, limit: int
    ) -> SessionPage:
        """One page of the company's sessions matching ``criteria``, oldest first.

        Companies have tens to thousands of sessions, so ``(company_id, id)`` narrows the
        scan enough for ordering by creation time.
        """
        deleted = sessions.c.deleted_at
        conditions: list[ColumnElement[bool]] = [
            sessions.c.company_id == company_id,
            deleted.is_not(None) if criteria.deleted else deleted.is_(None),
        ]
        if criteria.state is not None:
            conditions.append(sessions.c.state == criteria.state.value)
        if criteria.pool_id is not None:
            conditions.append(sessions.c.pool_id == criteria.pool_id)
        if criteria.provider is not None:
            conditions.append(sessions.c.provider == criteria.provider.value)
        page = await keyset_page(
            self.db,
            select(*_VIEW_COLUMNS).where(*conditions),
            order_by=(sessions.c.created_at, sessions.c.id),
            cursor=cursor,
            limit=limit,
        )
        names = [column.name for column in _VIEW_COLUMNS]
        items = [_view_of(dict(zip(names, item, strict=True))) for item in page.items]
        return SessionPage(items, page.next_cursor)

    async def metrics(self, session_id: str) -> tuple[dict[str, Any], datetime | None]:
        """The figures the owning worker last flushed, and when (None: never)."""
        row = (
            await self.db.execute(
                select(sessions.c.metrics, sessions.c.metrics_at).where(sessions.c.id == session_id)
            )
        ).one()
        return dict(row.metrics), row.metrics_at

    async def lock_provider_number(self, provider_number_id: str) -> None:
        """Serialize, until the transaction ends, the writers that give a session
        ``provider_number_id``: no unique index keeps it to one live session, so each takes
        this lock before it looks for a live holder."""
        key = func.hashtextextended(f"whatsapp.provider_number:{provider_number_id}", 0)
        await self.db.execute(select(func.pg_advisory_xact_lock(key)))


@dataclass(frozen=True)
class LedgerPage:
    items: list[LedgerEntry]
    next_cursor: str | None


def entry_from_row(row: Mapping[Any, Any]) -> LedgerEntry:
    error = (
        ProviderError(code=row["error_code"], title=row["error_title"], detail=row["error_detail"])
        if row["error_code"]
        else None
    )
    return LedgerEntry(
        message_id=row["message_id"],
        company_id=row["company_id"],
        session_id=str(row["session_id"]),
        to_phone_e164=row["to_phone_e164"],
        command=row["command"],
        priority=Priority(row["priority"]),
        status=MessageStatus[row["status"].upper()],
        queued_at=row["queued_at"],
        updated_at=row["updated_at"],
        origin=Origin(row["origin_kind"], row["origin_id"], row["origin_item_id"]),
        pool_id=row["pool_id"],
        provider_message_id=row["provider_message_id"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        not_after=row["not_after"],
        sending_since=row["sending_since"],
        error=error,
        seq=row["seq"],
    )


def _entry_values(entry: LedgerEntry) -> dict[str, Any]:
    error = entry.error
    return {
        "status": entry.status.name.lower(),
        "provider_message_id": entry.provider_message_id,
        "attempts": entry.attempts,
        "next_attempt_at": entry.next_attempt_at,
        "sending_since": entry.sending_since,
        "error_code": error.code if error else "",
        "error_title": error.title if error else "",
        "error_detail": error.detail if error else "",
        "updated_at": entry.updated_at,
    }


class LedgerRepository:
    """The ``messages`` table: the send ledger."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, entry: LedgerEntry) -> bool:
        """Insert ``entry`` unless its message id is known; whether it was new."""
        return bool(await self.add_many([entry]))

    async def add_many(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """Insert the entries whose message id is not known yet, in one statement; the
        message ids inserted (their ``seq`` is set)."""
        if not entries:
            return set()
        rows = [
            {
                "message_id": entry.message_id,
                "company_id": entry.company_id,
                "session_id": entry.session_id,
                "pool_id": entry.pool_id,
                "to_phone_e164": entry.to_phone_e164,
                "command": entry.command,
                "priority": int(entry.priority),
                "not_after": entry.not_after,
                "origin_kind": entry.origin.kind,
                "origin_id": entry.origin.id,
                "origin_item_id": entry.origin.item_id,
                "queued_at": entry.queued_at,
                **_entry_values(entry),
            }
            for entry in entries
        ]
        result = await self.db.execute(
            insert(messages)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[messages.c.message_id])
            .returning(messages.c.message_id, messages.c.seq)
        )
        seqs = dict(result.tuples().all())
        for entry in entries:
            if entry.message_id in seqs:
                entry.seq = seqs[entry.message_id]
        return set(seqs)

    async def get(
        self, message_id: str, *, company_id: str | None = None, lock: bool = False
    ) -> LedgerEntry | None:
        query = select(messages).where(messages.c.message_id == message_id)
        if company_id is not None:
            query = query.where(messages.c.company_id == company_id)
        if lock:
            query = query.with_for_update()
        row = (await self.db.execute(query)).mappings().first()
        return entry_from_row(row) if row is not None else None

    async def by_provider_id(
        self, session_id: str, provider_message_id: str, *, lock: bool = False
    ) -> LedgerEntry | None:
        query = select(messages).where(
            messages.c.session_id == session_id,
            messages.c.provider_message_id == provider_message_id,
        )
        if lock:
            query = query.with_for_update()
        row = (await self.db.execute(query)).mappings().first()
        return entry_from_row(row) if row is not None else None

    async def get_many(
        self, message_ids: Sequence[str], *, in_flight_only: bool = False
    ) -> dict[str, LedgerEntry]:
        """The entries of ``message_ids`` that exist (only those in flight, if asked),
        locked until the transaction ends, by message id."""
        if not message_ids:
            return {}
        query = select(messages).where(messages.c.message_id.in_(message_ids))
        if in_flight_only:
            query = query.where(messages.c.sending_since.is_not(None))
        rows = await self.db.execute(query.order_by(messages.c.seq).with_for_update())
        return {row["message_id"]: entry_from_row(row) for row in rows.mappings()}

    async def save(self, entry: LedgerEntry) -> None:
        await self.save_many([entry])

    async def save_many(self, entries: Sequence[LedgerEntry]) -> None:
        """Write the changing fields of ``entries`` (one pipelined statement)."""
        if not entries:
            return
        await self.db.execute(
            update(messages).where(messages.c.message_id == bindparam("key")),
            [{"key": entry.message_id, **_entry_values(entry)} for entry in entries],
        )

    async def claim(self, session_id: str, now: datetime, limit: int) -> list[LedgerEntry]:
        """Take up to ``limit`` entries of the session that are due, interactive first,
        then in arrival order, and mark them in flight (``sending_since = now``).

        ``SKIP LOCKED`` keeps a second claimer (an old owner still winding down) from
        taking the same rows; a claimed row is not queued-and-idle any more, so no one
        claims it twice.
        """
        due = (
            select(messages.c.message_id)
            .where(
                messages.c.session_id == session_id,
                messages.c.status == "queued",
                messages.c.sending_since.is_(None),
                or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now),
            )
            .order_by(messages.c.priority, messages.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self.db.execute(
            update(messages)
            .where(messages.c.message_id.in_(due))
            .values(sending_since=now, updated_at=now)
            .returning(*messages.c)
        )
        claimed = [entry_from_row(row) for row in rows.mappings()]
        claimed.sort(key=lambda entry: (entry.priority, entry.seq))
        return claimed

    async def next_due_at(self, session_id: str) -> datetime | None:
        """When the session's earliest waiting retry falls due (None: nothing waits)."""
        result = await self.db.execute(
            select(func.min(messages.c.next_attempt_at)).where(
                messages.c.session_id == session_id,
                messages.c.status == "queued",
                messages.c.sending_since.is_(None),
            )
        )
        value: datetime | None = result.scalar_one_or_none()
        return value

    async def sessions_with_due(self, session_ids: Sequence[str], now: datetime) -> set[str]:
        """Which of ``session_ids`` have an entry they could claim now."""
        if not session_ids:
            return set()
        rows = await self.db.execute(
            select(messages.c.session_id)
            .where(
                among(messages.c.session_id, session_ids),
                messages.c.status == "queued",
                messages.c.sending_since.is_(None),
                or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now),
            )
            .distinct()
        )
        return {str(session_id) for (session_id,) in rows}

    async def in_flight(self, session_ids: Sequence[str]) -> list[LedgerEntry]:
        """Entries claimed and never resolved (a crash), locked for the caller to resolve."""
        if not session_ids:
            return []
        rows = await self.db.execute(
            select(messages)
            .where(among(messages.c.session_id, session_ids), messages.c.sending_since.is_not(None))
            .with_for_update()
        )
        return [entry_from_row(row) for row in rows.mappings()]

    async def queued_count(self, session_ids: Sequence[str], priority: Priority) -> int:
        if not session_ids:
            return 0
        result = await self.db.execute(
            select(func.count()).where(
                among(messages.c.session_id, session_ids),
                messages.c.status == "queued",
                messages.c.priority == int(priority),
            )
        )
        return int(result.scalar_one())

    async def queued_by_session(self, session_ids: Sequence[str]) -> dict[str, int]:
        if not session_ids:
            return {}
        rows = await self.db.execute(
            select(messages.c.session_id, func.count())
            .where(among(messages.c.session_id, session_ids), messages.c.status == "queued")
            .group_by(messages.c.session_id)
        )
        return {str(session_id): int(count) for session_id, count in rows.tuples()}

    async def status_counts(self, company_id: str, session_id: str | None) -> dict[str, int]:
        query = select(messages.c.status, func.count()).where(messages.c.company_id == company_id)
        if session_id is not None:
            query = query.where(messages.c.session_id == session_id)
        rows = await self.db.execute(query.group_by(messages.c.status))
        return {status: int(count) for status, count in rows.tuples()}

    async def expire_due(self, session_id: str, now: datetime) -> list[LedgerEntry]:
        """Queued, idle entries of the session past their ``not_after``, locked."""
        rows = await self.db.execute(
            select(messages)
            .where(
                and_(
                    messages.c.session_id == session_id,
                    messages.c.status == "queued",
                    messages.c.sending_since.is_(None),
                    messages.c.not_after < now,
                )
            )
            .with_for_update(skip_locked=True)
        )
        return [entry_from_row(row) for row in rows.mappings()]

    async def page(
        self,
        company_id: str,
        *,
        session_id: str | None,
        status: MessageStatus | None,
        cursor: str | None,
        limit: int,
    ) -> LedgerPage:
        """One page of the company's entries (of ``session_id``, in ``status``, when
        given), in arrival order: ``ix_messages_company_id_seq`` serves the walk."""
        statement = select(messages).where(messages.c.company_id == company_id)
        if session_id is not None:
            statement = statement.where(messages.c.session_id == session_id)
        if status is not None:
            statement = statement.where(messages.c.status == status.name.lower())
        page = await keyset_page(
            self.db, statement, order_by=(messages.c.seq,), cursor=cursor, limit=limit
        )
        names = messages.columns.keys()
        entries = [entry_from_row(dict(zip(names, item, strict=True))) for item in page.items]
        return LedgerPage(entries, page.next_cursor)


class InboundRepository:
    """The ``inbound_messages`` table: provider message ids already published."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def remember(
        self, session_id: str, provider_message_id: str, company_id: str, now: datetime
    ) -> bool:
        """Record the message; False when it was already recorded (a redelivery)."""
        result = await self.db.execute(
            insert(inbound_messages)
            .values(
                session_id=session_id,
                provider_message_id=provider_message_id,
                company_id=company_id,
                received_at=now,
            )
            .on_conflict_do_nothing()
            .returning(inbound_messages.c.session_id)
        )
        return result.first() is not None
