"""A consumer process for crash tests: one effect row per record, run until SIGTERM.

    python consumer_worker.py --bootstrap HOST:PORT --db postgresql://... --topic T --group G

Runs a :class:`ConsumerRuntime` for group ``G`` on topic ``T`` (no retries; the topic
``G.dlq`` must exist) whose handler sleeps ``--delay-ms`` and then inserts ``(event_id,
partition, offset)`` into ``consumer_crash_effects``, a table without a unique constraint,
so a record applied twice shows as two rows. It creates that table and the platform tables
when missing. On SIGTERM it stops gracefully and prints one JSON line: how many records
ended in each outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from esquadrao_common.db import Database, SqlAlchemyUnitOfWork, platform_metadata
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord, Outcome
from esquadrao_common.kafka.producer import KafkaPublisher
from prometheus_client import REGISTRY
from sqlalchemy import text

EFFECTS_TABLE = "consumer_crash_effects"
CREATE_EFFECTS = text(
    f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} "
    "(event_id uuid NOT NULL, partition int NOT NULL, record_offset bigint NOT NULL)"
)
INSERT_EFFECT = text(
    f"INSERT INTO {EFFECTS_TABLE} (event_id, partition, record_offset) "
    "VALUES (:event_id, :partition, :offset)"
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--db", required=True, help="postgresql:// URL of the database")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--session-timeout-ms", type=int, default=6_000)
    return parser.parse_args(argv)


def outcome_counts(group: str, topic: str) -> dict[str, int]:
    return {
        outcome.value: int(
            REGISTRY.get_sample_value(
                "esquadrao_consumer_records_total",
                {"group": group, "topic": topic, "outcome": outcome.value},
            )
            or 0
        )
        for outcome in Outcome
    }


async def work(args: argparse.Namespace) -> dict[str, int]:
    database = Database(args.db, pool_size=2)
    delay_s = args.delay_ms / 1000

    async def apply(record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
        await asyncio.sleep(delay_s)
        await uow.session.execute(
            INSERT_EFFECT,
            {"event_id": record.event_id, "partition": record.partition, "offset": record.offset},
        )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    group = ConsumerGroupSpec(name=args.group, topics=(args.topic,), retry_delays_ms=())
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(platform_metadata.create_all)
            await connection.execute(CREATE_EFFECTS)
        async with KafkaPublisher(args.bootstrap, client_id="consumer-worker") as publisher:
            runtime = ConsumerRuntime(
                bootstrap=args.bootstrap,
                group=group,
                handler=apply,
                uow_factory=lambda: SqlAlchemyUnitOfWork(database),
                publisher=publisher,
                session_timeout_ms=args.session_timeout_ms,
                heartbeat_interval_ms=max(100, args.session_timeout_ms // 6),
                poll_timeout_ms=200,
            )
            running = asyncio.create_task(runtime.run())
            stop_requested = asyncio.create_task(stopping.wait())
            await asyncio.wait({running, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            await runtime.stop()
            stop_requested.cancel()
            if running.done():
                running.result()
    finally:
        await database.dispose()
    return outcome_counts(args.group, args.topic)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    counts = asyncio.run(work(parse_args(argv)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
