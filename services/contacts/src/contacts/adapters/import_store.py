"""Storage of import jobs: the job rows, the uploaded file in chunks, the row report.

Every function takes the caller's session and neither commits nor rolls back: the service
layer decides what goes in one transaction (a batch's contacts, its counts and its report
lines always do).

The uploaded file lives in ``import_files`` as chunks of :data:`CHUNK_SIZE` bytes. A job
reads it back through :class:`ChunkedFile`, a sequential binary stream that asks for one
chunk at a time, so a file of any size is read in constant memory; for XLSX, which
openpyxl must seek in, :func:`spool_file` copies the chunks to a temporary file first.

Times of leases and heartbeats come from the database's clock (``now()``), so replicas
whose clocks disagree still agree on which job is stale.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any, Final

from esquadrao_common.pagination import KeysetPage, encode_cursor, keyset_select
from sqlalchemy import Row, and_, delete, func, insert, literal, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from contacts.adapters.import_tables import import_files, import_jobs, import_row_errors
from contacts.domain.import_jobs import (
    ImportCounts,
    ImportFormat,
    ImportJob,
    ImportOptions,
    JobStatus,
    ReportLine,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Size of the stored chunks of an uploaded file.
CHUNK_SIZE: Final = 1024 * 1024
#: ``NOTIFY`` channel on which a committed new job wakes the import workers.
IMPORT_JOBS_CHANNEL: Final = "contacts_import_jobs"


class FileTooLarge(Exception):
    """The upload is larger than the limit; nothing more of it is read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the file is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What :func:`write_file` stored: its size, and its line count (``\\n`` bytes, plus
    one for a last line without a line break), a cheap estimate of a CSV's rows."""

    byte_size: int
    lines: int


def _job_of(row: Row[Any] | Any) -> ImportJob:
    return ImportJob(
        id=str(row.id),
        company_id=row.company_id,
        created_by=row.created_by,
        status=JobStatus(row.status),
        format=ImportFormat(row.format),
        filename=row.filename,
        mapping=row.mapping,
        options=ImportOptions.from_json(row.options),
        byte_size=row.byte_size,
        total_rows=row.total_rows,
        last_row=row.last_row,
        counts=ImportCounts(
            processed=row.processed,
            created=row.created,
            updated=row.updated,
            unchanged=row.unchanged,
            skipped=row.skipped,
            errors=row.errors,
        ),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
    )


async def insert_job(
    session: AsyncSession,
    *,
    job_id: str,
    company_id: str,
    created_by: str,
    format: ImportFormat,
    filename: str,
    mapping: Mapping[str, str | None] | None,
    options: ImportOptions,
) -> None:
    """A queued job without its file yet (``byte_size`` 0 until :func:`set_file_size`)."""
    await session.execute(
        insert(import_jobs).values(
            id=job_id,
            company_id=company_id,
            created_by=created_by,
            status=JobStatus.QUEUED.value,
            format=format.value,
            filename=filename,
            mapping=dict(mapping) if mapping is not None else None,
            options=options.to_json(),
            byte_size=0,
        )
    )


async def write_file(
    session: AsyncSession,
    job_id: str,
    read: Callable[[int], Awaitable[bytes]],
    *,
    max_bytes: int,
) -> StoredFile:
    """Store what ``read(n)`` gives until it gives ``b""``, as chunks of the job's file.

    Raises FileTooLarge as soon as more than ``max_bytes`` were read (the caller rolls
    back what was stored).
    """
    size = lines = 0
    last = b""
    chunk_no = 0
    while chunk := await read(CHUNK_SIZE):
        size += len(chunk)
        if size > max_bytes:
            raise FileTooLarge(max_bytes)
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        await session.execute(
            insert(import_files).values(job_id=job_id, chunk_no=chunk_no, data=chunk)
        )
        chunk_no += 1
    if size and last != b"\n":
        lines += 1
    return StoredFile(byte_size=size, lines=lines)


