"""``esquadrao-stack``: run the suite locally, or just its infrastructure, and dev helpers.

``run`` and ``infra`` supervise their children until Ctrl-C or SIGTERM, then stop services
first and infrastructure last, leaving no process behind. Data lives in ``<repo>/.run/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from aiokafka.errors import KafkaError
from esquadrao_common.kafka.catalog import Catalog, parse_duration_ms
from rich.console import Console
from rich.table import Table

from esquadrao_devstack.k8s import kafka_topics_yaml
from esquadrao_devstack.process import gather_all
from esquadrao_devstack.services import (
    RunningService,
    ServiceSpec,
    registered_services,
    service_process,
)
from esquadrao_devstack.stack import SERVICES, Component, LocalStack, StackConfig
from esquadrao_devstack.tokens import DEFAULT_SECRET, Role, mint_token

app = typer.Typer(
    name="esquadrao-stack",
    help=(
        "Esquadrão local stack: embedded broker, Postgres, Redis and WhatsApp simulator, "
        "and the services."
    ),
    no_args_is_help=True,
    add_completion=False,
)

#: How often a crashed embedded broker is restarted (with its topics and the services)
#: before ``run`` gives up and stops everything.
MAX_BROKER_RESTARTS = 3
_WATCH_INTERVAL = 0.2
_NO_SERVICES = "no services registered yet (or none selected by ESQUADRAO_SERVICES)"
#: Failures of the environment (a port taken, a server down, a crash), reported in one
#: line; anything else is a bug and keeps its traceback.
_OPERATIONAL_ERRORS = (RuntimeError, TimeoutError, OSError, KafkaError, asyncpg.PostgresError)

T = TypeVar("T")

RepoOption = Annotated[
    Path,
    typer.Option(
        "--repo",
        help="Repository root; data goes to <repo>/.run/.",
        file_okay=False,
        resolve_path=True,
    ),
]
KafkaPort = Annotated[int, typer.Option(help="Port of the embedded broker (0: any free one).")]
PostgresPort = Annotated[int, typer.Option(help="Port of the embedded Postgres (0: any free one).")]
RedisPort = Annotated[int, typer.Option(help="Port of the embedded Redis (0: any free one).")]
SimulatorPort = Annotated[
    int, typer.Option(help="Port of the embedded WhatsApp simulator (0: any free one).")
]


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while waiting for something to finish."""


class _Supervisor:
    """Shared by the long-running commands: stop requests, output, and the stack."""

    def __init__(self, stack: LocalStack, console: Console) -> None:
        self.stack = stack
        self.console = console
        self.stop_requested = asyncio.Event()
        self.services: list[RunningService] = []

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop_requested.set)

    async def unless_stopped(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``; cancel it and raise :class:`_Interrupted` if a stop comes first."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _Interrupted
        return task.result()

    async def start_services(self, services: list[ServiceSpec]) -> None:
        """Migrate each service's database (output in the service's log), then start them."""
        self.services = [RunningService(self.stack, service) for service in services]
        await self.unless_stopped(
            _migrate_services(
                self.stack,
                services,
                self.console,
                log_path=lambda service: self.stack.run_dir / service.name / "log",
            )
        )
        await self.unless_stopped(gather_all(s.start() for s in self.services))

    async def stop_services(self) -> None:
        await gather_all(s.stop() for s in self.services)

    async def watch(self) -> int:
        """Supervise until a stop request (exit status 0) or a fatal crash (1).

        A crashed embedded broker is restarted on its port with its topics, and the
        services restarted after it (they lost every topic and group with it).
        """
        restarts = 0
        while not self.stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), _WATCH_INTERVAL)
            if self.stop_requested.is_set():
                break
            crashed = self.stack.exited()
            if crashed == [self.stack.broker] and restarts < MAX_BROKER_RESTARTS:
                restarts += 1
                self.console.print(
                    f"[yellow]the broker exited (status {crashed[0].returncode}); "
                    f"restarting it, its topics and the services "
                    f"({restarts}/{MAX_BROKER_RESTARTS})[/]"
                )
                await self.stop_services()
                await self.unless_stopped(self.stack.restart_broker())
                await self.start_services([s.service for s in self.services])
                continue
            if crashed:
                for server in crashed:
                    self._report_crash(server.component, server.returncode, server.log_path)
                return 1
            dead = [s for s in self.services if s.has_exited()]
            for service in dead:
                self._report_crash(
                    service.service.name, service.process.returncode, service.log_path
                )
            if dead:
                return 1
        return 0

    def _report_crash(self, name: str, status: int | None, log_path: Path) -> None:
        self.console.print(
            f"[red]{name} exited unexpectedly (status {status}); stopping everything. "
            f"See {log_path}[/]"
        )


