"""Import jobs on Postgres, around failures: a worker that dies mid-job, one that stops,
one that lost its lease, a job that keeps killing workers, a mapping that no longer fits;
and the worker loop woken by NOTIFY. Totals and reports must stay exact throughout."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from contacts.adapters import import_store
from contacts.adapters.import_tables import import_files
from contacts.adapters.orm import contacts
from contacts.domain.import_jobs import (
    ImportCounts,
    ImportFormat,
    ImportJob,
    ImportOptions,
    JobStatus,
)
from contacts.domain.model import CustomFieldDefinition, FieldType
from contacts.entrypoints.import_worker import ImportWorker
from contacts.service_layer import imports
from contacts.service_layer.imports import ImportJobRunner, RunResult, Upload
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.db import Database
from esquadrao_common.events import payload_name
from esquadrao_common.platform_tables import outbox_table
from sqlalchemy import func, select

pytestmark = pytest.mark.integration

ROWS = 1000
GOOD = 800
#: Rows 2 + n: every 10th invalid, every 10th + 5 a repeat of the row before.
EXPECTED = ImportCounts(processed=ROWS, created=GOOD, skipped=100, errors=100)


def csv_content(rows: int = ROWS) -> bytes:
    lines = ["celular,nome"]
    for n in range(rows):
        number = n - 1 if n % 10 == 5 else n
        phone = "123" if n % 10 == 3 else f"119{80_000_000 + number}"
        lines.append(f"{phone},Pessoa {n}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Jobs:
    database: Database

    def uow(self) -> ContactsUnitOfWork:
        return ContactsUnitOfWork(self.database)

    def runner(
        self,
        batch_size: int = 100,
        *,
        stale_after: timedelta = timedelta(seconds=60),
        max_attempts: int = 5,
    ) -> ImportJobRunner:
        return ImportJobRunner(
            self.uow,
            batch_size=batch_size,
            default_region="BR",
            stale_after=stale_after,
            max_attempts=max_attempts,
        )

    async def create(
        self,
        company: str,
        content: bytes | None = None,
        *,
        mapping: dict[str, str | None] | None = None,
    ) -> ImportJob:
        return await imports.create_job(
            self.uow,
            company_id=company,
            created_by="tester",
            upload=Upload(filename="contatos.csv", file=io.BytesIO(content or csv_content())),
            mapping=mapping,
            options=ImportOptions(),
            max_bytes=10_000_000,
        )

    async def job(self, company: str, job_id: str) -> ImportJob:
        return await imports.get_job(self.uow, company, job_id)

    async def report_rows(self, company: str, job_id: str) -> list[tuple[int, str]]:
        job = await self.job(company, job_id)
        return [(line.row, line.code) async for line in imports.report_of(self.uow, job)]

    async def contact_count(self, company: str) -> tuple[int, int]:
        """(contacts, distinct phones) of the company."""
        async with self.database.sessionmaker() as session:
            row = (
                await session.execute(
                    select(func.count(), func.count(func.distinct(contacts.c.phone_e164))).where(
                        contacts.c.company_id == company
                    )
                )
            ).one()
        return int(row[0]), int(row[1])

    async def events(self, company: str, payload: str) -> list[ContactEvent]:
        async with self.database.sessionmaker() as session:
            values = await session.scalars(
                select(outbox_table.c.value)
                .where(outbox_table.c.company_id == company)
                .order_by(outbox_table.c.id)
            )
            decoded = [ContactEvent.FromString(value) for value in values]
        return [event for event in decoded if payload_name(event) == payload]

    async def assert_exact(self, company: str, job_id: str) -> None:
        """The job completed with exact totals: every row counted and reported once,
        every good phone one contact with one ContactCreated."""
        job = await self.job(company, job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.counts == EXPECTED
        expected_report = [
            (2 + n, "invalid" if n % 10 == 3 else "duplicate")
            for n in range(ROWS)
            if n % 10 in (3, 5)
        ]
        assert await self.report_rows(company, job_id) == expected_report
        assert await self.contact_count(company) == (GOOD, GOOD)
        assert len(await self.events(company, "contact_created")) == GOOD
        (completed,) = await self.events(company, "contact_import_completed")
        assert completed.contact_import_completed.processed == ROWS
        async with self.database.sessionmaker() as session:
            chunks = await session.scalar(
                select(func.count()).where(import_files.c.job_id == job_id)
            )
        assert chunks == 0


@pytest.fixture
async def jobs(migrated_database: str) -> AsyncIterator[Jobs]:
    database = Database(migrated_database, pool_size=4)
    try:
        yield Jobs(database)
    finally:
        await database.dispose()


def new_company() -> str:
    return f"co-{uuid.uuid4().hex[:10]}"


def crash_after(batches: int) -> Callable[[], bool]:
    """A ``should_stop`` that kills the run (as a dying process would) after ``batches``."""
    seen = 0

    def should_stop() -> bool:
        nonlocal seen
        seen += 1
        if seen >= batches:
            raise RuntimeError("worker killed")
        return False

    return should_stop


async def test_a_job_whose_worker_died_is_resumed_by_another_with_exact_totals(
    jobs: Jobs,
) -> None:
    company = new_company()
    created = await jobs.create(company)
    first = jobs.runner()
    lease = await first.lease()
    assert lease is not None and lease.job.id == created.id

    with pytest.raises(RuntimeError, match="worker killed"):
        await first.run(lease, crash_after(3))

    halfway = await jobs.job(company, created.id)
    assert halfway.status is JobStatus.RUNNING
    assert (halfway.last_row, halfway.counts.processed) == (301, 300)
    assert await jobs.runner().lease() is None  # its heartbeat is fresh: not taken over
    second = jobs.runner(batch_size=64, stale_after=timedelta(0))
    resumed = await second.lease()
    assert resumed is not None and resumed.job.attempts == 2
    assert await second.run(resumed, lambda: False) is RunResult.COMPLETED
    assert not await first.heartbeat(lease)
    await jobs.assert_exact(company, created.id)


async def test_a_worker_that_lost_its_lease_writes_nothing_more(jobs: Jobs) -> None:
    company = new_company()
    created = await jobs.create(company)
    slow = jobs.runner()
    stale = await slow.lease()
    assert stale is not None
    thief = jobs.runner(stale_after=timedelta(0))
    taken = await thief.lease()
    assert taken is not None and taken.job.id == created.id

    assert await slow.run(stale, lambda: False) is RunResult.LOST
    assert (await jobs.job(company, created.id)).counts == ImportCounts()
    assert await jobs.contact_count(company) == (0, 0)

    assert await thief.run(taken, lambda: False) is RunResult.COMPLETED
    await jobs.assert_exact(company, created.id)


async def test_a_job_that_keeps_killing_workers_is_failed(jobs: Jobs) -> None:
    company = new_company()
    created = await jobs.create(company)
    runner = jobs.runner(stale_after=timedelta(0), max_attempts=2)
    assert await runner.lease() is not None
    assert await runner.lease() is not None

    assert await runner.lease() is None
    failed = await jobs.job(company, created.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "the job was interrupted 2 times; giving up"
    assert failed.attempts == 3
    assert (await jobs.events(company, "contact_import_completed")) == []


async def test_a_mapping_that_no_longer_fits_fails_the_job(jobs: Jobs) -> None:
    company = new_company()
    async with jobs.uow() as uow:
        await uow.fields.put(
            company,
            CustomFieldDefinition(key="andar", label="Andar", type=FieldType.NUMBER),
            datetime.now(UTC),
        )
        await uow.commit()
    created = await jobs.create(
        company,
        b"celular,andar\n11987650001,3\n",
        mapping={"celular": "phone", "andar": "custom:andar"},
    )
    async with jobs.uow() as uow:
        await uow.fields.delete(company, "andar")
        await uow.commit()

    runner = jobs.runner()
    lease = await runner.lease()
    assert lease is not None
    assert await runner.run(lease, lambda: False) is RunResult.FAILED

    failed = await jobs.job(company, created.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "no custom field 'andar'" in failed.error
    assert failed.finished_at is not None
    assert await jobs.contact_count(company) == (0, 0)


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds (within 30 s)."""
    async with asyncio.timeout(30):
        while not await condition():
            await asyncio.sleep(0.05)


