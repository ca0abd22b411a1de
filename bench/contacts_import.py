"""Contacts import benchmark: a 100k-row CSV with about 5% bad rows, imported twice.

``make bench-contacts-import`` (``python -m bench.contacts_import``) on the servers of
the local stack (embedded unless ``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``REDIS_URL`` are
set):

1. generates the file on disk, deterministically (``--seed``): valid Brazilian mobiles in
   the usual spellings, a custom choice field, tags; about 5% of the rows bad in one of
   four ways: invalid phone, bad e-mail, a value that is not one of the custom field's
   options, a phone an earlier valid row already has (spelled differently);
2. migrates a fresh database, stores the upload (``create_job``) and runs the job in this
   process (``ImportJobRunner``, the worker's loop body, batches of
   ``import_batch_size``);
3. verifies the outcome exactly: the report has one line per bad row with its row
   number, column, code and reason; every good row is one contact;
4. refreshes the statistics of ``contacts`` (``ANALYZE``, which autovacuum would do
   shortly after the bulk insert), imports the same file again (idempotent: 0 created,
   every good row unchanged, same report) and verifies again;
5. relays the outbox to the broker and checks that one ``ContactCreated`` per contact
   and one ``ContactImportCompleted`` per job were published.

It prints rows/s of each import and the RSS high-water of this process (it does the
import). tracemalloc slows Python down several times and costs memory itself, so the two
timed imports run without it, and a third import of the same file, for another company
(a first import again), measures the tracemalloc peak: the most Python memory the job
held at once. ``--no-tracemalloc`` skips that pass. Nothing here passes or fails on a
time: a wrong outcome raises.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import resource
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from contacts.adapters.orm import contacts
from contacts.bootstrap import MIGRATIONS
from contacts.config import ContactsSettings
from contacts.domain.import_jobs import ImportJob, ImportOptions, JobStatus
from contacts.domain.model import CustomFieldDefinition, FieldType
from contacts.service_layer import imports
from contacts.service_layer.imports import ImportJobRunner, RunResult, Upload
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.db import Database
from esquadrao_common.events import payload_name
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.migrations import upgrade
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.relay import OutboxRelay
from esquadrao_devstack.stack import LocalStack, StackConfig
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text

from bench.support import drop_database, fresh_database

COMPANY = "bench-import"
#: The company of the traced import: a first import too, into a table that is not empty.
TRACED_COMPANY = "bench-import-traced"
BLOCO = CustomFieldDefinition(key="bloco", label="Bloco", type=FieldType.CHOICE, options=("A", "B"))
#: Kinds of bad rows, equally likely.
BAD_KINDS = ("phone", "email", "custom", "duplicate")
MIB = 1024 * 1024
#: Brazilian area codes (DDD) the generated mobiles are spread over.
AREA_CODES = (11, 21, 31, 41, 51, 61, 71, 81, 85, 91, 27, 47, 48, 62, 19, 16)

#: Wide enough for the figures table when the output is not a terminal (``make`` logs).
console = Console(width=max(Console().width, 150))


@dataclass(frozen=True)
class Expected:
    """What importing the generated file must give."""

    rows: int
    good_phones: set[str]
    #: (row, column, code, reason) of every report line, in row order.
    report: list[tuple[int, str, str, str]]

    def count(self, code: str) -> int:
        return sum(1 for line in self.report if line[2] == code)


def _phone(n: int, rng: random.Random) -> tuple[str, str]:
    """Contact ``n``'s mobile in one of the spellings people use, and its E.164 form."""
    area = AREA_CODES[n % len(AREA_CODES)]
    number = 80_000_000 + n
    national = f"9{number}"
    spelling = rng.randrange(4)
    if spelling == 0:
        written = f"({area}) {national[:5]}-{national[5:]}"
    elif spelling == 1:
        written = f"{area}{national}"
    elif spelling == 2:
        written = f"+55 {area} {national[:5]} {national[5:]}"
    else:
        written = f"0{area} {national}"
    return written, f"+55{area}{national}"


