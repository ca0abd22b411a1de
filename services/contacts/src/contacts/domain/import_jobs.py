"""Import jobs: their states, options and counts, and how a batch of rows is tallied.

An import job reads one uploaded file (see :mod:`contacts.domain.importing`) in batches;
each batch is committed with its contacts, its part of the row-level report and its
counts, so a job resumed after a crash goes on from the last committed row and its totals
stay exact.

Counting, for every row read (``processed``), exactly one of:

* ``created``: the row created a contact;
* ``updated``: the row changed an existing contact;
* ``skipped``: the row was left out on purpose: its phone appeared in an earlier row of
  the file, or the contact already was as the row says (``unchanged``, a part of
  ``skipped``: what a re-run of the same file gives), or the job's options say not to
  update existing contacts;
* ``errors``: the row is invalid; the report says why.

so ``created + updated + skipped + errors == processed``, the invariant
``ContactImportCompleted`` carries.

The report lists every row that was not imported: one line per problem of a rejected row,
and one line (code ``duplicate``) per row left out because of an earlier row with the same
phone. Unchanged rows are not in it: nothing is wrong with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from contacts.domain.importing import RejectedRow, RowOutcome, SkippedRow

#: Report code of a row left out because an earlier row of the file had the same phone.
DUPLICATE_CODE: Final = "duplicate"
#: Report code of a row left out because its contact exists and the job must not update it.
EXISTING_CODE: Final = "exists"
EXISTING_REASON: Final = (
    "a contact with this phone exists, and this import does not update existing contacts"
)
#: Report code of a row its contact refused when it was applied (a deleted contact, say).
REFUSED_CODE: Final = "refused"


class JobStatus(StrEnum):
    """Where a job is: waiting for a worker, being read, or done one way or the other."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class ImportFormat(StrEnum):
    """The kind of file a job reads."""

    CSV = "csv"
    XLSX = "xlsx"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What a job does besides creating contacts.

    ``update_existing`` False leaves contacts that already have a row's phone alone (the
    row is skipped and reported with code ``exists``); ``list_id`` adds every contact the
    job created or updated (or found unchanged) to that contact list.
    """

    update_existing: bool = True
    list_id: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"update_existing": self.update_existing, "list_id": self.list_id}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ImportOptions:
        list_id = data.get("list_id")
        return cls(
            update_existing=bool(data.get("update_existing", True)),
            list_id=str(list_id) if list_id is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """The counts of a job or of one of its batches (see the module docstring)."""

    processed: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: int = 0

    def __add__(self, other: ImportCounts) -> ImportCounts:
        return ImportCounts(
            processed=self.processed + other.processed,
            created=self.created + other.created,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            skipped=self.skipped + other.skipped,
            errors=self.errors + other.errors,
        )

    def percent(self, total_rows: int | None, status: JobStatus) -> float | None:
        """How far the job is, 0 to 100: 100 once completed; None while the total is
        unknown. The total of a running job is an estimate, so it never shows 100 before
        the end."""
        if status is JobStatus.COMPLETED:
            return 100.0
        if not total_rows:
            return None
        return round(min(99.9, 100.0 * self.processed / total_rows), 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportJob:
    """The state of one job as stored.

    ``mapping`` is the client's (header → target), or None for header matching;
    ``last_row`` is the file row up to which every row is counted and reported (0 before
    the first batch); ``total_rows`` estimates the data rows (None while unknown);
    ``error`` says why a failed job failed; ``attempts`` counts the runs it was given to,
    less those a stopping worker gave back.
    """

    id: str
    company_id: str
    created_by: str
    status: JobStatus
    format: ImportFormat
    filename: str
    mapping: Mapping[str, str | None] | None
    options: ImportOptions
    byte_size: int
    total_rows: int | None
    last_row: int
    counts: ImportCounts
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    attempts: int

    @property
    def percent(self) -> float | None:
        return self.counts.percent(self.total_rows, self.status)


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One line of a job's row-level report; ``seq`` orders the lines of one row."""

    row: int
    seq: int
    column: str
    code: str
    reason: str


def report_lines(outcome: RejectedRow | SkippedRow) -> list[ReportLine]:
    """The report lines of a row that was not imported."""
    if isinstance(outcome, SkippedRow):
        return [ReportLine(outcome.row, 0, outcome.column, DUPLICATE_CODE, outcome.reason)]
    return [
        ReportLine(error.row, seq, error.column, error.code.value, error.reason)
        for seq, error in enumerate(outcome.errors)
    ]


class RowResult(StrEnum):
    """What applying an accepted row did to its contact."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    EXISTS = "exists"


@dataclass(frozen=True, slots=True)
class BatchTally:
    """The counts and report lines of one batch of outcomes."""

    counts: ImportCounts
    report: list[ReportLine] = field(default_factory=list)


def tally_batch(
    outcomes: Iterable[RowOutcome],
    results: Mapping[int, RowResult],
    *,
    phone_column: str,
    refusals: Mapping[int, str] | None = None,
) -> BatchTally:
    """Count a batch of outcomes and collect its report lines.

    ``results`` says, by row number, what each accepted row did to its contact;
    ``refusals`` gives, by row number, why an accepted row could not be applied (it counts
    as an error). Every accepted row is in exactly one of them (KeyError otherwise).
    Lines about a whole row (``exists``, ``refused``) name ``phone_column``, the column
    that identifies the contact.
    """
    refused = refusals or {}
    created = updated = unchanged = skipped = errors = processed = 0
    report: list[ReportLine] = []
    for outcome in outcomes:
        processed += 1
        if isinstance(outcome, SkippedRow):
            skipped += 1
            report.extend(report_lines(outcome))
        elif isinstance(outcome, RejectedRow):
            errors += 1
            report.extend(report_lines(outcome))
        elif outcome.row in refused:
            errors += 1
            report.append(
                ReportLine(outcome.row, 0, phone_column, REFUSED_CODE, refused[outcome.row])
            )
        else:
            result = results[outcome.row]
            if result is RowResult.CREATED:
                created += 1
            elif result is RowResult.UPDATED:
                updated += 1
            else:
                skipped += 1
                if result is RowResult.UNCHANGED:
                    unchanged += 1
                else:
                    report.append(
                        ReportLine(outcome.row, 0, phone_column, EXISTING_CODE, EXISTING_REASON)
                    )
    counts = ImportCounts(
        processed=processed,
        created=created,
        updated=updated,
        unchanged=unchanged,
        skipped=skipped,
        errors=errors,
    )
    return BatchTally(counts=counts, report=report)
