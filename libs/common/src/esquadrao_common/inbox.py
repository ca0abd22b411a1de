"""The inbox: which events a consumer group has already handled (idempotent consumers).

Delivery from Kafka is at least once. A consumer claims a record's ``event_id`` for its
group in the same transaction as the record's effects: the first claim inserts a row, a
redelivery finds it and the handler is skipped. Because the claim and the effects commit
or roll back together, "handled" and "recorded as handled" can never disagree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from esquadrao_common.platform_tables import processed_events

#: Plain SQL, so the statement is compiled once and cached (SQLAlchemy cannot cache the
#: ``ON CONFLICT`` construct), on the hot path of every consumed record.
_CLAIM = text(
    "INSERT INTO processed_events (consumer_group, event_id) "
    "VALUES (:consumer_group, :event_id) ON CONFLICT DO NOTHING RETURNING event_id"
)

#: Many claims in one statement (one round trip). The ids are sorted so that two
#: transactions claiming overlapping sets lock the inbox's index entries in the same order.
_CLAIM_MANY = text(
    "INSERT INTO processed_events (consumer_group, event_id) "
    "SELECT :consumer_group, event_id FROM unnest(CAST(:event_ids AS uuid[])) AS event_id "
    "ORDER BY event_id ON CONFLICT DO NOTHING RETURNING CAST(event_id AS text)"
)


async def claim(session: AsyncSession, consumer_group: str, event_id: str) -> bool:
    """Record ``event_id`` as handled by ``consumer_group`` in the session's transaction.

    Returns True the first time (the caller applies the effects in the same transaction),
    False when the event was handled before (the caller does nothing). A concurrent claim
    of the same event by another transaction waits for it and then returns False.
    """
    parameters = {"consumer_group": consumer_group, "event_id": event_id}
    return (await session.execute(_CLAIM, parameters)).first() is not None


async def claim_many(
    session: AsyncSession, consumer_group: str, event_ids: Iterable[str]
) -> set[str]:
    """Record every one of ``event_ids`` as handled by ``consumer_group``, in one statement.

    Returns those claimed now, spelled as given: the first time for each (the caller applies
    their effects in the same transaction). The others were handled before, or are claimed
    by a concurrent transaction, which this one waits for. An id given twice is claimed
    once. Event ids are UUIDs (the envelope's ``event_id``); any spelling of one is the
    same event.
    """
    spelled = {str(uuid.UUID(event_id)): event_id for event_id in event_ids}
    if not spelled:
        return set()
    parameters = {"consumer_group": consumer_group, "event_ids": list(spelled)}
    rows = await session.execute(_CLAIM_MANY, parameters)
    return {spelled[event_id] for (event_id,) in rows}


async def was_processed(session: AsyncSession, consumer_group: str, event_id: str) -> bool:
    """Whether ``consumer_group`` has handled ``event_id`` (for tests and tools)."""
    statement = select(processed_events.c.event_id).where(
        processed_events.c.consumer_group == consumer_group,
        processed_events.c.event_id == event_id,
    )
    return (await session.execute(statement)).first() is not None


async def forget_older_than(session: AsyncSession, age: timedelta) -> int:
    """Delete claims older than ``age``; returns how many.

    Keep ``age`` well above the topics' retention: a record older than its topic's
    retention can no longer be redelivered, so its claim is no longer needed.
    """
    statement = delete(processed_events).where(processed_events.c.processed_at < func.now() - age)
    result = await session.execute(statement)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
