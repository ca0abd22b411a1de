"""Topic administration: create the catalog's topics before anything produces or consumes."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from esquadrao_common.kafka.catalog import TopicSpec


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, replication_factor: int | None = None
) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; return the names created.

    ``replication_factor`` overrides the catalog's (a single local broker needs 1).
    Existing topics are left as they are: partition counts are never changed here.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor or spec.replication_factor,
                topic_configs={"retention.ms": str(spec.retention_ms)},
            )
            for spec in specs
            if spec.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()
