"""Import jobs, pure parts: counting a batch, its report lines, progress, options."""

from __future__ import annotations

import pytest
from contacts.domain.import_jobs import (
    DUPLICATE_CODE,
    EXISTING_CODE,
    REFUSED_CODE,
    ImportCounts,
    ImportOptions,
    JobStatus,
    RowResult,
    tally_batch,
)
from contacts.domain.importing import (
    AcceptedRow,
    RejectedRow,
    RowError,
    RowOutcome,
    SkippedRow,
)
from contacts.domain.model import ContactDraft, IssueCode

pytestmark = pytest.mark.unit


def accepted(row: int, phone: str) -> AcceptedRow:
    return AcceptedRow(row=row, draft=ContactDraft(phone_e164=phone))


def test_every_row_is_counted_once_and_the_counts_add_up() -> None:
    batch: list[RowOutcome] = [
        accepted(2, "+5511900000001"),
        accepted(3, "+5511900000002"),
        RejectedRow(
            row=4,
            errors=(
                RowError(4, "Telefone", IssueCode.INVALID, "the phone is too short"),
                RowError(4, "E-mail", IssueCode.INVALID, "'x@' is not an e-mail address"),
            ),
        ),
        accepted(5, "+5511900000003"),
        SkippedRow(row=6, column="Telefone", phone_e164="+5511900000001", first_row=2),
        accepted(7, "+5511900000004"),
        accepted(8, "+5511900000005"),
    ]
    results = {
        2: RowResult.CREATED,
        3: RowResult.UPDATED,
        5: RowResult.UNCHANGED,
        8: RowResult.EXISTS,
    }

    tally = tally_batch(batch, results, phone_column="Telefone", refusals={7: "more than 50 tags"})

    assert tally.counts == ImportCounts(
        processed=7, created=1, updated=1, unchanged=1, skipped=3, errors=2
    )
    counts = tally.counts
    assert counts.created + counts.updated + counts.skipped + counts.errors == counts.processed
    assert [(line.row, line.seq, line.column, line.code) for line in tally.report] == [
        (4, 0, "Telefone", "invalid"),
        (4, 1, "E-mail", "invalid"),
        (6, 0, "Telefone", DUPLICATE_CODE),
        (7, 0, "Telefone", REFUSED_CODE),
        (8, 0, "Telefone", EXISTING_CODE),
    ]
    assert tally.report[2].reason == "same phone as row 2, which is the one imported"
    assert tally.report[3].reason == "more than 50 tags"


def test_an_accepted_row_without_a_result_is_a_bug() -> None:
    with pytest.raises(KeyError):
        tally_batch([accepted(2, "+5511900000001")], {}, phone_column="phone")


def test_unchanged_rows_are_skipped_but_not_reported() -> None:
    tally = tally_batch(
        [accepted(2, "+5511900000001")], {2: RowResult.UNCHANGED}, phone_column="phone"
    )
    assert tally.counts == ImportCounts(processed=1, unchanged=1, skipped=1)
    assert tally.report == []


def test_counts_add() -> None:
    first = ImportCounts(processed=3, created=1, updated=1, skipped=1, unchanged=1)
    second = ImportCounts(processed=2, created=1, errors=1)
    assert first + second == ImportCounts(
        processed=5, created=2, updated=1, skipped=1, unchanged=1, errors=1
    )


@pytest.mark.parametrize(
    ("processed", "total", "status", "percent"),
    [
        (0, None, JobStatus.QUEUED, None),
        (50, 200, JobStatus.RUNNING, 25.0),
        (210, 200, JobStatus.RUNNING, 99.9),
        (200, 200, JobStatus.RUNNING, 99.9),
        (1, 3, JobStatus.RUNNING, 33.3),
        (0, 0, JobStatus.COMPLETED, 100.0),
        (10, None, JobStatus.COMPLETED, 100.0),
        (10, 100, JobStatus.FAILED, 10.0),
    ],
)
def test_percent_never_claims_the_end_before_it(
    processed: int, total: int | None, status: JobStatus, percent: float | None
) -> None:
    assert ImportCounts(processed=processed).percent(total, status) == percent


def test_options_round_trip_through_json() -> None:
    options = ImportOptions(update_existing=False, list_id="5b1f0d1e-7a4c-4c58-9e57-3f3c2b1a0d9e")
    assert ImportOptions.from_json(options.to_json()) == options
    assert ImportOptions.from_json({}) == ImportOptions()


def test_finished_statuses() -> None:
    assert {status for status in JobStatus if status.finished} == {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
    }
