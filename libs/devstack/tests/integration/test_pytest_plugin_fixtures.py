"""The fixtures other tests build on: servers, fresh databases and unique topics."""

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from esquadrao_devstack.pytest_plugin import Infra, MakeTopics
from esquadrao_wasim.client import SimulatorControl
from redis.asyncio import Redis

pytestmark = pytest.mark.integration


async def test_kafka_topics_creates_unique_topics_with_the_partitions_asked(
    kafka_topics: MakeTopics, kafka_bootstrap: str
) -> None:
    first = await kafka_topics(2, partitions=3)
    second = await kafka_topics()

    assert len(set(first + second)) == 3
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(first + second)
    finally:
        await admin.close()
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert partitions == {first[0]: 3, first[1]: 3, second[0]: 1}


async def test_database_url_is_a_fresh_empty_database(database_url: str, infra: Infra) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        name = await connection.fetchval("SELECT current_database()")
    finally:
        await connection.close()

    assert tables == 0
    assert name.startswith("test_")
    assert database_url.startswith("postgresql://")
    assert infra.postgres_url.startswith("postgresql://")


async def test_redis_url_answers(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_whatsapp_simulator_is_a_running_simulator(whatsapp_simulator: str) -> None:
    assert whatsapp_simulator.startswith("http://")
    async with SimulatorControl(whatsapp_simulator) as control:
        assert (await control.health())["status"] == "ok"
