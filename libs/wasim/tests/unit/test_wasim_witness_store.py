"""The witness database: committed before ``run`` returns, counted exactly, kept on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from esquadrao_wasim import store

pytestmark = pytest.mark.unit


def _row(message_id: str, provider_id: str, sender: str = "n1") -> store.AcceptedRow:
    return store.AcceptedRow(message_id, provider_id, "cloud", sender, "5511900000000", "text", 1.0)


async def test_an_operation_is_committed_when_run_returns(tmp_path: Path) -> None:
    database = store.Database(tmp_path / store.DATABASE_FILE)
    await database.open()
    try:
        await database.run(store.insert_accepted(_row("m1", "p1")))

        other = sqlite3.connect(tmp_path / store.DATABASE_FILE)
        try:
            count = other.execute("SELECT count(*) FROM accepted").fetchone()[0]
        finally:
            other.close()
        assert count == 1
    finally:
        await database.close()


async def test_concurrent_operations_are_all_committed_and_counted(tmp_path: Path) -> None:
    database = store.Database(tmp_path / store.DATABASE_FILE)
    await database.open()
    try:
        await asyncio.gather(
            *(database.run(store.insert_accepted(_row(f"m{n}", f"p{n}"))) for n in range(2000))
        )
        stats = await database.run(store.witness_stats)
    finally:
        await database.close()

    assert stats["accepted_total"] == 2000
    assert stats["distinct_message_ids"] == 2000
    assert stats["duplicate_acceptances"] == 0


async def test_duplicates_are_message_ids_accepted_more_than_once(tmp_path: Path) -> None:
    database = store.Database(tmp_path / store.DATABASE_FILE)
    await database.open()
    try:
        for n, message_id in enumerate(["a", "b", "a", "c", "a", "b", ""]):
            await database.run(store.insert_accepted(_row(message_id, f"p{n}")))
        stats = await database.run(store.witness_stats)
        history = await database.run(store.message_history("a"))
    finally:
        await database.close()

    assert stats["accepted_total"] == 7
    assert stats["accepted_without_message_id"] == 1
    assert stats["distinct_message_ids"] == 3
    assert stats["duplicated_message_ids"] == 2
    assert stats["duplicate_acceptances"] == 3
    assert stats["duplicates"] == {"a": 3, "b": 2}
    assert history["accepted_count"] == 3
    assert [item["provider_message_id"] for item in history["accepted"]] == ["p0", "p2", "p4"]


async def test_a_failing_operation_leaves_the_others_of_its_batch_committed(
    tmp_path: Path,
) -> None:
    database = store.Database(tmp_path / store.DATABASE_FILE)
    await database.open()
    try:
        outcomes = await asyncio.gather(
            database.run(store.insert_accepted(_row("m1", "same"))),
            database.run(store.insert_accepted(_row("m2", "same"))),
            database.run(store.insert_accepted(_row("m3", "other"))),
            return_exceptions=True,
        )
        stats = await database.run(store.witness_stats)
    finally:
        await database.close()

    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert stats["accepted_total"] == 2


async def test_records_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / store.DATABASE_FILE
    database = store.Database(path)
    await database.open()
    await database.run(store.insert_accepted(_row("m1", "p1", sender="n9")))
    await database.run(store.save_session(store.SessionRow("s1", "+5511900000001", "c", None)))
    await database.close()

    reopened = store.Database(path)
    await reopened.open()
    try:
        stats = await reopened.run(store.witness_stats)
        sessions = await reopened.run(store.load_sessions)
    finally:
        await reopened.close()

    assert stats["accepted_by_number"] == {"n9": 1}
    assert sessions == [store.SessionRow("s1", "+5511900000001", "c", None)]
