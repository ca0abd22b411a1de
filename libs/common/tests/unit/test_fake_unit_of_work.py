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


async def test_after_commit_callbacks_run_in_order_at_commit_only() -> None:
    calls: list[str] = []
    uow = FakeUnitOfWork()
    async with uow:
        uow.after_commit(lambda: calls.append("first"))
        uow.after_commit(lambda: calls.append("second"))
        assert calls == []
        await uow.commit()
    assert calls == ["first", "second"]
    async with uow:
        uow.after_commit(lambda: calls.append("not committed"))
    async with uow:
        uow.after_commit(lambda: calls.append("rolled back"))
        await uow.rollback()
        await uow.commit()
    assert calls == ["first", "second"]
    assert (uow.committed, uow.rolled_back) == (2, 2)


async def test_after_commit_callbacks_of_a_failed_savepoint_are_dropped() -> None:
    calls: list[str] = []
    uow = FakeUnitOfWork()
    async with uow:
        uow.after_commit(lambda: calls.append("before"))
        with pytest.raises(RuntimeError):
            async with uow.savepoint():
                uow.after_commit(lambda: calls.append("inside-failed"))
                raise RuntimeError("handler failed")
        async with uow.savepoint():
            uow.after_commit(lambda: calls.append("inside-ok"))
        await uow.commit()
    assert calls == ["before", "inside-ok"]


async def test_a_failing_after_commit_callback_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("wake-up failed")

    uow = FakeUnitOfWork()
    async with uow:
        uow.after_commit(broken)
        uow.after_commit(lambda: calls.append("after the broken one"))
        await uow.commit()
    assert calls == ["after the broken one"]
    assert uow.committed == 1
    assert any("after-commit callback failed" in r.getMessage() for r in caplog.records)
