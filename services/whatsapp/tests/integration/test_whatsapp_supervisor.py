"""The session supervisor on a real database: sessions taken over when their partitions
are assigned, held (connection kept, nothing sent) when revoked, released when the
rebalance gives them back, stopped when it does not or when another worker took them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import TopicPartition
from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.sessions import Session, SessionState
from whatsapp.entrypoints.sender import SessionSupervisor, partition_of
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

if TYPE_CHECKING:
    from conftest import MakeSession

pytestmark = pytest.mark.integration

UowFactory = Callable[[], WhatsappUnitOfWork]
PARTITIONS = 4
COMPANY = "co-supervisor"
ME = "worker-a"


@dataclass
class RecordingDriver:
    """Stands in for a session driver: records what the supervisor asks of it."""

    session: Session
    calls: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def done(self) -> bool:
        return "stop" in self.calls

    def start(self) -> None:
        self.calls.append("start")

    async def hold(self) -> None:
        self.calls.append("hold")

    def release(self) -> None:
        self.calls.append("release")

    async def stop(self) -> None:
        self.calls.append("stop")

    def wake(self) -> None:
        self.calls.append("wake")


def topic_partitions(*numbers: int) -> frozenset[TopicPartition]:
    return frozenset(
        TopicPartition(topic, number)
        for topic in (INTERACTIVE_TOPIC, BULK_TOPIC)
        for number in numbers
    )


@pytest.fixture
async def sessions_by_partition(make_session: MakeSession) -> dict[int, Session]:
    """One live session in each partition (created until every partition has one)."""
    found: dict[int, Session] = {}
    while len(found) < PARTITIONS:
        session = await make_session(COMPANY, state=SessionState.CONNECTED, desired_running=True)
        found.setdefault(partition_of(session.id, PARTITIONS), session)
    return found


def supervisor_on(uow_factory: UowFactory, **options: Any) -> SessionSupervisor:
    made: list[RecordingDriver] = []

    def make_driver(session: Session) -> Any:
        driver = RecordingDriver(session)
        made.append(driver)
        return driver

    supervisor = SessionSupervisor(
        owner=ME,
        uow=uow_factory,
        make_driver=make_driver,
        partitions=PARTITIONS,
        clock=lambda: datetime.now(UTC),
        **options,
    )
    supervisor.made = made  # type: ignore[attr-defined]
    return supervisor


async def owner_of(uow_factory: UowFactory, session_id: str) -> str:
    async with uow_factory() as uow:
        return (await uow.sessions.owners([session_id]))[session_id]


async def test_a_rebalance_that_gives_partitions_back_keeps_their_drivers(
    uow_factory: UowFactory, sessions_by_partition: dict[int, Session]
) -> None:
    supervisor = supervisor_on(uow_factory)
    mine = {sessions_by_partition[p].id for p in (0, 1, 2)}
    await supervisor.assigned(topic_partitions(0, 1, 2))
    first = dict(supervisor.drivers)
    assert mine <= set(first)
    async with uow_factory() as uow:
        assert set((await uow.sessions.owners(sorted(mine))).values()) == {ME}

    await supervisor.revoked(topic_partitions(0, 1, 2))
    assert not supervisor.drivers
    assert all(driver.calls[-1] == "hold" for driver in first.values())  # type: ignore[attr-defined]

    await supervisor.assigned(topic_partitions(0, 1))
    kept = {sessions_by_partition[p].id for p in (0, 1)}
    lost = sessions_by_partition[2].id
    for session_id in kept:
        assert supervisor.drivers[session_id] is first[session_id], "the same driver, not anew"
        assert first[session_id].calls == ["start", "hold", "release"]  # type: ignore[attr-defined]
    assert first[lost].calls == ["start", "hold", "stop"]  # type: ignore[attr-defined]
    assert lost not in supervisor.drivers
    assert not supervisor.held
    await supervisor.stop()


async def test_a_session_another_worker_took_meanwhile_is_not_released(
    uow_factory: UowFactory, sessions_by_partition: dict[int, Session]
) -> None:
    supervisor = supervisor_on(uow_factory)
    session = sessions_by_partition[3]
    await supervisor.assigned(topic_partitions(3))
    before = supervisor.drivers[session.id]
    await supervisor.revoked(topic_partitions(3))
    async with uow_factory() as uow:
        await uow.sessions.set_owner([session.id], "worker-b")
        await uow.commit()

    await supervisor.assigned(topic_partitions(3))

    assert before.calls == ["start", "hold", "stop"]  # type: ignore[attr-defined]
    again = supervisor.drivers[session.id]
    assert again is not before, "taken over afresh"
    assert again.calls == ["start"]  # type: ignore[attr-defined]
    assert await owner_of(uow_factory, session.id) == ME
    await supervisor.stop()


async def test_held_drivers_are_stopped_when_no_assignment_follows(
    uow_factory: UowFactory, sessions_by_partition: dict[int, Session]
) -> None:
    supervisor = supervisor_on(uow_factory, hold_s=0.05)
    await supervisor.assigned(topic_partitions(0))
    driver = supervisor.drivers[sessions_by_partition[0].id]

    await supervisor.revoked(topic_partitions(0))
    await asyncio.sleep(0.3)

    assert driver.calls == ["start", "hold", "stop"]  # type: ignore[attr-defined]
    assert not supervisor.held
    await supervisor.stop()
