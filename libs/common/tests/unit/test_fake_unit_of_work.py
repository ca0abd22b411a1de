"""The fake unit of work behaves like the real one where handlers can tell."""

from __future__ import annotations

import pytest
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.testing import FakeUnitOfWork

pytestmark = pytest.mark.unit


async def test_events_are_kept_only_when_the_unit_commits() -> None:
    uow = FakeUnitOfWork()
    async with uow:
        uow.stage("t", "k1", ContactEvent())
        await uow.commit()
    async with uow:
        uow.stage("t", "k2", ContactEvent())
    assert [key for _topic, key, _event in uow.events] == ["k1"]
    assert (uow.committed, uow.rolled_back) == (1, 1)


async def test_a_failed_savepoint_discards_only_its_own_events() -> None:
    uow = FakeUnitOfWork()
    async with uow:
        uow.stage("t", "before", ContactEvent())
        with pytest.raises(RuntimeError):
            async with uow.savepoint():
                uow.stage("t", "inside-failed", ContactEvent())
                raise RuntimeError("handler failed")
        async with uow.savepoint():
            uow.stage("t", "inside-ok", ContactEvent())
        await uow.commit()
    assert [key for _topic, key, _event in uow.events] == ["before", "inside-ok"]
