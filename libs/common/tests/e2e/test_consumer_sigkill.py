"""A consumer process killed with SIGKILL mid-batch: after a restart every record has
exactly one effect, and the restart resumed from offsets that never ran ahead of the
database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.events import event_type_of, new_envelope, record_headers
from esquadrao_common.kafka.admin import ensure_topics
from esquadrao_common.kafka.catalog import TopicSpec
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("consumer_worker.py")
EFFECTS_TABLE = "consumer_crash_effects"
RECORDS = 2_000
PARTITIONS = 4
#: Effects that must exist before the kill, so that it lands mid-way through the records.
#: Effects become visible a transaction at a time, so the kill most likely finds one
#: open: its records are lost with it and must be applied, once, by the restart.
KILL_AFTER = 350


class MakeTopics(Protocol):
    async def __call__(self, n: int = 1, *, partitions: int = 1) -> list[str]: ...


def contact_record(topic: str) -> OutgoingRecord:
    contact_id = str(uuid.uuid4())
    event = ContactEvent(
        contact_created=ContactCreated(
            contact=Contact(id=contact_id, company_id="company-1", phone_e164="+5511999990000")
        )
    )
    event.envelope.CopyFrom(new_envelope(event_type_of(event), "company-1", "tests"))
    return OutgoingRecord(
        topic, contact_id.encode(), event.SerializeToString(), record_headers(event.envelope)
    )


class Worker:
    """One consumer_worker.py process; stderr goes to a file shown when something fails."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=stderr
            )

    def diagnostics(self) -> str:
        return f"worker exit code {self.process.poll()}; stderr:\n{self.log.read_text()[-3000:]}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self) -> dict[str, int]:
        """Stop gracefully and return the outcome counts it prints."""
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, self.diagnostics()
        counts: dict[str, int] = json.loads(stdout.decode().strip().splitlines()[-1])
        return counts


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, worker: Worker, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert worker.process.poll() is None, f"worker died waiting for {what}: " + (
            worker.diagnostics()
        )
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        await asyncio.sleep(0.02)


async def effects_per_partition(connection: asyncpg.Connection) -> dict[int, int]:
    try:
        rows = await connection.fetch(
            f"SELECT partition, count(*) AS n FROM {EFFECTS_TABLE} GROUP BY partition"
        )
    except asyncpg.UndefinedTableError:
        return {}
    return {row["partition"]: row["n"] for row in rows}


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        offsets = {}
        for partition in range(PARTITIONS):
            offset = await consumer.committed(TopicPartition(topic, partition))
            offsets[partition] = offset or 0
        return offsets
    finally:
        await consumer.stop()


async def test_a_killed_consumer_leaves_every_record_applied_exactly_once(
    kafka_bootstrap: str, database_url: str, kafka_topics: MakeTopics, tmp_path: Path
) -> None:
    (topic,) = await kafka_topics(1, partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:12]}"
    dlq = await ensure_topics(
        kafka_bootstrap, [TopicSpec(f"{group}.dlq", PARTITIONS, 1, 3_600_000)], replication_factor=1
    )
    async with KafkaPublisher(kafka_bootstrap, client_id="sigkill-test") as publisher:
        await publisher.publish([contact_record(topic) for _ in range(RECORDS)])
    args = [
        *("--bootstrap", kafka_bootstrap, "--db", database_url),
        *("--topic", topic, "--group", group, "--delay-ms", "2"),
    ]
    log = tmp_path / "worker.log"
    connection = await asyncpg.connect(database_url)
    first = second = None
    try:
        first = Worker(log, *args)

        async def some_applied() -> bool:
            return sum((await effects_per_partition(connection)).values()) >= KILL_AFTER

        await wait_until(some_applied, f"{KILL_AFTER} effects", first, timeout_s=60)
        first.kill()
        at_kill = await effects_per_partition(connection)
        committed_at_kill = await committed_offsets(kafka_bootstrap, group, topic)
        applied_at_kill = sum(at_kill.values())
        assert applied_at_kill < RECORDS, "the kill landed after the last record"
        for partition, committed in committed_at_kill.items():
            assert committed <= at_kill.get(partition, 0), (
                f"partition {partition}: offset {committed} committed but only "
                f"{at_kill.get(partition, 0)} effects applied"
            )

        second = Worker(log, *args)

        async def all_applied() -> bool:
            return sum((await effects_per_partition(connection)).values()) >= RECORDS

        await wait_until(all_applied, f"{RECORDS} effects", second, timeout_s=120)
        counts = second.terminate()
        rows = await connection.fetch(
            f"SELECT event_id, count(*) AS n FROM {EFFECTS_TABLE} GROUP BY event_id"
        )
    finally:
        await connection.close()
        for worker in (first, second):
            if worker is not None:
                worker.kill()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(dlq)
        finally:
            await admin.close()

    processed_uncommitted = applied_at_kill - sum(committed_at_kill.values())
    print(
        f"\nSIGKILL after {applied_at_kill} of {RECORDS} effects "
        f"(offsets committed for {sum(committed_at_kill.values())}); "
        f"restart: handled {counts['handled']}, redelivered and skipped as duplicates "
        f"{counts['duplicate']} (applied but uncommitted at the kill: {processed_uncommitted})"
    )
    doubled = [(str(row["event_id"]), row["n"]) for row in rows if row["n"] != 1]
    assert doubled == [], f"events applied more than once: {doubled[:10]}"
    assert len(rows) == RECORDS
    assert counts["handled"] == RECORDS - applied_at_kill
    assert counts["duplicate"] >= processed_uncommitted, (
        "every record applied but not committed before the kill must be redelivered and skipped"
    )
    assert counts["dead_lettered"] == counts["retried"] == 0
