"""Fixtures of the platform library's integration tests on real servers.

* ``database`` — a :class:`Database` on a fresh database with the platform's tables and the
  test module's own (``tables``, which a module overrides with its ``MetaData``); a module
  needing another setup defines its own ``database``;
* ``publisher`` — a :class:`KafkaPublisher`, its client id named after the test module;
* ``make_group`` — a factory of consumer groups over fresh topics, with their retry and
  dead-letter topics (deleted afterwards); a module wanting other defaults overrides it
  with ``functools.partial(make_group, ...)`` of this one.

Plain helpers of the consumer tests are in ``consumer_helpers.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from esquadrao_common.db import Database, platform_metadata
from esquadrao_common.kafka.admin import ensure_topics
from esquadrao_common.kafka.catalog import ConsumerGroupSpec, TopicSpec
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_devstack.pytest_plugin import MakeTopics
from sqlalchemy import MetaData

from .consumer_helpers import MakeGroup


@pytest.fixture
def tables() -> MetaData:
    """The test module's own tables, created by ``database``: none unless it overrides this."""
    return MetaData()


@pytest.fixture
async def database(database_url: str, tables: MetaData) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=4)
    async with database.engine.begin() as connection:
        await connection.run_sync(platform_metadata.create_all)
        await connection.run_sync(tables.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def publisher(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[KafkaPublisher]:
    client_id = request.module.__name__.rpartition(".")[2].replace("_", "-")
    async with KafkaPublisher(kafka_bootstrap, client_id=client_id) as publisher:
        yield publisher


@pytest.fixture
async def make_group(kafka_bootstrap: str, kafka_topics: MakeTopics) -> AsyncIterator[MakeGroup]:
    """Factory of consumer groups over ``topics`` fresh topics of ``partitions`` partitions,
    with retry topics (one per delay) and a dead-letter topic of as many partitions."""
    created: list[str] = []

    async def make(
        *, topics: int = 1, partitions: int = 1, retry_delays_ms: tuple[int, ...] = (200, 400)
    ) -> ConsumerGroupSpec:
        names = await kafka_topics(topics, partitions=partitions)
        group = ConsumerGroupSpec(
            name=f"g-{uuid.uuid4().hex[:12]}", topics=tuple(names), retry_delays_ms=retry_delays_ms
        )
        specs = [
            TopicSpec(name, partitions, 1, 3_600_000)
            for name in (*group.retry_topics, group.dlq_topic)
        ]
        created.extend(await ensure_topics(kafka_bootstrap, specs, replication_factor=1))
        return group

    yield make
    if created:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(created)
        finally:
            await admin.close()
