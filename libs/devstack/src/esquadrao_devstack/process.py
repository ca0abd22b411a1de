"""Supervised child processes that never outlive their supervisor.

Every child runs in its own process group (so a terminal's Ctrl-C reaches only the
supervisor, which then stops children in order) and, on Linux, with a parent-death signal
(``PR_SET_PDEATHSIG``), so a supervisor killed with SIGKILL still takes its children with
it. Stopping sends a graceful signal, waits, then kills the whole group: nothing survives.

The parent-death signal fires when the *thread* that started the child exits, so a
supervisor must start and stop its children from one long-lived thread (the event loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import math
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class ChildExitedError(RuntimeError):
    """A supervised child exited while it was expected to run."""


class DirectoryBusyError(RuntimeError):
    """Another supervisor already runs a server on this data directory."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a child runs as (when the supervisor runs as root)."""

    name: str
    uid: int
    gid: int


def unprivileged_account(name: str = "esquadrao") -> RunAs | None:
    """The account to run servers that refuse root (Postgres) as, or None when not root.

    Creates a system account without home directory when it does not exist yet.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--user-group", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(
                f"cannot create system user {name!r} to run Postgres as: {created.stderr.strip()}"
            ) from None
    return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def grant_access(path: Path, account: RunAs) -> None:
    """Let ``account`` traverse every directory above ``path`` (adds only missing ``o+x``)."""
    for directory in path.resolve().parents:
        status = directory.stat()
        if status.st_uid != account.uid and not status.st_mode & 0o001:
            directory.chmod(status.st_mode | 0o001)


def grant_read_tree(root: Path, account: RunAs) -> None:
    """Let ``account`` read and execute an installed tree (binaries, libraries, share files).

    Adds ``o+r`` to files and ``o+rx`` to directories where missing (``o+x`` to files that
    are executable by their owner), and makes the tree's ancestors traversable.
    """
    grant_access(root, account)
    for directory, _subdirs, files in os.walk(root):
        dir_mode = os.stat(directory).st_mode
        if dir_mode & 0o005 != 0o005:
            os.chmod(directory, dir_mode | 0o005)
        for name in files:
            file_path = os.path.join(directory, name)
            file_mode = os.lstat(file_path).st_mode
            wanted = file_mode | 0o004 | (0o001 if file_mode & 0o100 else 0)
            if wanted != file_mode and not os.path.islink(file_path):
                os.chmod(file_path, wanted)


async def gather_all(awaitables: Iterable[Awaitable[Any]]) -> None:
    """Await ``awaitables`` concurrently to the end, then raise the first error if any.

    Unlike a plain ``gather``, nothing is left running half-way when one of them fails,
    which is what start-up and shutdown of several children need.
    """
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/lock``, held while a server runs there.

    The kernel releases it when the holder dies, however it dies, so a lock that can be
    taken means any server still running on the directory is a leftover to clean up.
    The file holds the holder's pid and a description for the error message of others.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._file: IO[str] | None = None

    def acquire(self, description: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryBusyError(f"{self.path.parent} is in use by {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {description}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _die_with_parent(parent_pid: int, death_signal: signal.Signals) -> Callable[[], None]:
    """``preexec_fn`` that arms the parent-death signal, closing the fork/exit race."""

    def arm() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


class ChildProcess:
    """One supervised child process, started by :meth:`start` (again after it exited, for
    a restart) and stopped by :meth:`stop`.

    ``stop_signal`` asks for a graceful shutdown and ``death_signal`` is what the child
    receives when the supervisor dies; both default to SIGTERM. Output (stdout and stderr)
    is appended to ``log_path``, or goes to the supervisor's own when it is None.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        run_as: RunAs | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        death_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started), else the exit status (negative: signal).

        The exit is observed without reaping the child: until :meth:`stop` reaps it, the
        exited leader keeps its process-group id reserved, so :meth:`stop` can still sweep
        the group without any risk of hitting an unrelated process that reused the id.
        """
        if self._popen is None:
            return None
        if self._popen.returncode is not None or not hasattr(os, "waitid"):
            return self._popen.poll()
        try:
            info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self._popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def is_running(self) -> bool:
        return self._popen is not None and self.returncode is None

    def start(self) -> None:
        """Start the child; a previous run of this object is killed and reaped first."""
        if self._popen is not None:
            self.kill()
        if self.log_path is None:
            self._spawn(None)
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self._spawn(log)

    def _spawn(self, output: IO[bytes] | None) -> None:
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            cwd=self.cwd,
            env=self.env,
            user=self.run_as.uid if self.run_as else None,
            group=self.run_as.gid if self.run_as else None,
            extra_groups=[] if self.run_as else None,
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid(), self.death_signal),
        )

    def ensure_running(self) -> None:
        """Raise :class:`ChildExitedError` (with the log's tail) if the child has exited."""
        code = self.returncode
        if self._popen is not None and code is not None:
            message = f"{self.name} exited with status {code}"
            if self.log_path is not None:
                message += f"; last lines of {self.log_path}:\n{self.log_tail()}"
            raise ChildExitedError(message)

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace: float = 10.0) -> None:
        """Stop gracefully within ``grace`` seconds, else kill the whole process group.

        Whatever else is left in the group afterwards is killed too, then the child is
        reaped.
        """
        if self._popen is None:
            return
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, self.stop_signal)
            if not await self._exited_within(grace):
                self._kill_group()
                await self._exited_within(grace)
        self._kill_group()
        self._popen.wait()

    async def wait(self) -> int:
        """Wait for the child to exit by itself and return its status (reaped)."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        await self._exited_within(math.inf)
        self._kill_group()
        return self._popen.wait()

    def kill(self) -> None:
        """Kill the child's process group at once (no graceful shutdown) and reap it."""
        if self._popen is not None:
            self._kill_group()
            self._popen.wait()

    def _kill_group(self) -> None:
        assert self._popen is not None
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)

    async def _exited_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.returncode is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True
