"""The simulator's durable state: the witness records, registrations, sessions and knobs.

One SQLite database (``<data_dir>/wasim.sqlite3``, WAL mode) owned by one thread. Every
operation is a function of the connection, queued to that thread and run in order; the
thread runs whatever is queued as one transaction (group commit) and only then resolves
the callers' futures. So an operation's effects are committed when its ``await`` returns
— an accepted send is on disk before the simulator answers it — and a read sees every
operation queued before it.

``synchronous=NORMAL`` in WAL mode keeps every commit through a crash of the process (the
simulator's or anyone's); only a crash of the machine may lose the last commits.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DATABASE_FILE = "wasim.sqlite3"
#: Operations run in one transaction at most; more wait for the next one.
MAX_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    provider_message_id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    accepted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_by_message_id ON accepted (message_id);
CREATE INDEX IF NOT EXISTS accepted_by_sender ON accepted (channel, sender, seq);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    code INTEGER NOT NULL,
    rejected_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rejected_by_message_id ON rejected (message_id);
CREATE TABLE IF NOT EXISTS numbers (
    phone_number_id TEXT PRIMARY KEY,
    registration TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    phone_e164 TEXT NOT NULL,
    credentials TEXT,
    banned_reason TEXT
);
CREATE TABLE IF NOT EXISTS knobs (
    scope TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: Duplicated message ids listed by :func:`stats` (all of them are counted).
DUPLICATES_LISTED = 100


class _Operation:
    __slots__ = ("function", "future", "loop")

    def __init__(
        self,
        function: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.function = function
        self.future = future
        self.loop = loop


def _resolve(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Database:
    """A SQLite database run by a thread of its own, with group commit (see module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        """Open (creating the file and schema if needed) and start the thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready, asyncio.get_running_loop()), daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        """Run what is queued, commit, and stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function`` in the database thread; return once it is committed."""
        if self._thread is None:
            raise RuntimeError("the database is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Operation(function, future, loop))
        return await future

    def run_soon(self, function: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``function`` without waiting for it; later operations still see it."""
        if self._thread is None:
            raise RuntimeError("the database is not open")
        self._queue.put(_Operation(function, None, asyncio.get_running_loop()))

    def _run(self, ready: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException as error:
            loop.call_soon_threadsafe(ready.set_exception, error)
            return
        loop.call_soon_threadsafe(ready.set_result, None)
        try:
            stopping = False
            while not stopping:
                batch: list[_Operation] = []
                item = self._queue.get()
                while item is not None:
                    batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                stopping = item is None
                if batch:
                    self._run_batch(connection, batch)
        finally:
            connection.close()

    @staticmethod
    def _run_batch(connection: sqlite3.Connection, batch: list[_Operation]) -> None:
        outcomes: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        outcomes = {}
        connection.execute("BEGIN")
        results: list[tuple[_Operation, bool, Any]] = []
        for operation in batch:
            connection.execute("SAVEPOINT operation")
            try:
                value = operation.function(connection)
            except Exception as error:
                connection.execute("ROLLBACK TO operation")
                results.append((operation, False, error))
            else:
                results.append((operation, True, value))
            connection.execute("RELEASE operation")
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            connection.execute("ROLLBACK")
            results = [(operation, False, error) for operation, _ok, _value in results]
        for operation, ok, value in results:
            if operation.future is not None:
                outcomes.setdefault(operation.loop, []).append((operation.future, ok, value))
        for loop, resolved in outcomes.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, resolved)


@dataclass(frozen=True)
class AcceptedRow:
    """One acceptance of a message by the simulated WhatsApp."""

    message_id: str
    provider_message_id: str
    channel: str
    sender: str
    recipient: str
    kind: str
    accepted_at: float


@dataclass(frozen=True)
class RejectedRow:
    """One send the simulated WhatsApp refused, with the error code it answered."""

    message_id: str
    channel: str
    sender: str
    recipient: str
    code: int
    rejected_at: float


def insert_accepted(row: AcceptedRow) -> Callable[[sqlite3.Connection], int]:
    def insert(connection: sqlite3.Connection) -> int:
        cursor = connection.execute(
            "INSERT INTO accepted (message_id, provider_message_id, channel, sender, recipient,"
            " kind, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.message_id,
                row.provider_message_id,
                row.channel,
                row.sender,
                row.recipient,
                row.kind,
                row.accepted_at,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    return insert


def insert_rejected(row: RejectedRow) -> Callable[[sqlite3.Connection], None]:
    def insert(connection: sqlite3.Connection) -> None:
        connection.execute(
            "INSERT INTO rejected (message_id, channel, sender, recipient, code, rejected_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (row.message_id, row.channel, row.sender, row.recipient, row.code, row.rejected_at),
        )

    return insert


def _accepted_dict(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    seq, message_id, provider_id, channel, sender, recipient, kind, accepted_at = row
    return {
        "seq": seq,
        "message_id": message_id,
        "provider_message_id": provider_id,
        "channel": channel,
        "sender": sender,
        "recipient": recipient,
        "kind": kind,
        "accepted_at": accepted_at,
    }


_ACCEPTED_COLUMNS = (
    "seq, message_id, provider_message_id, channel, sender, recipient, kind, accepted_at"
)


def message_history(message_id: str) -> Callable[[sqlite3.Connection], dict[str, Any]]:
    """Every acceptance and rejection of ``message_id``, oldest first."""

    def read(connection: sqlite3.Connection) -> dict[str, Any]:
        accepted = [
            _accepted_dict(row)
            for row in connection.execute(
                f"SELECT {_ACCEPTED_COLUMNS} FROM accepted WHERE message_id = ? ORDER BY seq",
                (message_id,),
            )
        ]
        rejected = [
            {"code": code, "channel": channel, "sender": sender, "rejected_at": at}
            for code, channel, sender, at in connection.execute(
                "SELECT code, channel, sender, rejected_at FROM rejected WHERE message_id = ?"
                " ORDER BY seq",
                (message_id,),
            )
        ]
        return {
            "message_id": message_id,
            "accepted_count": len(accepted),
            "accepted": accepted,
            "rejected": rejected,
        }

    return read


def list_accepted(
    *, channel: str | None, sender: str | None, after: int, limit: int
) -> Callable[[sqlite3.Connection], list[dict[str, Any]]]:
    """Accepted messages with ``seq > after`` in order, optionally of one sender."""

    def read(connection: sqlite3.Connection) -> list[dict[str, Any]]:
        where: list[str] = ["seq > ?"]
        parameters: list[str | int] = [after]
        if channel is not None and sender is not None:
            where.append("channel = ? AND sender = ?")
            parameters += [channel, sender]
        rows = connection.execute(
            f"SELECT {_ACCEPTED_COLUMNS} FROM accepted WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            (*parameters, limit),
        )
        return [_accepted_dict(row) for row in rows]

    return read


def witness_stats(connection: sqlite3.Connection) -> dict[str, Any]:
    """Counts of what was accepted and rejected (see the control API's ``/_sim/stats``)."""
    accepted_total = connection.execute("SELECT count(*) FROM accepted").fetchone()[0]
    by_sender: dict[str, dict[str, int]] = {"cloud": {}, "session": {}}
    for channel, sender, count in connection.execute(
        "SELECT channel, sender, count(*) FROM accepted GROUP BY channel, sender"
    ):
        by_sender.setdefault(channel, {})[sender] = count
    distinct = connection.execute(
        "SELECT count(DISTINCT message_id) FROM accepted WHERE message_id != ''"
    ).fetchone()[0]
    without_id = connection.execute(
        "SELECT count(*) FROM accepted WHERE message_id = ''"
    ).fetchone()[0]
    duplicated = connection.execute(
        "SELECT count(*), coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM accepted"
        " WHERE message_id != '' GROUP BY message_id HAVING n > 1)"
    ).fetchone()
    listed = {
        message_id: count
        for message_id, count in connection.execute(
            "SELECT message_id, count(*) AS n FROM accepted WHERE message_id != ''"
            " GROUP BY message_id HAVING n > 1 ORDER BY min(seq) LIMIT ?",
            (DUPLICATES_LISTED,),
        )
    }
    rejected = {
        str(code): count
        for code, count in connection.execute(
            "SELECT code, count(*) FROM rejected GROUP BY code ORDER BY code"
        )
    }
    return {
        "accepted_total": accepted_total,
        "distinct_message_ids": distinct,
        "accepted_without_message_id": without_id,
        "duplicated_message_ids": duplicated[0],
        "duplicate_acceptances": duplicated[1],
        "duplicates": listed,
        "accepted_by_number": by_sender["cloud"],
        "accepted_by_session": by_sender["session"],
        "rejected_total": sum(rejected.values()),
        "rejected_by_code": rejected,
    }


def clear_traffic(connection: sqlite3.Connection) -> None:
    """Forget every accepted and rejected message."""
    connection.execute("DELETE FROM accepted")
    connection.execute("DELETE FROM rejected")


def clear_everything(connection: sqlite3.Connection) -> None:
    """Forget traffic, registered numbers, sessions and knobs."""
    clear_traffic(connection)
    for table in ("numbers", "sessions", "knobs"):
        connection.execute(f"DELETE FROM {table}")


def save_number(
    phone_number_id: str, registration: dict[str, Any]
) -> Callable[[sqlite3.Connection], None]:
    def save(connection: sqlite3.Connection) -> None:
        connection.execute(
            "INSERT INTO numbers (phone_number_id, registration) VALUES (?, ?)"
            " ON CONFLICT (phone_number_id) DO UPDATE SET registration = excluded.registration",
            (phone_number_id, json.dumps(registration)),
        )

    return save


def delete_number(phone_number_id: str) -> Callable[[sqlite3.Connection], None]:
    def delete(connection: sqlite3.Connection) -> None:
        connection.execute("DELETE FROM numbers WHERE phone_number_id = ?", (phone_number_id,))

    return delete


def load_numbers(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        json.loads(registration)
        for (registration,) in connection.execute("SELECT registration FROM numbers")
    ]


@dataclass(frozen=True)
class SessionRow:
    """What outlives a session's connections: its number, credentials and ban."""

    session_id: str
    phone_e164: str
    credentials: str | None
    banned_reason: str | None


def save_session(row: SessionRow) -> Callable[[sqlite3.Connection], None]:
    def save(connection: sqlite3.Connection) -> None:
        connection.execute(
            "INSERT INTO sessions (session_id, phone_e164, credentials, banned_reason)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
            " phone_e164 = excluded.phone_e164, credentials = excluded.credentials,"
            " banned_reason = excluded.banned_reason",
            (row.session_id, row.phone_e164, row.credentials, row.banned_reason),
        )

    return save


def load_sessions(connection: sqlite3.Connection) -> list[SessionRow]:
    return [
        SessionRow(*row)
        for row in connection.execute(
            "SELECT session_id, phone_e164, credentials, banned_reason FROM sessions"
        )
    ]


def save_knobs(scope: str, value: dict[str, Any] | None) -> Callable[[sqlite3.Connection], None]:
    """Store the knobs of ``scope`` (``global``, ``number:<id>``, ``session:<id>``);
    ``None`` removes them."""

    def save(connection: sqlite3.Connection) -> None:
        if value is None:
            connection.execute("DELETE FROM knobs WHERE scope = ?", (scope,))
            return
        connection.execute(
            "INSERT INTO knobs (scope, value) VALUES (?, ?)"
            " ON CONFLICT (scope) DO UPDATE SET value = excluded.value",
            (scope, json.dumps(value)),
        )

    return save


def load_knobs(connection: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    return {
        scope: json.loads(value)
        for scope, value in connection.execute("SELECT scope, value FROM knobs")
    }