def generate(path: Path, rows: int, bad_ratio: float, seed: int) -> Expected:
    """Write the CSV to ``path`` row by row; what importing it must give."""
    rng = random.Random(seed)
    good: set[str] = set()
    first_rows: list[tuple[int, str]] = []  # (row, e164) of valid rows, for duplicates
    report: list[tuple[int, str, str, str]] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Nome;Celular;E-mail;Bloco;Tags;Cargo\r\n")
        for n in range(rows):
            row = n + 2
            written, e164 = _phone(n, rng)
            email, bloco = f"pessoa{n}@example.com.br", "AB"[rng.randrange(2)]
            kind = rng.choice(BAD_KINDS) if rng.random() < bad_ratio and first_rows else None
            if kind == "phone":
                written = f"{rng.randrange(1000, 99999)}"
                report.append((row, "Celular", "invalid", "the phone is too short"))
            elif kind == "email":
                email = f"pessoa{n}.example.com"
                report.append((row, "E-mail", "invalid", f"{email!r} is not an e-mail address"))
            elif kind == "custom":
                bloco = "Z"
                report.append((row, "Bloco", "invalid", "'Z' is not one of A, B"))
            elif kind == "duplicate":
                first_row, e164 = first_rows[rng.randrange(len(first_rows))]
                written = e164
                reason = f"same phone as row {first_row}, which is the one imported"
                report.append((row, "Celular", "duplicate", reason))
            else:
                good.add(e164)
                first_rows.append((row, e164))
            tags = "importado|lote " + str(n % 7)
            out.write(f"Pessoa {n};{written};{email};{bloco};{tags};morador\r\n")
    return Expected(rows=rows, good_phones=good, report=report)


@dataclass(frozen=True)
class Run:
    name: str
    company: str
    job: ImportJob
    upload_seconds: float
    import_seconds: float
    rss_before_mib: float
    rss_peak_mib: float
    tracemalloc_peak_mib: float | None

    @property
    def rows_per_second(self) -> float:
        return self.job.counts.processed / self.import_seconds


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


