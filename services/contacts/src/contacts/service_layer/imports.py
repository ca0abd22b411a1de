"""Contact import jobs: accepting an upload, and running a job to its end.

:func:`create_job` checks an upload (format, size, and the column mapping against the
file's header and the company's custom fields), stores the file in the database and queues
the job, all in one transaction; it wakes the workers with ``NOTIFY`` on commit. It never
reads more than the first rows of the file: the rows are the job's business.

:class:`ImportJobRunner` is what a worker does with a job: lease it, stream its rows
through :func:`~contacts.domain.importing.parse_rows`, and commit them in batches of
``batch_size`` rows. Each batch is one transaction holding its contacts (through
:func:`~contacts.service_layer.contacts.upsert_drafts`, which stages their events), its
report lines, its counts and the row the job has reached, so:

* a job resumed by another worker (this one died: its heartbeat went stale) reads the
  file again from the start but applies only rows after ``last_row``: totals stay exact,
  no row is counted or reported twice;
* a stopping worker finishes the batch in hand and gives the job back to the queue;
* a worker that lost its lease (it stalled long enough for another to take over) finds
  out at its next batch, whose transaction it then rolls back.

Parsing is CPU work and reading the file's chunks is database work: the rows are parsed in
a thread (``asyncio.to_thread``) that asks the event loop for each chunk, so the loop keeps
serving heartbeats (and, in a single-process deployment, API requests) meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import PurePath
from typing import IO, Final, TypeAlias

from contacts.adapters import import_store
from contacts.domain.events import TOPIC, contact_import_completed, event_key
from contacts.domain.import_jobs import (
    ImportFormat,
    ImportJob,
    ImportOptions,
    JobStatus,
    ReportLine,
    RowResult,
    tally_batch,
)
from contacts.domain.importing import (
    AcceptedRow,
    ImportFileError,
    ImportMappingError,
    Row,
    RowOutcome,
    iter_csv_rows,
    iter_xlsx_rows,
    parse_rows,
    resolve_columns,
)
from contacts.domain.model import CustomFieldDefinition, definitions_by_key
from contacts.domain.optout import ConsentSource
from contacts.service_layer import lists
from contacts.service_layer.contacts import (
    UpsertOutcome,
    load_definitions,
    upsert_drafts,
)
from contacts.service_layer.errors import DraftRejected, NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

log = logging.getLogger(__name__)

#: File name endings read as CSV (text tables, whatever the separator).
CSV_SUFFIXES: Final = frozenset({".csv", ".txt", ".tsv"})
#: First bytes of a ZIP archive, which an XLSX workbook is.
_ZIP_MAGIC: Final = b"PK\x03\x04"
#: Report lines read per page (and per transaction) by :func:`report_of`.
REPORT_PAGE_SIZE: Final = 1000
#: How long a worker waits for one chunk of a file from the database.
_CHUNK_TIMEOUT: Final = 120.0

#: Makes a new, not yet entered unit of work.
UnitOfWorkFactory: TypeAlias = Callable[[], ContactsUnitOfWork]

_UPSERT_RESULTS: Final = {
    UpsertOutcome.CREATED: RowResult.CREATED,
    UpsertOutcome.UPDATED: RowResult.UPDATED,
    UpsertOutcome.UNCHANGED: RowResult.UNCHANGED,
}


class UploadRejected(Exception):
    """An upload that cannot become a job: ``field`` names the form field at fault
    (``file``, ``format``, ``list_id``), ``status`` is 422, or 413 for a file too large."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its name as the client sent it, and a seekable binary stream
    (the request's spooled temporary file). ``format`` overrides the detection."""

    filename: str
    file: IO[bytes]
    format: ImportFormat | None = None


def detect_format(filename: str, head: bytes, declared: ImportFormat | None) -> ImportFormat:
    """The format of an upload: ``declared`` if given, else by the file name's ending
    (``.xlsx``; ``.csv``, ``.txt``, ``.tsv``), else by content (a ZIP archive is a
    workbook). Raises UploadRejected for the old binary ``.xls``, which cannot be
    streamed."""
    if declared is not None:
        return declared
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".xls":
        raise UploadRejected(
            "file", "old .xls workbooks are not supported: save the sheet as .xlsx or .csv"
        )
    if suffix == ".xlsx":
        return ImportFormat.XLSX
    if suffix in CSV_SUFFIXES:
        return ImportFormat.CSV
    return ImportFormat.XLSX if head.startswith(_ZIP_MAGIC) else ImportFormat.CSV


def _rows_of(file: IO[bytes], format: ImportFormat) -> Generator[tuple[int, Row], None, None]:
    """The data rows of the file; closing the generator closes the reader (a workbook)."""
    yield from iter_xlsx_rows(file) if format is ImportFormat.XLSX else iter_csv_rows(file)


def _header_of(file: IO[bytes], format: ImportFormat) -> list[str] | None:
    """The header of the file's table, read from its first data row (None when the file
    has a header and no data rows); the stream is rewound afterwards."""
    file.seek(0)
    rows = _rows_of(file, format)
    try:
        first = next(rows, None)
    finally:
        rows.close()
        file.seek(0)
    return None if first is None else list(first[1])


async def create_job(
    new_uow: UnitOfWorkFactory,
    *,
    company_id: str,
    created_by: str,
    upload: Upload,
    mapping: Mapping[str, str | None] | None,
    options: ImportOptions,
    max_bytes: int,
) -> ImportJob:
    """Store ``upload`` and queue a job importing it for ``company_id``.

    Raises UploadRejected (a file that is not a table, too large, an unknown list) and
    ImportMappingError (the mapping, or header matching, cannot work with this file's
    header and the company's custom fields) before anything is stored.
    """
    head = upload.file.read(len(_ZIP_MAGIC))
    format = detect_format(upload.filename, head, upload.format)
    try:
        header = await asyncio.to_thread(_header_of, upload.file, format)
    except ImportFileError as error:
        raise UploadRejected("file", str(error)) from None
    job_id = str(uuid.uuid4())
    async with new_uow() as uow:
        definitions = definitions_by_key(await load_definitions(uow, company_id))
        if header is not None:
            resolve_columns(header, definitions, mapping)
        if options.list_id is not None and not await uow.lists.get(company_id, options.list_id):
            raise UploadRejected("list_id", f"there is no contact list {options.list_id}")
        await import_store.insert_job(
            uow.session,
            job_id=job_id,
            company_id=company_id,
            created_by=created_by,
            format=format,
            filename=upload.filename[:255],
            mapping=mapping,
            options=options,
        )
        try:
            stored = await import_store.write_file(
                uow.session,
                job_id,
                lambda size: asyncio.to_thread(upload.file.read, size),
                max_bytes=max_bytes,
            )
        except import_store.FileTooLarge as error:
            raise UploadRejected("file", str(error), status=413) from None
        total_rows = max(0, stored.lines - 1) if format is ImportFormat.CSV else None
        await import_store.set_file_size(uow.session, job_id, stored.byte_size, total_rows)
        await import_store.notify_workers(uow.session, job_id)
        job = await import_store.get_job(uow.session, company_id, job_id)
        await uow.commit()
    assert job is not None
    return job


async def get_job(new_uow: UnitOfWorkFactory, company_id: str, job_id: str) -> ImportJob:
    """The company's job; NotFoundError when there is none with this id (another
    company's included)."""
    async with new_uow() as uow:
        job = await import_store.get_job(uow.session, company_id, job_id)
    if job is None:
        raise NotFoundError("import job", job_id)
    return job


async def list_jobs(
    new_uow: UnitOfWorkFactory, company_id: str, *, cursor: str | None, limit: int
) -> tuple[list[ImportJob], str | None]:
    """One page of the company's jobs, newest first, and the cursor of the next."""
    async with new_uow() as uow:
        page = await import_store.list_jobs(uow.session, company_id, cursor=cursor, limit=limit)
    return page.items, page.next_cursor


async def report_of(
    new_uow: UnitOfWorkFactory, job: ImportJob, *, page_size: int = REPORT_PAGE_SIZE
) -> AsyncIterator[ReportLine]:
    """The report lines of ``job`` (got from :func:`get_job`), in row order, read in
    pages of ``page_size``, each in its own short transaction."""
    after: tuple[int, int] | None = None
    while True:
        async with new_uow() as uow:
            lines = await import_store.report_page(
                uow.session, job.id, after=after, limit=page_size
            )
        for line in lines:
            yield line
        if len(lines) < page_size:
            return
        after = (lines[-1].row, lines[-1].seq)


class RunResult(StrEnum):
    """How a run of a job ended."""

    #: Every row was read; the job is completed and its event staged.
    COMPLETED = "completed"
    #: The file or its mapping cannot be read; the job is failed.
    FAILED = "failed"
    #: The worker stopped; the job is queued again, resumable from its last batch.
    RELEASED = "released"
    #: Another worker took the job over; this run's last batch was rolled back.
    LOST = "lost"


@dataclass(frozen=True)
class Lease:
    """A job held by one run of a worker: every write is conditioned on ``lease_id``."""

    job: ImportJob
    lease_id: str


class _LeaseLost(Exception):
    pass


class _HeaderProbe:
    """Passes rows through, remembering the header (the keys of the first data row)."""

    def __init__(self, rows: Iterator[tuple[int, Row]]) -> None:
        self._rows = rows
        self.header: list[str] | None = None

    def __iter__(self) -> Iterator[tuple[int, Row]]:
        for row_number, row in self._rows:
            if self.header is None:
                self.header = list(row)
            yield row_number, row


def _close_quietly(rows: Generator[tuple[int, Row], None, None]) -> None:
    """Close a reader (a workbook's file handles). Only a cancelled run leaves it running
    in its thread, which then finishes its batch and lets it be collected."""
    with contextlib.suppress(ValueError):
        rows.close()


def _take(outcomes: Iterator[RowOutcome], size: int, after_row: int) -> list[RowOutcome]:
    """The next ``size`` outcomes of rows after ``after_row`` (fewer at the end)."""
    batch: list[RowOutcome] = []
    for outcome in outcomes:
        if outcome.row <= after_row:
            continue
        batch.append(outcome)
        if len(batch) >= size:
            break
    return batch


class ImportJobRunner:
    """Leases and runs import jobs (see the module docstring).

    ``stale_after``: a running job whose heartbeat is older is taken over (its worker is
    presumed dead), so it must be well above the worker's heartbeat interval.
    ``max_attempts``: a job whose runs ended without a word that many times (workers that
    died on it, perhaps because of it) is failed when leased again, rather than tried
    forever; a run given back by a stopping worker does not count.
    """

    def __init__(
        self,
        new_uow: UnitOfWorkFactory,
        *,
        batch_size: int,
        default_region: str,
        stale_after: timedelta = timedelta(seconds=60),
        max_attempts: int = 5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.new_uow = new_uow
        self.batch_size = batch_size
        self.default_region = default_region
        self.stale_after = stale_after
        self.max_attempts = max_attempts
        self.clock = clock

    async def lease(self) -> Lease | None:
        """Take the next job to run (None if there is none); a job that has used up its
        attempts is failed instead."""
        while True:
            lease_id = str(uuid.uuid4())
            async with self.new_uow() as uow:
                job = await import_store.lease_job(
                    uow.session, lease_id=lease_id, stale_after=self.stale_after
                )
                if job is None:
                    return None
                if job.attempts <= self.max_attempts:
                    await uow.commit()
                    return Lease(job, lease_id)
                await import_store.finish_job(
                    uow.session,
                    job.id,
                    JobStatus.FAILED,
                    error=f"the job was interrupted {self.max_attempts} times; giving up",
                )
                await uow.commit()
            log.error("import job %s failed after %d attempts", job.id, self.max_attempts)

    async def heartbeat(self, lease: Lease) -> bool:
        """Show the job is alive; False when this lease no longer holds it."""
        async with self.new_uow() as uow:
            held = await import_store.claim(uow.session, lease.job.id, lease.lease_id)
            await uow.commit()
        return held

    async def run(self, lease: Lease, should_stop: Callable[[], bool]) -> RunResult:
        """Run the leased job until its end, or until ``should_stop()`` is true after a
        batch. Raises what the database raises (the job stays leased and becomes stale,
        to be resumed by another run)."""
        job = lease.job
        try:
            definitions = await self._definitions(job.company_id)
            async with self._rows(job) as rows:
                probe = _HeaderProbe(rows)
                outcomes = parse_rows(probe, definitions, job.mapping, self.default_region)
                return await self._run_batches(lease, definitions, probe, outcomes, should_stop)
        except (ImportFileError, ImportMappingError, NotFoundError) as error:
            return await self._fail(lease, str(error))
        except _LeaseLost:
            log.warning("import job %s was taken over by another worker", job.id)
            return RunResult.LOST

    async def _run_batches(
        self,
        lease: Lease,
        definitions: Mapping[str, CustomFieldDefinition],
        probe: _HeaderProbe,
        outcomes: Iterator[RowOutcome],
        should_stop: Callable[[], bool],
    ) -> RunResult:
        last_row = lease.job.last_row
        phone_column: str | None = None
        while batch := await asyncio.to_thread(_take, outcomes, self.batch_size, last_row):
            if phone_column is None:
                assert probe.header is not None
                columns = resolve_columns(probe.header, definitions, lease.job.mapping)
                phone_column = columns.column_of("phone") or ""
            await self._commit_batch(lease, batch, phone_column)
            last_row = batch[-1].row
            if should_stop():
                await self._release(lease)
                return RunResult.RELEASED
        await self._complete(lease)
        return RunResult.COMPLETED

    async def _definitions(self, company_id: str) -> dict[str, CustomFieldDefinition]:
        async with self.new_uow() as uow:
            return definitions_by_key(await load_definitions(uow, company_id))

    @contextlib.asynccontextmanager
    async def _rows(self, job: ImportJob) -> AsyncIterator[Iterator[tuple[int, Row]]]:
        """The job's data rows, read lazily from the stored chunks (CSV), or from a
        temporary copy of the file (XLSX, which openpyxl must seek in). The reader is
        closed on leaving, before the temporary file goes."""
        with contextlib.ExitStack() as stack:
            if job.format is ImportFormat.CSV:
                loop = asyncio.get_running_loop()

                def fetch(chunk_no: int) -> bytes | None:
                    future = asyncio.run_coroutine_threadsafe(
                        self._read_chunk(job.id, chunk_no), loop
                    )
                    return future.result(timeout=_CHUNK_TIMEOUT)

                source: IO[bytes] = io.BufferedReader(import_store.ChunkedFile(fetch))
            else:
                source = stack.enter_context(tempfile.TemporaryFile(prefix="contacts-import-"))
                await import_store.spool_file(
                    lambda chunk_no: self._read_chunk(job.id, chunk_no), source
                )
            rows = _rows_of(source, job.format)
            stack.callback(_close_quietly, rows)
            yield rows

    async def _read_chunk(self, job_id: str, chunk_no: int) -> bytes | None:
        async with self.new_uow() as uow:
            return await import_store.read_chunk(uow.session, job_id, chunk_no)

    async def _commit_batch(
        self, lease: Lease, batch: Sequence[RowOutcome], phone_column: str
    ) -> None:
        """One transaction: the batch's contacts (and their events), its list memberships,
        report lines, counts and the row reached; nothing of it if the lease is lost."""
        job = lease.job
        now = self.clock()
        async with self.new_uow() as uow:
            if not await import_store.claim(uow.session, job.id, lease.lease_id):
                raise _LeaseLost
            accepted = [outcome for outcome in batch if isinstance(outcome, AcceptedRow)]
            results: dict[int, RowResult] = {}
            members: list[str] = []
            if not job.options.update_existing and accepted:
                existing = await uow.contacts.lock_by_phones(
                    job.company_id, [row.draft.phone_e164 for row in accepted]
                )
                for row in accepted:
                    contact = existing.get(row.draft.phone_e164)
                    if contact is not None:
                        results[row.row] = RowResult.EXISTS
                        members.append(contact.id)
                accepted = [row for row in accepted if row.row not in results]
            refusals = await self._upsert(uow, job, accepted, now, results, members)
            if job.options.list_id is not None and members:
                await lists.add_members(
                    uow,
                    job.company_id,
                    job.options.list_id,
                    members,
                    now=now,
                    correlation_id=job.id,
                )
            tally = tally_batch(batch, results, phone_column=phone_column, refusals=refusals)
            await import_store.record_batch(
                uow.session,
                job.id,
                counts=tally.counts,
                last_row=batch[-1].row,
                report=tally.report,
            )
            await uow.commit()

    async def _upsert(
        self,
        uow: ContactsUnitOfWork,
        job: ImportJob,
        accepted: list[AcceptedRow],
        now: datetime,
        results: dict[int, RowResult],
        members: list[str],
    ) -> dict[int, str]:
        """Upsert the accepted rows, filling ``results`` and ``members``; returns the rows
        their contact refused (row → reason). A refused row is dropped and the rest of the
        batch upserted again: :func:`upsert_drafts` writes nothing when it refuses one."""
        refusals: dict[int, str] = {}
        pending = list(accepted)
        while pending:
            try:
                upserted = await upsert_drafts(
                    uow,
                    job.company_id,
                    [row.draft for row in pending],
                    now=now,
                    source=ConsentSource.IMPORT,
                    correlation_id=job.id,
                )
            except DraftRejected as error:
                refused = pending.pop(error.index)
                refusals[refused.row] = "; ".join(issue.message for issue in error.issues)
                continue
            for row, result in zip(pending, upserted, strict=True):
                results[row.row] = _UPSERT_RESULTS[result.outcome]
                members.append(result.contact_id)
            break
        return refusals

    async def _complete(self, lease: Lease) -> None:
        async with self.new_uow() as uow:
            if not await import_store.claim(uow.session, lease.job.id, lease.lease_id):
                raise _LeaseLost
            job = await import_store.finish_job(uow.session, lease.job.id, JobStatus.COMPLETED)
            assert job.finished_at is not None
            event = contact_import_completed(
                company_id=job.company_id,
                job_id=job.id,
                processed=job.counts.processed,
                created=job.counts.created,
                updated=job.counts.updated,
                skipped=job.counts.skipped,
                errors=job.counts.errors,
                occurred_at=job.finished_at,
                correlation_id=job.id,
            )
            uow.stage(TOPIC, event_key(event), event)
            await uow.commit()
        log.info("import job %s completed: %s", job.id, job.counts)

    async def _fail(self, lease: Lease, error: str) -> RunResult:
        async with self.new_uow() as uow:
            if not await import_store.claim(uow.session, lease.job.id, lease.lease_id):
                return RunResult.LOST
            await import_store.finish_job(uow.session, lease.job.id, JobStatus.FAILED, error=error)
            await uow.commit()
        log.warning("import job %s failed: %s", lease.job.id, error)
        return RunResult.FAILED

    async def _release(self, lease: Lease) -> None:
        async with self.new_uow() as uow:
            await import_store.release_job(uow.session, lease.job.id, lease.lease_id)
            await uow.commit()
