"""The simulator's parts put together, and its ASGI application.

:class:`SimulatorRuntime` owns the simulator, its two channels (webhooks for Cloud API
numbers, the session hub) and the lock on the data directory, so two simulators never
count into one database. Its ASGI app sends WebSocket connections under
``/sim/v1/sessions/`` straight to the session hub (plain ASGI: no framework per idle
connection) and everything else to FastAPI (Cloud API and ``/_sim`` control API).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from fastapi import FastAPI

from esquadrao_wasim.cloud import cloud_router
from esquadrao_wasim.control import control_router
from esquadrao_wasim.sessions import SESSIONS_PATH, Receive, Scope, Send, SessionHub
from esquadrao_wasim.simulator import Channel, Simulator
from esquadrao_wasim.webhooks import WebhookDispatcher

LOCK_FILE = "wasim.lock"


class DataDirectoryBusyError(RuntimeError):
    """Another simulator runs on this data directory."""


class SimulatorRuntime:
    """A simulator on ``data_dir``; :meth:`start` before serving :attr:`app`."""

    def __init__(self, data_dir: Path, *, webhook_retry_base_s: float = 0.5) -> None:
        self.data_dir = data_dir.resolve()
        self.simulator = Simulator(self.data_dir)
        self.webhooks = WebhookDispatcher(self.simulator, retry_base_s=webhook_retry_base_s)
        self.sessions = SessionHub(self.simulator)
        self.simulator.attach(Channel.CLOUD, self.webhooks)
        self.simulator.attach(Channel.SESSION, self.sessions)
        self.api = FastAPI(
            title="Esquadrão WhatsApp simulator",
            description="Cloud API and session-mode stand-in for WhatsApp; witness of sends.",
        )
        # The send endpoint first: routes are matched in order, and it carries the load.
        self.api.include_router(cloud_router(self.simulator))
        self.api.include_router(control_router(self.simulator, self.sessions, self.webhooks))
        self._lock: IO[str] | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application (see the module docstring)."""
        if scope["type"] == "websocket" and scope["path"].startswith(SESSIONS_PATH):
            await self.sessions(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def start(self) -> None:
        """Lock the data directory, open the database, start the session hub.

        Raises :class:`DataDirectoryBusyError` if another simulator holds the directory.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirectoryBusyError(f"{self.data_dir} is used by another simulator") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
        try:
            await self.simulator.open()
            await self.sessions.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop everything and commit what is pending; safe to call more than once."""
        try:
            await self.sessions.stop()
            await self.webhooks.close()
            await self.simulator.close()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
