"""The suite's services as the local stack knows them: registered, configured, supervised.

A service registers itself with an entry point in the ``esquadrao.services`` group of its
package metadata: the entry point's name is the service's name (also its Python package,
run as ``python -m <name> <command>``), its value names an object with the attributes
``name: str`` and ``http_port: int``::

    [project.entry-points."esquadrao.services"]
    contacts = "contacts.config:SERVICE"

Services without an entry point are not run: the stack grows as services land.
``ESQUADRAO_SERVICES`` (comma-separated names) narrows the registered services down to the
ones named, e.g. ``ESQUADRAO_SERVICES=contacts make run``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from esquadrao_devstack.process import ChildProcess
from esquadrao_devstack.stack import Component, LocalStack

ENTRY_POINT_GROUP = "esquadrao.services"
#: Names of the registered services to run, comma-separated; unset or empty: all of them.
SELECTION_VARIABLE = "ESQUADRAO_SERVICES"


@dataclass(frozen=True)
class ServiceSpec:
    """A registered service: its name (and package) and the port of its HTTP API."""

    name: str
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def load_services(points: Iterable[EntryPoint]) -> list[ServiceSpec]:
    """The services declared by ``points``, sorted by name.

    Raises ValueError when an entry point's object does not match its name.
    """
    services = []
    for point in points:
        declared = point.load()
        name, port = getattr(declared, "name", None), getattr(declared, "http_port", None)
        if name != point.name or not isinstance(port, int):
            raise ValueError(
                f"entry point {point.name!r} = {point.value!r} must name an object with "
                f"name == {point.name!r} and an int http_port (got {name!r}, {port!r})"
            )
        services.append(ServiceSpec(name=name, http_port=port))
    return sorted(services, key=lambda service: service.name)


def registered_services(environ: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """The services installed in this environment, those named in ``ESQUADRAO_SERVICES``
    (of ``environ``, default: this process's) when it is set.

    Names that are not registered select nothing, so a selection can name services that
    are not installed everywhere.
    """
    services = load_services(entry_points(group=ENTRY_POINT_GROUP))
    selection = (os.environ if environ is None else environ).get(SELECTION_VARIABLE, "")
    wanted = {name.strip() for name in selection.split(",") if name.strip()}
    if not wanted:
        return services
    return [service for service in services if service.name in wanted]


def service_environment(
    stack: LocalStack, service: ServiceSpec, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a service process runs with on ``stack``: ``base`` (default: this
    process's) plus the URLs of the stack's servers (``WHATSAPP_SIMULATOR_URL`` for the
    simulator, also ``WHATSAPP_GRAPH_URL`` unless given) and the service's ``HTTP_PORT``.

    Producer idempotence is off for the embedded broker (Tansu rejects InitProducerId);
    with a given broker, ``KAFKA_ENABLE_IDEMPOTENCE`` from ``base`` is kept, else off.
    """
    env = dict(os.environ if base is None else base)
    env["HTTP_PORT"] = str(service.http_port)
    if Component.POSTGRES in stack.components:
        env["DATABASE_URL"] = stack.database_url(service.name)
    if Component.REDIS in stack.components:
        env["REDIS_URL"] = stack.redis_url
    if Component.SIMULATOR in stack.components:
        env["WHATSAPP_SIMULATOR_URL"] = stack.whatsapp_simulator_url
        # Locally, Cloud API sessions talk to the simulator's Graph API surface.
        env.setdefault("WHATSAPP_GRAPH_URL", stack.whatsapp_simulator_url)
    if Component.KAFKA in stack.components:
        env["KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap
        given_setting = env.get("KAFKA_ENABLE_IDEMPOTENCE") if stack.broker is None else None
        env["KAFKA_ENABLE_IDEMPOTENCE"] = given_setting or "false"
    return env


def service_process(
    stack: LocalStack,
    service: ServiceSpec,
    command: str,
    *,
    log_path: Path | None,
    base_env: Mapping[str, str] | None = None,
) -> ChildProcess:
    """``python -m <service> <command>`` as a supervised child configured for ``stack``."""
    return ChildProcess(
        service.name,
        [sys.executable, "-m", service.name, command],
        log_path=log_path,
        env=service_environment(stack, service, base_env),
    )


class RunningService:
    """One service run with ``python -m <name> all``, its output in ``<run_dir>/<name>/log``."""

    def __init__(
        self, stack: LocalStack, service: ServiceSpec, base_env: Mapping[str, str] | None = None
    ) -> None:
        self.service = service
        self.log_path = stack.run_dir / service.name / "log"
        self.process = service_process(
            stack, service, "all", log_path=self.log_path, base_env=base_env
        )

    async def start(self, listening_within: float = 30.0) -> None:
        """Start the service and wait until its HTTP port accepts connections.

        Raises RuntimeError at once if something else already listens on that port.
        """
        if await _listening(self.service.http_port):
            raise RuntimeError(
                f"port {self.service.http_port} of {self.service.name} is already in use"
            )
        self.process.start()
        deadline = time.monotonic() + listening_within
        while not await _listening(self.service.http_port):
            self.process.ensure_running()
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.service.name} does not listen on port {self.service.http_port} "
                    f"after {listening_within:.0f} s; see {self.log_path}"
                )
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await self.process.stop()

    def has_exited(self) -> bool:
        return self.process.returncode is not None


async def _listening(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True