async def test_the_worker_wakes_on_notify_stops_gracefully_and_another_resumes(
    jobs: Jobs,
) -> None:
    company = new_company()
    worker = ImportWorker(jobs.database, jobs.runner(batch_size=20), poll_interval=120)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)  # listening, idle: only a notification can wake it now
    created = await jobs.create(company)

    async def started() -> bool:
        return (await jobs.job(company, created.id)).counts.processed > 0

    await wait_for(started)
    await worker.stop()
    await asyncio.wait_for(running, 30)

    stopped = await jobs.job(company, created.id)
    assert stopped.status is JobStatus.QUEUED
    assert 0 < stopped.counts.processed < ROWS
    assert stopped.counts.processed % 20 == 0
    assert stopped.last_row == stopped.counts.processed + 1
    assert stopped.attempts == 0

    successor = ImportWorker(jobs.database, jobs.runner(batch_size=150), poll_interval=0.2)
    resumed = asyncio.create_task(successor.run())

    async def completed() -> bool:
        return (await jobs.job(company, created.id)).status is JobStatus.COMPLETED

    await wait_for(completed)
    await successor.stop()
    await asyncio.wait_for(resumed, 30)
    await jobs.assert_exact(company, created.id)


async def test_store_round_trips_a_file_through_chunks(jobs: Jobs) -> None:
    content = bytes(range(256)) * 9000
    async with jobs.uow() as uow:
        await import_store.insert_job(
            uow.session,
            job_id=(job_id := str(uuid.uuid4())),
            company_id=new_company(),
            created_by="tester",
            format=ImportFormat.CSV,
            filename="x.csv",
            mapping=None,
            options=ImportOptions(),
        )
        source = io.BytesIO(content)

        async def read(size: int) -> bytes:
            return source.read(size)

        stored = await import_store.write_file(uow.session, job_id, read, max_bytes=10**7)
        await uow.commit()
    assert stored.byte_size == len(content)
    target = io.BytesIO()

    async def fetch(chunk_no: int) -> bytes | None:
        async with jobs.uow() as uow:
            return await import_store.read_chunk(uow.session, job_id, chunk_no)

    assert await import_store.spool_file(fetch, target) == len(content)
    assert target.read() == content
