"""The simulator as a child process, for tests, benchmarks and the local stack.

The child runs in its own process group and, on Linux, with a parent-death signal
(``PR_SET_PDEATHSIG``): it dies with its parent however the parent dies, so a killed test
run leaves no simulator behind. The signal fires when the *thread* that started the child
exits: start and stop the child from one long-lived thread (an event loop's).

Readiness: the child writes ``host:port`` to ``<data_dir>/address`` once it accepts
connections (so ``port=0`` works without guessing), and the parent then asks
``GET /_sim/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

ADDRESS_FILE = "address"
LOG_FILE = "simulator.log"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def simulator_argv(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    address_file: Path | None = None,
    knobs: Mapping[str, Any] | None = None,
    log_level: str = "warning",
) -> list[str]:
    """The command line that serves a simulator on ``data_dir``."""
    argv = [
        sys.executable,
        "-m",
        "esquadrao_wasim",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    if address_file is not None:
        argv += ["--address-file", str(address_file)]
    if knobs:
        argv += ["--knobs", json.dumps(dict(knobs))]
    return argv


async def simulator_answers(url: str, within: float = 2.0) -> bool:
    """Whether a simulator answers ``GET /_sim/health`` at ``url`` within ``within`` s."""
    try:
        async with httpx.AsyncClient(timeout=within) as client:
            response = await client.get(f"{url}/_sim/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("status") == "ok"


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def arm() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


class SimulatorProcess:
    """A simulator serving ``data_dir`` as a child process.

    ``port=0`` lets the child pick a free port. The child's output goes to
    ``<data_dir>/simulator.log``. ``knobs`` are applied as global knobs at start.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        knobs: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.knobs = dict(knobs or {})
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def address_file(self) -> Path:
        return self.data_dir / ADDRESS_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def url(self) -> str:
        """``http://host:port`` of the running simulator."""
        if self._url is None:
            raise RuntimeError("the simulator has not started")
        return self._url

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError("the simulator has not started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    async def start(self, ready_within: float = 30.0) -> None:
        """Start the child and return once it answers; raise (with the end of its log)
        if it exits or does not answer within ``ready_within`` seconds."""
        if self._popen is not None and self._popen.poll() is None:
            raise RuntimeError("the simulator is already running")
        self._spawn()
        try:
            await self._wait_ready(time.monotonic() + ready_within)
        except BaseException:
            self.kill()
            raise

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.address_file.unlink(missing_ok=True)
        argv = simulator_argv(
            self.data_dir,
            host=self.host,
            port=self.port,
            address_file=self.address_file,
            knobs=self.knobs,
        )
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
            )

    async def _wait_ready(self, deadline: float) -> None:
        while True:
            code = self.returncode
            if code is not None:
                raise RuntimeError(f"the simulator exited with status {code}:\n{self.log_tail()}")
            if self.address_file.exists():
                url = f"http://{self.address_file.read_text().strip()}"
                if await simulator_answers(url):
                    self._url = url
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the simulator did not become ready:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then kill the process group."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self._popen.poll() is None:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash) and reap the child."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)
        self._popen.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
