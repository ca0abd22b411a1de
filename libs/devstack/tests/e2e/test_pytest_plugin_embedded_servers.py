"""Without server URLs in the environment, the plugin embeds the servers for the session."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.e2e

#: Printed by each session below: the pids and names of the session's child processes.
CHILDREN = textwrap.dedent(
    """
    import json
    import psutil


    def print_children():
        children = psutil.Process().children(recursive=True)
        described = [{"pid": p.pid, "name": p.name(), "cmdline": p.cmdline()} for p in children]
        print("CHILDREN", json.dumps(described))
    """
)

SESSION_TESTS = CHILDREN + textwrap.dedent(
    """
    import asyncpg
    from redis.asyncio import Redis


    async def test_servers(infra, database_url, kafka_topics, redis_url):
        assert infra.kafka_bootstrap.startswith("127.0.0.1:")
        (topic,) = await kafka_topics(1, partitions=2)
        connection = await asyncpg.connect(database_url)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
        client = Redis.from_url(redis_url)
        assert await client.ping()
        await client.aclose()
        print("EMBEDDED", infra.kafka_bootstrap, infra.postgres_url, infra.redis_url)
        print_children()
    """
)


SIMULATOR_TESTS = CHILDREN + textwrap.dedent(
    """
    from esquadrao_wasim.client import SimulatorControl


    async def test_simulator(whatsapp_simulator):
        async with SimulatorControl(whatsapp_simulator) as control:
            assert (await control.health())["status"] == "ok"
        print("SIMULATOR", whatsapp_simulator)
        print_children()
    """
)

URL_VARIABLES = ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL", "WHATSAPP_SIMULATOR_URL")


def _run_session(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a test session of its own, without any server URL given."""
    (tmp_path / "test_session.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "esquadrao_devstack.pytest_plugin",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=session",
            "-o",
            "asyncio_default_test_loop_scope=session",
            "-s",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_session.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _children(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The child processes the session reported while it ran."""
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("CHILDREN ")]
    children: list[dict[str, Any]] = json.loads(line.removeprefix("CHILDREN "))
    return children


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_session_without_urls_embeds_and_cleans_up_its_servers(tmp_path: Path) -> None:
    result = _run_session(tmp_path, SESSION_TESTS)

    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("EMBEDDED")]
    assert "127.0.0.1" in line
    children = _children(result)
    assert {"tansu", "postgres", "redis-server"} <= {child["name"] for child in children}
    assert not any("esquadrao_wasim" in child["cmdline"] for child in children)
    assert _alive([child["pid"] for child in children]) == []


def test_a_session_asking_for_the_simulator_embeds_and_stops_it(tmp_path: Path) -> None:
    result = _run_session(tmp_path, SIMULATOR_TESTS)

    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("SIMULATOR")]
    assert line.startswith("SIMULATOR http://127.0.0.1:")
    children = _children(result)
    assert [child["cmdline"][2] for child in children] == ["esquadrao_wasim"]
    assert _alive([child["pid"] for child in children]) == []