async def set_file_size(
    session: AsyncSession, job_id: str, byte_size: int, total_rows: int | None
) -> None:
    await session.execute(
        update(import_jobs)
        .where(import_jobs.c.id == job_id)
        .values(byte_size=byte_size, total_rows=total_rows)
    )


async def notify_workers(session: AsyncSession, job_id: str) -> None:
    """Wake the import workers when the transaction commits (``NOTIFY`` is transactional)."""
    await session.execute(
        text("SELECT pg_notify(:channel, :job_id)"),
        {"channel": IMPORT_JOBS_CHANNEL, "job_id": job_id},
    )


async def get_job(session: AsyncSession, company_id: str, job_id: str) -> ImportJob | None:
    """The job ``job_id`` of ``company_id``; None when it does not exist or is another
    company's."""
    row = (
        await session.execute(
            select(import_jobs).where(
                import_jobs.c.id == job_id, import_jobs.c.company_id == company_id
            )
        )
    ).one_or_none()
    return None if row is None else _job_of(row)


async def list_jobs(
    session: AsyncSession, company_id: str, *, cursor: str | None, limit: int
) -> KeysetPage:
    """A page of the company's jobs, newest first; ``items`` are ImportJob. A cursor that
    is not one of this listing's is a 422 on ``query.cursor``."""
    order_by = (import_jobs.c.created_at, import_jobs.c.id)
    statement = keyset_select(
        select(import_jobs).where(import_jobs.c.company_id == company_id),
        order_by=order_by,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.execute(statement)).all()
    jobs = [_job_of(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = jobs[-1]
        next_cursor = encode_cursor((last.created_at, last.id))
    return KeysetPage(items=jobs, next_cursor=next_cursor)


async def lease_job(
    session: AsyncSession, *, lease_id: str, stale_after: timedelta
) -> ImportJob | None:
    """Take the oldest job no live worker holds: queued, or running with a heartbeat older
    than ``stale_after`` (its worker died). Locks skip jobs another worker is leasing at
    the same moment. The job becomes running under ``lease_id``, its attempts go up by
    one; None when there is nothing to do."""
    candidate = (
        select(import_jobs.c.id)
        .where(
            or_(
                import_jobs.c.status == JobStatus.QUEUED.value,
                and_(
                    import_jobs.c.status == JobStatus.RUNNING.value,
                    import_jobs.c.heartbeat_at < func.now() - stale_after,
                ),
            )
        )
        .order_by(import_jobs.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            update(import_jobs)
            .where(import_jobs.c.id == candidate)
            .values(
                status=JobStatus.RUNNING.value,
                lease_id=lease_id,
                attempts=import_jobs.c.attempts + 1,
                started_at=func.coalesce(import_jobs.c.started_at, func.now()),
                heartbeat_at=func.now(),
            )
            .returning(*import_jobs.c)
        )
    ).one_or_none()
    return None if row is None else _job_of(row)


async def claim(session: AsyncSession, job_id: str, lease_id: str) -> bool:
    """Lock the running job for this transaction and touch its heartbeat, if ``lease_id``
    still holds it; False when another worker took it over (or it ended)."""
    result = await session.execute(
        update(import_jobs)
        .where(
            import_jobs.c.id == job_id,
            import_jobs.c.lease_id == lease_id,
            import_jobs.c.status == JobStatus.RUNNING.value,
        )
        .values(heartbeat_at=func.now())
        .returning(import_jobs.c.id)
    )
    return result.one_or_none() is not None


async def record_batch(
    session: AsyncSession,
    job_id: str,
    *,
    counts: ImportCounts,
    last_row: int,
    report: Sequence[ReportLine],
) -> None:
    """Add a batch's counts and report lines; the job is now read up to ``last_row``."""
    column = import_jobs.c
    await session.execute(
        update(import_jobs)
        .where(column.id == job_id)
        .values(
            last_row=last_row,
            processed=column.processed + counts.processed,
            created=column.created + counts.created,
            updated=column.updated + counts.updated,
            unchanged=column.unchanged + counts.unchanged,
            skipped=column.skipped + counts.skipped,
            errors=column.errors + counts.errors,
        )
    )
    if report:
        await session.execute(
            insert(import_row_errors),
            [
                {
                    "job_id": job_id,
                    "row": line.row,
                    "seq": line.seq,
                    "column": line.column,
                    "code": line.code,
                    "reason": line.reason,
                }
                for line in report
            ],
        )


async def finish_job(
    session: AsyncSession, job_id: str, status: JobStatus, *, error: str | None = None
) -> ImportJob:
    """End the job (completed or failed) and delete its file; a completed job's total is
    what it processed. Returns the job as it ends."""
    column = import_jobs.c
    values: dict[str, Any] = {
        "status": status.value,
        "finished_at": func.now(),
        "lease_id": None,
        "error": error,
    }
    if status is JobStatus.COMPLETED:
        values["total_rows"] = column.processed
    row = (
        await session.execute(
            update(import_jobs).where(column.id == job_id).values(values).returning(*column)
        )
    ).one()
    await session.execute(delete(import_files).where(import_files.c.job_id == job_id))
    return _job_of(row)


async def release_job(session: AsyncSession, job_id: str, lease_id: str) -> None:
    """Give a job back to the queue (a worker stopping): another worker resumes it at once.
    The lease does not count as an attempt: only runs that ended without a word (a dead
    worker) bring a job nearer to being failed."""
    await session.execute(
        update(import_jobs)
        .where(import_jobs.c.id == job_id, import_jobs.c.lease_id == lease_id)
        .values(
            status=JobStatus.QUEUED.value,
            lease_id=None,
            heartbeat_at=None,
            attempts=import_jobs.c.attempts - 1,
        )
    )


async def read_chunk(session: AsyncSession, job_id: str, chunk_no: int) -> bytes | None:
    """Chunk ``chunk_no`` of the job's file; None past the end."""
    data: bytes | None = (
        await session.execute(
            select(import_files.c.data).where(
                import_files.c.job_id == job_id, import_files.c.chunk_no == chunk_no
            )
        )
    ).scalar_one_or_none()
    return data


async def report_page(
    session: AsyncSession, job_id: str, *, after: tuple[int, int] | None, limit: int
) -> list[ReportLine]:
    """Up to ``limit`` report lines of the job after position ``(row, seq)``, in order."""
    table = import_row_errors
    statement = select(table).where(table.c.job_id == job_id)
    if after is not None:
        row, seq = after
        statement = statement.where(
            tuple_(table.c.row, table.c.seq) > tuple_(literal(row), literal(seq))
        )
    rows = await session.execute(statement.order_by(table.c.row, table.c.seq).limit(limit))
    return [
        ReportLine(row=row.row, seq=row.seq, column=row.column, code=row.code, reason=row.reason)
        for row in rows
    ]


class ChunkedFile(io.RawIOBase):
    """A read-only, sequential stream over a stored file, asking ``fetch(n)`` for chunk
    ``n`` (0, 1, ...) only when the previous one is used up; ``fetch`` returns None past
    the end. Holds one chunk at a time."""

    def __init__(self, fetch: Callable[[int], bytes | None]) -> None:
        self._fetch = fetch
        self._next_chunk = 0
        self._buffer = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._buffer and not self._ended:
            chunk = self._fetch(self._next_chunk)
            if chunk is None:
                self._ended = True
            else:
                self._next_chunk += 1
                self._buffer = memoryview(chunk)
        size = min(len(view), len(self._buffer))
        view[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


async def spool_file(
    fetch: Callable[[int], Awaitable[bytes | None]],
    target: IO[bytes],
) -> int:
    """Copy a stored file chunk by chunk into ``target`` (a temporary file), then rewind
    it; returns the size."""
    size = 0
    chunk_no = 0
    while (chunk := await fetch(chunk_no)) is not None:
        target.write(chunk)
        size += len(chunk)
        chunk_no += 1
    target.flush()
    target.seek(0)
    return size