def _rss_high_water_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def import_once(
    name: str,
    company: str,
    new_uow: Callable[[], ContactsUnitOfWork],
    path: Path,
    settings: ContactsSettings,
    trace: bool,
) -> Run:
    """Upload the file and run its job to the end; the figures of this run."""
    started = time.perf_counter()
    with path.open("rb") as file:
        queued = await imports.create_job(
            new_uow,
            company_id=company,
            created_by="bench",
            upload=Upload(filename=path.name, file=io.BufferedReader(file)),
            mapping=None,
            options=ImportOptions(),
            max_bytes=settings.import_max_bytes,
        )
    upload_seconds = time.perf_counter() - started
    runner = ImportJobRunner(
        new_uow, batch_size=settings.import_batch_size, default_region=settings.default_region
    )
    rss_before = _rss_mib()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    lease = await runner.lease()
    assert lease is not None and lease.job.id == queued.id
    result = await runner.run(lease, lambda: False)
    import_seconds = time.perf_counter() - started
    traced_peak = None
    if trace:
        traced_peak = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    if result is not RunResult.COMPLETED:
        raise AssertionError(f"the import ended {result.value}")
    job = await imports.get_job(new_uow, company, queued.id)
    return Run(
        name=name,
        company=company,
        job=job,
        upload_seconds=upload_seconds,
        import_seconds=import_seconds,
        rss_before_mib=rss_before,
        rss_peak_mib=_rss_high_water_mib(),
        tracemalloc_peak_mib=traced_peak,
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def verify(
    database: Database,
    new_uow: Callable[[], ContactsUnitOfWork],
    run: Run,
    expected: Expected,
    *,
    first: bool,
) -> None:
    """The job's outcome is exactly what the file says (raises AssertionError if not)."""
    counts = run.job.counts
    good = len(expected.good_phones)
    errors = len(expected.report) - expected.count("duplicate")
    _check(run.job.status is JobStatus.COMPLETED, f"{run.name}: status {run.job.status}")
    _check(counts.processed == expected.rows, f"{run.name}: processed {counts.processed}")
    _check(counts.errors == errors, f"{run.name}: errors {counts.errors} != {errors}")
    if first:
        _check((counts.created, counts.updated) == (good, 0), f"{run.name}: {counts}")
        _check(counts.skipped == expected.count("duplicate"), f"{run.name}: {counts}")
    else:
        _check((counts.created, counts.updated, counts.unchanged) == (0, 0, good), f"{counts}")
    report = [
        (line.row, line.column, line.code, line.reason)
        async for line in imports.report_of(new_uow, run.job)
    ]
    _check(report == expected.report, f"{run.name}: the report differs from the bad rows")
    async with database.sessionmaker() as session:
        phones = set(
            await session.scalars(
                select(contacts.c.phone_e164).where(contacts.c.company_id == run.company)
            )
        )
        total = await session.scalar(
            select(func.count()).where(contacts.c.company_id == run.company)
        )
    _check(phones == expected.good_phones, f"{run.name}: the contacts differ from the good rows")
    _check(total == good, f"{run.name}: {total} contacts for {good} good rows")


async def analyze_contacts(database: Database) -> None:
    """Refresh the planner's statistics of ``contacts``, as autovacuum does within a minute
    of a bulk change, so the next import is measured with the plans a running database
    has rather than with the statistics of an empty table."""
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE contacts"))


async def event_counts(database: Database) -> dict[str, int]:
    """Outbox events of the benchmark's companies by payload, and how many are unsent."""
    counts: dict[str, int] = {"unsent": 0}
    async with database.sessionmaker() as session:
        rows = await session.stream(
            select(outbox_table.c.value, outbox_table.c.sent_at).where(
                outbox_table.c.company_id.in_((COMPANY, TRACED_COMPANY))
            )
        )
        async for row in rows:
            name = payload_name(ContactEvent.FromString(row.value))
            counts[name] = counts.get(name, 0) + 1
            counts["unsent"] += row.sent_at is None
    return counts


async def bench(args: argparse.Namespace, run_dir: Path) -> tuple[list[Run], dict[str, int]]:
    csv_path = run_dir / "contatos-100k.csv"
    started = time.perf_counter()
    expected = generate(csv_path, args.rows, args.bad_ratio, args.seed)
    console.print(
        f"generated {args.rows:,} rows ({len(expected.report):,} bad, "
        f"{csv_path.stat().st_size / MIB:.1f} MiB) in {time.perf_counter() - started:.1f}s"
    )
    stack = LocalStack(run_dir, StackConfig.from_env(), create_databases=False, durable=False)
    async with stack:
        url = await fresh_database(stack.postgres_url, "bench_import")
        settings = ContactsSettings(
            database_url=url, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url
        )
        database = Database(url, pool_size=4)
        try:
            await asyncio.to_thread(upgrade, MIGRATIONS, url)

            def new_uow() -> ContactsUnitOfWork:
                return ContactsUnitOfWork(database)

            async with new_uow() as uow:
                for company in (COMPANY, TRACED_COMPANY):
                    await uow.fields.put(company, BLOCO, datetime.now(UTC))
                await uow.commit()
            passes = [
                ("first import", COMPANY, True, False),
                ("same file again", COMPANY, False, False),
            ]
            if args.tracemalloc:
                passes.append(("first import, traced", TRACED_COMPANY, True, True))
            runs = []
            for name, company, first, trace in passes:
                run = await import_once(name, company, new_uow, csv_path, settings, trace)
                await verify(database, new_uow, run, expected, first=first)
                runs.append(run)
                await analyze_contacts(database)
            async with KafkaPublisher(stack.kafka_bootstrap) as publisher:
                relay = OutboxRelay(database, publisher, service="bench", batch_size=1000)
                await relay.ensure_lanes()
                await relay.publish_pending()
            events = await event_counts(database)
            good = len(expected.good_phones)
            firsts = sum(1 for run in runs if run.job.counts.created)
            _check(events.get("contact_created") == good * firsts, f"events: {events}")
            _check(events.get("contact_import_completed") == len(runs), f"events: {events}")
            _check(events["unsent"] == 0, f"events not published: {events}")
        finally:
            await database.dispose()
            await drop_database(stack.postgres_url, url)
    return runs, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="data rows in the file")
    parser.add_argument("--bad-ratio", type=float, default=0.05, help="share of bad rows")
    parser.add_argument("--seed", type=int, default=20250301, help="seed of the generator")
    parser.add_argument(
        "--tracemalloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="import the file for another company with tracemalloc on, for its peak (slow)",
    )
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-import-"))
    run_dir.chmod(0o755)  # the embedded Postgres may run as an unprivileged account
    try:
        runs, events = asyncio.run(bench(args, run_dir))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    table = Table(
        title=f"Contacts import ({os.cpu_count()} cores, batches of "
        f"{ContactsSettings.model_fields['import_batch_size'].default})",
        title_justify="left",
    )
    for column in (
        "run",
        "rows",
        "created",
        "unchanged",
        "skipped",
        "errors",
        "upload s",
        "import s",
        "rows/s",
        "RSS before",
        "RSS peak",
        "tracemalloc peak",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    for run in runs:
        counts = run.job.counts
        table.add_row(
            run.name,
            f"{counts.processed:,}",
            f"{counts.created:,}",
            f"{counts.unchanged:,}",
            f"{counts.skipped:,}",
            f"{counts.errors:,}",
            f"{run.upload_seconds:.2f}",
            f"{run.import_seconds:.2f}",
            f"{run.rows_per_second:,.0f}",
            f"{run.rss_before_mib:.0f} MiB",
            f"{run.rss_peak_mib:.0f} MiB",
            "-" if run.tracemalloc_peak_mib is None else f"{run.tracemalloc_peak_mib:.1f} MiB",
        )
    console.print(table)
    console.print(
        "verified: report exact, every good row one contact, "
        f"{events['contact_created']:,} ContactCreated and "
        f"{events['contact_import_completed']} ContactImportCompleted published "
        f"({events['unsent']} unsent)"
    )


if __name__ == "__main__":
    main()
