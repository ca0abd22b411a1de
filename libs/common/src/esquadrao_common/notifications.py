"""Wake-ups from Postgres ``LISTEN``/``NOTIFY``, for loops that also poll.

Background loops (the outbox relay, job runners) poll their tables on a timer and, to
react at once, listen on a channel that committing writers ``NOTIFY``. The listening
connection may drop at any time; :func:`listen_until` keeps one open, reconnecting with
jittered backoff, and sets ``wake`` on every notification and after every (re)connection
(work may have been committed while no one listened). The poll covers the gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from esquadrao_common.db import plain_url
from esquadrao_common.resilience.backoff import full_jitter

log = logging.getLogger(__name__)


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stopping`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def listen_until(
    database_url: str,
    channel: str,
    wake: asyncio.Event,
    stopping: asyncio.Event,
    *,
    max_backoff: float = 10.0,
) -> None:
    """Listen on ``channel`` of ``database_url``, setting ``wake``, until ``stopping``."""
    attempt = 0
    while not stopping.is_set():
        try:
            connection = await asyncpg.connect(plain_url(database_url))
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("cannot listen on %s: %s", channel, error)
            attempt += 1
            await sleep_unless(stopping, full_jitter(attempt, 0.5, max_backoff))
            continue
        attempt = 0
        dropped = asyncio.Event()
        connection.add_termination_listener(lambda _connection, lost=dropped: lost.set())
        try:
            await connection.add_listener(channel, lambda *_args: wake.set())
            wake.set()
            stop = asyncio.ensure_future(stopping.wait())
            lost = asyncio.ensure_future(dropped.wait())
            try:
                await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                lost.cancel()
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
