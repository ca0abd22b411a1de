"""Without server URLs in the environment, the plugin embeds the servers for the session."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.e2e

SESSION_TESTS = textwrap.dedent(
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
    """
)


def test_a_session_without_urls_embeds_and_cleans_up_its_servers(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(SESSION_TESTS)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL")
    }
    before = {p.pid for p in psutil.process_iter()}

    result = subprocess.run(
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

    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("EMBEDDED")]
    assert "127.0.0.1" in line
    leftovers = [
        p.name()
        for p in psutil.process_iter()
        if p.pid not in before and p.name() in ("tansu", "postgres", "redis-server")
    ]
    assert leftovers == []
