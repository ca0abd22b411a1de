"""The embedded stack starts Tansu, Postgres and Redis that answer real client requests."""

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from esquadrao_common.kafka.catalog import Catalog
from esquadrao_devstack.process import ChildProcess, free_port, unprivileged_account
from esquadrao_devstack.pytest_plugin import Infra
from esquadrao_devstack.servers import postgres_install_dir
from esquadrao_devstack.stack import SERVICES, Component, LocalStack, StackConfig
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.process import simulator_answers
from esquadrao_wasim.testing import register_cloud_number, text_message
from redis.asyncio import Redis

pytestmark = pytest.mark.integration


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A data directory the unprivileged Postgres account can reach."""
    path = Path(tempfile.mkdtemp(prefix="esquadrao-stack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _select_one(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        value: int = await connection.fetchval("SELECT 1")
        return value
    finally:
        await connection.close()


async def test_every_embedded_server_answers_and_stops_without_leftovers(run_dir: Path) -> None:
    stack = LocalStack(run_dir, StackConfig(), durable=False)
    await stack.start()
    pids = [server.process.pid for server in stack.embedded if server.process is not None]
    try:
        assert len(pids) == 4

        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {spec.name for spec in Catalog.load().all_topics()} <= topics

        producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=False
        )
        await producer.start()
        try:
            await producer.send_and_wait("contacts.events.v1", b"hello", key=b"c-1", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partition = TopicPartition("contacts.events.v1", 0)
            consumer.assign([partition])
            batch = await consumer.getmany(partition, timeout_ms=5000)
        finally:
            await consumer.stop()
        assert [record.value for record in batch[partition]] == [b"hello"]

        for service in SERVICES:
            assert await _select_one(stack.database_url(service)) == 1

        redis = Redis.from_url(stack.redis_url)
        try:
            assert await redis.ping() is True
        finally:
            await redis.aclose()

        assert await simulator_answers(stack.whatsapp_simulator_url)
    finally:
        await stack.stop()

    assert _gone(pids)
    assert (run_dir / "postgres" / "data" / "PG_VERSION").exists()
    assert (run_dir / "kafka" / "log").read_text()
    assert (run_dir / "wasim" / "data" / "wasim.sqlite3").exists()


async def test_the_simulator_keeps_its_witness_records_across_restarts(run_dir: Path) -> None:
    stack = LocalStack(run_dir, StackConfig(), components=[Component.SIMULATOR])
    async with stack:
        async with SimulatorControl(stack.whatsapp_simulator_url) as control:
            number = await register_cloud_number(control, "7007")
            async with httpx.AsyncClient() as http:
                response = await number.send(http, text_message("+5511988887777", "m-kept"))
        assert response.status_code == 200
        assert stack.simulator is not None and stack.simulator.process is not None
        first_pid = stack.simulator.process.pid

    async with stack, SimulatorControl(stack.whatsapp_simulator_url) as control:
        kept = await control.accepted_count("m-kept")

    assert kept == 1
    assert _gone([first_pid])


async def test_postgres_starts_again_after_it_was_killed(run_dir: Path) -> None:
    stack = LocalStack(run_dir, StackConfig(), components=[Component.POSTGRES], durable=False)
    await stack.start()
    assert stack.postgres is not None and stack.postgres.process is not None
    stack.postgres.process.kill()
    assert stack.exited() == [stack.postgres]
    await stack.stop()
    assert (run_dir / "postgres" / "data" / "postmaster.pid").exists()

    await stack.start()
    try:
        assert await _select_one(stack.postgres_url) == 1
    finally:
        await stack.stop()


async def test_a_postmaster_left_running_on_the_data_directory_is_replaced(
    run_dir: Path,
) -> None:
    stack = LocalStack(run_dir, StackConfig(), components=[Component.POSTGRES], durable=False)
    await stack.start()
    await stack.stop()
    data = run_dir / "postgres" / "data"
    leftover = ChildProcess(
        "leftover postgres",
        [
            str(postgres_install_dir() / "bin" / "postgres"),
            *("-D", str(data), "-p", str(free_port()), "-h", "127.0.0.1", "-k", ""),
        ],
        log_path=run_dir / "leftover.log",
        run_as=unprivileged_account(),
    )
    leftover.start()
    try:
        pid_file = data / "postmaster.pid"
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().startswith(str(leftover.pid))):
            leftover.ensure_running()
            assert time.monotonic() < deadline, "the leftover postgres did not start"
            await asyncio.sleep(0.05)

        await stack.start()
        try:
            assert await _select_one(stack.postgres_url) == 1
            assert leftover.returncode is not None
        finally:
            await stack.stop()
    finally:
        await leftover.stop()


async def test_given_servers_are_used_and_nothing_is_started(
    run_dir: Path, infra: Infra, whatsapp_simulator: str
) -> None:
    given = StackConfig(
        kafka_bootstrap=infra.kafka_bootstrap,
        postgres_url=infra.postgres_url,
        redis_url=infra.redis_url,
        whatsapp_simulator_url=whatsapp_simulator,
    )
    stack = LocalStack(run_dir, given, create_databases=False)
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}

    async with stack:
        assert stack.embedded == []
        assert {p.pid for p in psutil.Process().children(recursive=True)} == children_before
        assert stack.kafka_bootstrap == infra.kafka_bootstrap
        assert stack.postgres_url == infra.postgres_url
        assert stack.redis_url == infra.redis_url
        assert stack.whatsapp_simulator_url == whatsapp_simulator
        assert await stack.ensure_topics() == []  # the catalog's topics exist already

    assert os.listdir(run_dir) == []


async def test_a_second_supervisor_cannot_share_a_data_directory(run_dir: Path) -> None:
    first = LocalStack(run_dir, StackConfig(), components=[Component.REDIS])
    second = LocalStack(run_dir, StackConfig(), components=[Component.REDIS])
    async with first:
        with pytest.raises(RuntimeError, match="in use by pid"):
            await second.start()
        redis = Redis.from_url(first.redis_url)
        try:
            assert await redis.ping() is True
        finally:
            await redis.aclose()