def _infra_table(stack: LocalStack) -> Table:
    table = Table(title="Infrastructure", title_justify="left")
    table.add_column("component")
    table.add_column("address")
    table.add_column("data")
    table.add_column("log")
    servers = {server.component: server for server in stack.embedded}
    addresses = {
        Component.KAFKA: stack.kafka_bootstrap,
        Component.POSTGRES: stack.postgres_url,
        Component.REDIS: stack.redis_url,
        Component.SIMULATOR: stack.whatsapp_simulator_url,
    }
    for component in Component:
        server = servers.get(component)
        if server is None:
            table.add_row(f"{component} (given)", addresses[component], "-", "-")
        else:
            table.add_row(component, server.url, str(server.data_path), str(server.log_path))
    return table


def _services_table(services: list[RunningService]) -> Table:
    table = Table(title="Services", title_justify="left")
    table.add_column("service")
    table.add_column("API")
    table.add_column("OpenAPI")
    table.add_column("log")
    for running in services:
        url = running.service.url
        table.add_row(running.service.name, url, f"{url}/docs", str(running.log_path))
    return table


def _exports(stack: LocalStack) -> list[str]:
    values = {
        "KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "DATABASE_URL": stack.postgres_url,
        "REDIS_URL": stack.redis_url,
        "WHATSAPP_SIMULATOR_URL": stack.whatsapp_simulator_url,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


async def _supervise(stack: LocalStack, services: list[ServiceSpec] | None) -> int:
    """Start the stack (and ``services``, unless None), supervise, stop everything.

    Returns the exit status: 0 after a stop request, 1 after a failure or a crash.
    """
    console = Console(stderr=services is None)
    supervisor = _Supervisor(stack, console)
    supervisor.install_signal_handlers()
    try:
        await supervisor.unless_stopped(stack.start())
    except _Interrupted:
        return 0
    except _OPERATIONAL_ERRORS as error:
        console.print(f"[red]the infrastructure did not start: {error}[/]")
        return 1
    try:
        console.print(_infra_table(stack))
        if services is None:
            for line in _exports(stack):
                print(line, flush=True)
        elif services:
            await supervisor.start_services(services)
            console.print(_services_table(supervisor.services))
        else:
            console.print(_NO_SERVICES)
        console.print("Ready. Ctrl-C stops everything.")
        return await supervisor.watch()
    except _Interrupted:
        return 0
    except _OPERATIONAL_ERRORS as error:
        console.print(f"[red]{error}[/]")
        return 1
    finally:
        await supervisor.stop_services()
        await stack.stop()


def _stack(
    repo: Path,
    services: list[ServiceSpec],
    *,
    components: tuple[Component, ...] = tuple(Component),
    kafka_port: int = 0,
    postgres_port: int = 0,
    redis_port: int = 0,
    simulator_port: int = 0,
) -> LocalStack:
    """The stack of ``repo`` with a database for every known and every registered service."""
    names = sorted({*SERVICES, *(service.name for service in services)})
    config = StackConfig.from_env(
        services=names,
        kafka_port=kafka_port,
        postgres_port=postgres_port,
        redis_port=redis_port,
        simulator_port=simulator_port,
    )
    return LocalStack(repo / ".run", config, components=components, services=names)


@app.command()
def run(
    repo: RepoOption = Path(),
    kafka_port: KafkaPort = 0,
    postgres_port: PostgresPort = 0,
    redis_port: RedisPort = 0,
) -> None:
    """Start the infrastructure, then migrate and start every registered service; Ctrl-C
    stops it all."""
    services = registered_services()
    stack = _stack(
        repo, services, kafka_port=kafka_port, postgres_port=postgres_port, redis_port=redis_port
    )
    raise typer.Exit(asyncio.run(_supervise(stack, services)))


@app.command()
def infra(
    repo: RepoOption = Path(),
    kafka_port: KafkaPort = 0,
    postgres_port: PostgresPort = 0,
    redis_port: RedisPort = 0,
    simulator_port: SimulatorPort = 0,
) -> None:
    """Start only the infrastructure and print its URLs as ``export`` lines."""
    stack = _stack(
        repo,
        registered_services(),
        kafka_port=kafka_port,
        postgres_port=postgres_port,
        redis_port=redis_port,
        simulator_port=simulator_port,
    )
    raise typer.Exit(asyncio.run(_supervise(stack, None)))


class MigrationFailed(RuntimeError):
    """``python -m <service> migrate`` exited with a non-zero status."""

    def __init__(self, service: str, status: int, log_path: Path | None) -> None:
        where = f"; see {log_path}" if log_path is not None else ""
        super().__init__(f"{service} migrate failed with status {status}{where}")
        self.status = status


async def _migrate_services(
    stack: LocalStack,
    services: list[ServiceSpec],
    console: Console,
    *,
    log_path: Callable[[ServiceSpec], Path | None] = lambda _service: None,
) -> None:
    """Run each service's migrations on its database of ``stack`` (started), one at a time;
    MigrationFailed at the first that fails. Output goes to ``log_path(service)``, or to
    this process's own when that is None."""
    for service in services:
        console.print(f"migrating {service.name} ({stack.database_url(service.name)})")
        log = log_path(service)
        process = service_process(stack, service, "migrate", log_path=log)
        process.start()
        try:
            status = await process.wait()
        finally:
            await process.stop()
        if status != 0:
            raise MigrationFailed(service.name, status, log)


async def _migrate(stack: LocalStack, services: list[ServiceSpec], console: Console) -> int:
    async with stack:
        try:
            await _migrate_services(stack, services, console)
        except MigrationFailed as error:
            console.print(f"[red]{error}[/]")
            return error.status
    return 0


@app.command()
def migrate(repo: RepoOption = Path(), postgres_port: PostgresPort = 0) -> None:
    """Run ``python -m <service> migrate`` for every registered service.

    Uses DATABASE_URL (or <SERVICE>_DATABASE_URL) when set, else the embedded Postgres.
    """
    console = Console()
    services = registered_services()
    if not services:
        console.print(_NO_SERVICES)
        return
    stack = _stack(repo, services, components=(Component.POSTGRES,), postgres_port=postgres_port)
    raise typer.Exit(asyncio.run(_migrate(stack, services, console)))


@app.command("k8s-topics")
def k8s_topics(
    catalog: Annotated[
        Path | None,
        typer.Option(help="Topic catalog file (default: the one shipped with the contracts)."),
    ] = None,
) -> None:
    """Print a Strimzi KafkaTopic resource per catalog topic (multi-document YAML)."""
    print(kafka_topics_yaml(Catalog.load(catalog)), end="")


@app.command()
def token(
    company: Annotated[str, typer.Option(help="company_id claim: the tenant.")],
    user: Annotated[str, typer.Option(help="sub claim: the user id.")],
    role: Annotated[Role, typer.Option(help="role claim.")] = Role.ADMIN,
    secret: Annotated[
        str, typer.Option(envvar="JWT_SECRET", help="HS256 signing secret.")
    ] = DEFAULT_SECRET,
    ttl: Annotated[str, typer.Option(help="Validity, e.g. 30m, 12h, 7d.")] = "12h",
) -> None:
    """Print a signed development JWT."""
    try:
        ttl_seconds = parse_duration_ms(ttl) // 1000
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--ttl") from None
    signed = mint_token(
        company_id=company, user=user, role=role, secret=secret, ttl_seconds=ttl_seconds
    )
    print(signed)
