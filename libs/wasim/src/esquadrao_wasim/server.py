"""Serving the simulator: as a process of its own (:func:`serve`, what the command line
runs) or inside the caller's event loop (:func:`running_simulator`, for tests that want
no child process).

uvicorn serves HTTP/1.1 (h11) and WebSocket (websockets' sans-I/O implementation) with no
compression and no protocol-level pings: per-message deflate would cost tens of KiB per
idle session, and the session protocol has its own keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from esquadrao_wasim.app import SimulatorRuntime
from esquadrao_wasim.knobs import Knobs, deep_merge

#: Pending connections the listening socket queues (many sessions connect at once).
BACKLOG = 4096
#: Garbage collector thresholds of a simulator process. Every request allocates hundreds
#: of short-lived objects; with the default (700, 10, 10) the collector runs so often that
#: it costs a third of the throughput, and far more with thousands of sessions in memory.
GC_THRESHOLDS = (50_000, 50, 100)


def _config(runtime: SimulatorRuntime, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        runtime.app,
        interface="asgi3",
        http="h11",
        proxy_headers=False,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_max_size=1024 * 1024,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level=log_level,
        backlog=BACKLOG,
        timeout_graceful_shutdown=5,
        # Graph keeps idle connections open for a while; uvicorn's 5 s would make clients
        # race the server's close when they reuse a connection.
        timeout_keep_alive=75,
    )


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), ready for uvicorn.

    The protocol is named (``IPPROTO_TCP``, not 0) because asyncio turns Nagle's
    algorithm off only on sockets that say they are TCP: with it on, every answer would
    wait ~40 ms for the client's delayed acknowledgement.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def apply_knobs(runtime: SimulatorRuntime, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the global knobs (as ``PATCH /_sim/knobs`` does)."""
    if changes:
        merged = deep_merge(runtime.simulator.global_knobs.model_dump(), changes)
        await runtime.simulator.set_global_knobs(Knobs.model_validate(merged))


def _write_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


async def serve(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    address_file: Path | None = None,
    knobs: dict[str, Any] | None = None,
    log_level: str = "warning",
) -> None:
    """Run the simulator until SIGINT or SIGTERM, then stop cleanly (exit status 0).

    Once it accepts connections, ``address_file`` (if given) holds ``host:port`` — the
    way a parent learns the port picked for ``port=0``. Meant to own its process: it
    handles SIGINT and SIGTERM, tunes the garbage collector (:data:`GC_THRESHOLDS`) and
    freezes what start-up made.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    runtime = SimulatorRuntime(data_dir)
    await runtime.start()
    try:
        await apply_knobs(runtime, knobs or {})
        sock = bind(host, port)
        server = InProcessServer(_config(runtime, log_level))
        loop = asyncio.get_running_loop()

        def request_exit() -> None:
            server.force_exit = server.should_exit
            server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, request_exit)

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            if address_file is not None:
                bound_host, bound_port = sock.getsockname()[:2]
                _write_atomically(address_file, f"{bound_host}:{bound_port}\n")

        announcing = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[sock])
        finally:
            announcing.cancel()
            sock.close()
    finally:
        await runtime.stop()


class InProcessServer(uvicorn.Server):
    """uvicorn without its signal handlers, for serving inside a program (or a test) that
    keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator served in this process: its base URL and its parts."""

    url: str
    runtime: SimulatorRuntime

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


@contextlib.asynccontextmanager
async def running_simulator(
    data_dir: Path, *, host: str = "127.0.0.1", port: int = 0, webhook_retry_base_s: float = 0.5
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator on ``data_dir`` in the running event loop for the block's
    duration; everything is committed and closed when the block exits."""
    runtime = SimulatorRuntime(data_dir, webhook_retry_base_s=webhook_retry_base_s)
    await runtime.start()
    sock = bind(host, port)
    server = InProcessServer(_config(runtime, "warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the simulator stopped before it started")
            await asyncio.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        yield RunningSimulator(f"http://{bound_host}:{bound_port}", runtime)
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await runtime.stop()
