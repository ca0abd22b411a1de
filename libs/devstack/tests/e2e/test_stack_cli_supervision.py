"""``esquadrao-stack infra`` / ``run`` as real processes: signals, crashes, no leftovers."""

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from esquadrao_common.kafka.catalog import Catalog
from esquadrao_devstack.pytest_plugin import Infra
from esquadrao_devstack.services import ServiceSpec
from esquadrao_wasim.process import simulator_answers
from redis.asyncio import Redis

pytestmark = pytest.mark.e2e

URL_VARIABLES = ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL", "WHATSAPP_SIMULATOR_URL")
SERVER_BINARIES = {"tansu", "postgres", "redis-server"}
#: The last of the ``export`` lines ``infra`` prints.
LAST_EXPORT = "export WHATSAPP_SIMULATOR_URL="


def _environment(**given: str) -> dict[str, str]:
    """This environment without server URLs (so servers are embedded), plus ``given``.

    Of the registered services only the fake one runs (when a test installs it): the
    real services of the workspace are not what these tests are about.
    """
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    env["COLUMNS"] = "250"  # keep rich tables on one line each
    env["ESQUADRAO_SERVICES"] = "fakesvc"
    env.update(given)
    return env


@dataclass
class Supervisor:
    process: asyncio.subprocess.Process
    stderr_path: Path
    stdout_lines: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read_until(self, predicate: str, within: float = 30.0) -> None:
        """Read stdout lines until one contains ``predicate``."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + within
        while not any(predicate in line for line in self.stdout_lines):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {predicate!r} in output; stderr:\n{self.stderr()}"
            line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            assert line, f"stdout closed before {predicate!r}; stderr:\n{self.stderr()}"
            self.stdout_lines.append(line.decode())

    async def output(self) -> str:
        """Everything the supervisor wrote to stdout (call once it has exited)."""
        assert self.process.stdout is not None
        self.stdout_lines.extend((await self.process.stdout.read()).decode().splitlines())
        return "\n".join(self.stdout_lines)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def exports(self) -> dict[str, str]:
        pairs = (line.removeprefix("export ").strip().split("=", 1) for line in self.stdout_lines)
        return {name: value for name, value in pairs if name in URL_VARIABLES}

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    async def exit_status(self, within: float = 20.0) -> int:
        return await asyncio.wait_for(self.process.wait(), within)


class StartCli(Protocol):
    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> Supervisor: ...


@pytest.fixture
async def start_cli(repo: Path) -> AsyncIterator[StartCli]:
    """Start ``esquadrao-stack`` subprocesses in ``repo``; kill any left at the end."""
    started: list[Supervisor] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> Supervisor:
        stderr_path = repo / f"stderr-{len(started)}"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "esquadrao_devstack",
                *args,
                cwd=repo,
                env=env if env is not None else _environment(),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        supervisor = Supervisor(process, stderr_path, [])
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        if supervisor.process.returncode is None:
            supervisor.process.kill()
            await supervisor.process.wait()


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


async def _all_gone(processes: list[psutil.Process], within: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while True:
        alive = _alive(processes)
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(0.05)


def _server_names(processes: list[psutil.Process]) -> set[str]:
    return {process.name() for process in processes} & SERVER_BINARIES


def _simulators(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [process for process in processes if "esquadrao_wasim" in process.cmdline()]


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_infra_prints_exports_serves_them_and_stops_cleanly_on_sigint(
    start_cli: StartCli, repo: Path
) -> None:
    supervisor = await start_cli("infra")
    await supervisor.read_until(LAST_EXPORT)
    exports = supervisor.exports()
    children = supervisor.descendants()
    assert _server_names(children) == SERVER_BINARIES
    assert len(_simulators(children)) == 1
    assert await simulator_answers(exports["WHATSAPP_SIMULATOR_URL"])

    assert {s.name for s in Catalog.load().all_topics()} <= await _topics(
        exports["KAFKA_BOOTSTRAP"]
    )
    connection = await asyncpg.connect(exports["DATABASE_URL"])
    try:
        databases = {
            r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")
        }
    finally:
        await connection.close()
    assert "esquadrao_contacts" in databases
    redis = Redis.from_url(exports["REDIS_URL"])
    try:
        assert await redis.ping() is True
    finally:
        await redis.aclose()

    supervisor.process.send_signal(signal.SIGINT)

    assert await supervisor.exit_status() == 0, supervisor.stderr()
    assert await _all_gone(children, within=1.0) == []
    assert (repo / ".run" / "postgres" / "data" / "PG_VERSION").exists()
    assert (repo / ".run" / "wasim" / "data" / "wasim.sqlite3").exists()


async def test_children_die_with_a_killed_supervisor(start_cli: StartCli) -> None:
    supervisor = await start_cli("infra")
    await supervisor.read_until(LAST_EXPORT)
    children = supervisor.descendants()
    assert _server_names(children) == SERVER_BINARIES
    assert len(_simulators(children)) == 1

    supervisor.process.kill()
    await supervisor.exit_status()

    assert await _all_gone(children) == []


async def test_given_servers_are_exported_as_they_are_and_nothing_is_started(
    start_cli: StartCli, infra: Infra, whatsapp_simulator: str
) -> None:
    supervisor = await start_cli(
        "infra",
        env=_environment(
            KAFKA_BOOTSTRAP=infra.kafka_bootstrap,
            DATABASE_URL=infra.postgres_url,
            REDIS_URL=infra.redis_url,
            WHATSAPP_SIMULATOR_URL=whatsapp_simulator,
        ),
    )
    await supervisor.read_until(LAST_EXPORT)

    assert supervisor.exports() == {
        "KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "DATABASE_URL": infra.postgres_url,
        "REDIS_URL": infra.redis_url,
        "WHATSAPP_SIMULATOR_URL": whatsapp_simulator,
    }
    assert supervisor.descendants() == []
    supervisor.process.send_signal(signal.SIGTERM)
    assert await supervisor.exit_status() == 0, supervisor.stderr()


async def test_run_restarts_a_crashed_broker_with_its_topics(start_cli: StartCli) -> None:
    supervisor = await start_cli("run")
    await supervisor.read_until("Ctrl-C stops everything")
    assert any("no services registered yet" in line for line in supervisor.stdout_lines)
    (broker,) = [p for p in supervisor.descendants() if p.name() == "tansu"]
    listener = broker.cmdline()[broker.cmdline().index("--listener-url") + 1]
    bootstrap = listener.removeprefix("tcp://")

    broker.kill()
    await supervisor.read_until("restarting", within=10)

    deadline = time.monotonic() + 15
    expected = {spec.name for spec in Catalog.load().all_topics()}
    while True:
        try:
            if expected <= await _topics(bootstrap):
                break
        except (KafkaError, OSError):
            pass  # the broker is still restarting
        assert time.monotonic() < deadline, supervisor.stderr()
        await asyncio.sleep(0.1)
    (restarted,) = [p for p in supervisor.descendants() if p.name() == "tansu"]
    assert restarted.pid != broker.pid
    children = supervisor.descendants()

    supervisor.process.send_signal(signal.SIGTERM)
    assert await supervisor.exit_status() == 0, supervisor.stderr()
    assert await _all_gone(children, within=1.0) == []


async def test_run_stops_everything_with_an_error_when_postgres_dies(start_cli: StartCli) -> None:
    supervisor = await start_cli("run")
    await supervisor.read_until("Ctrl-C stops everything")
    children = supervisor.descendants()
    (postmaster,) = [p for p in children if p.name() == "postgres" and p.ppid() == supervisor.pid]

    postmaster.kill()

    assert await supervisor.exit_status() == 1
    assert await _all_gone(children, within=1.0) == []
    assert "postgres exited unexpectedly" in await supervisor.output()


async def test_run_starts_registered_services_with_their_database_and_stops_them(
    start_cli: StartCli, fake_service: tuple[ServiceSpec, Path, Path]
) -> None:
    spec, site, reports = fake_service
    supervisor = await start_cli(
        "run", env=_environment(PYTHONPATH=str(site), FAKESVC_REPORTS=str(reports))
    )
    await supervisor.read_until("Ctrl-C stops everything")
    assert any(f"{spec.url}/docs" in line for line in supervisor.stdout_lines)
    migrated = json.loads((reports / "migrate.json").read_text())
    assert migrated["database"] == "esquadrao_fakesvc"  # migrated before it started
    env = json.loads((reports / "all.json").read_text())["env"]
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "false"
    assert env["HTTP_PORT"] == str(spec.http_port)
    assert await simulator_answers(env["WHATSAPP_SIMULATOR_URL"])
    connection = await asyncpg.connect(env["DATABASE_URL"])
    try:
        assert await connection.fetchval("SELECT current_database()") == "esquadrao_fakesvc"
    finally:
        await connection.close()
    children = supervisor.descendants()
    assert any("fakesvc" in process.cmdline() for process in children)

    supervisor.process.send_signal(signal.SIGINT)

    assert await supervisor.exit_status() == 0, supervisor.stderr()
    assert await _all_gone(children, within=1.0) == []


async def test_run_stops_with_an_error_when_a_migration_fails(
    start_cli: StartCli, fake_service: tuple[ServiceSpec, Path, Path], repo: Path
) -> None:
    _spec, site, _reports = fake_service
    supervisor = await start_cli(
        "run", env=_environment(PYTHONPATH=str(site), FAKESVC_REPORTS=str(repo / "missing"))
    )

    assert await supervisor.exit_status(within=60) == 1, supervisor.stderr()
    output = await supervisor.output()
    assert "fakesvc migrate failed with status 1" in output
    assert "FileNotFoundError" in (repo / ".run" / "fakesvc" / "log").read_text()


async def test_migrate_runs_each_service_migration_on_its_database(
    start_cli: StartCli, fake_service: tuple[ServiceSpec, Path, Path], repo: Path
) -> None:
    _spec, site, reports = fake_service
    supervisor = await start_cli(
        "migrate", env=_environment(PYTHONPATH=str(site), FAKESVC_REPORTS=str(reports))
    )

    assert await supervisor.exit_status(within=30) == 0, supervisor.stderr()
    assert "migrating fakesvc" in await supervisor.output()
    assert json.loads((reports / "migrate.json").read_text())["database"] == "esquadrao_fakesvc"
    leftovers = [
        process
        for process in psutil.process_iter()
        if process.name() == "postgres" and str(repo) in " ".join(process.cmdline())
    ]
    assert await _all_gone(leftovers, within=1.0) == []


async def test_migrate_without_services_says_so(start_cli: StartCli) -> None:
    supervisor = await start_cli("migrate")

    assert await supervisor.exit_status() == 0, supervisor.stderr()
    assert "no services registered yet" in await supervisor.output()
