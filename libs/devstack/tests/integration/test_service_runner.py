"""Registered services are discovered, configured for the stack and supervised."""

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import psutil
import pytest
from esquadrao_devstack.process import ChildExitedError
from esquadrao_devstack.services import (
    RunningService,
    ServiceSpec,
    load_services,
    registered_services,
)
from esquadrao_devstack.stack import LocalStack, StackConfig

pytestmark = pytest.mark.integration

GIVEN = StackConfig(
    kafka_bootstrap="broker:9092",
    postgres_url="postgresql://postgres@db:5432/postgres",
    redis_url="redis://cache:6379/0",
)


@pytest.fixture
def installed(
    fake_service: tuple[ServiceSpec, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> tuple[ServiceSpec, Path]:
    """The fake service, importable here and in child processes; returns (spec, reports)."""
    spec, site, reports = fake_service
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("FAKESVC_REPORTS", str(reports))
    return spec, reports


def test_installed_services_are_discovered_by_entry_point(
    installed: tuple[ServiceSpec, Path],
) -> None:
    spec, _reports = installed
    assert spec in registered_services()


def test_the_selection_variable_narrows_the_registered_services(
    installed: tuple[ServiceSpec, Path],
) -> None:
    spec, _reports = installed

    def names(selection: str) -> set[str]:
        return {s.name for s in registered_services({"ESQUADRAO_SERVICES": selection})}

    assert spec.name in names(" other , fakesvc")
    assert spec.name in names("")
    assert names("other") == set()


def test_an_entry_point_must_name_a_matching_service(
    installed: tuple[ServiceSpec, Path],
) -> None:
    wrong = EntryPoint(name="other", value="fakesvc.config:SERVICE", group="esquadrao.services")

    with pytest.raises(ValueError, match="must name an object"):
        load_services([wrong])


async def test_a_service_runs_with_the_stack_settings_and_stops_without_leftovers(
    installed: tuple[ServiceSpec, Path], repo: Path
) -> None:
    spec, reports = installed
    running = RunningService(LocalStack(repo / ".run", GIVEN), spec)

    await running.start(listening_within=15)
    pid = running.process.pid
    await running.stop()

    report = json.loads((reports / "all.json").read_text())
    env = report["env"]
    assert report["command"] == "all"
    assert env["DATABASE_URL"] == "postgresql://postgres@db:5432/esquadrao_fakesvc"
    assert env["KAFKA_BOOTSTRAP"] == "broker:9092"
    assert env["REDIS_URL"] == "redis://cache:6379/0"
    assert env["HTTP_PORT"] == str(spec.http_port)
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "false"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert running.log_path == repo / ".run" / "fakesvc" / "log"


async def test_a_service_that_exits_at_start_is_reported_with_its_log(
    installed: tuple[ServiceSpec, Path], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _reports = installed
    monkeypatch.setenv("FAKESVC_REPORTS", str(repo / "missing"))
    running = RunningService(LocalStack(repo / ".run", GIVEN), spec)

    with pytest.raises(ChildExitedError, match="fakesvc exited with status 1"):
        await running.start(listening_within=15)
    await running.stop()

    assert "FileNotFoundError" in running.log_path.read_text()
