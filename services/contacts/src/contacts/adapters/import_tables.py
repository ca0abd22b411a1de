"""Tables of contact import jobs: the job, its uploaded file, and its row-level report.

They live on the service's ``metadata`` (:mod:`contacts.adapters.orm`) so Alembic sees
them with the contacts tables; migration ``0002`` creates them.

* ``import_jobs``: one row per upload. ``status`` moves ``queued → running → completed``
  (or ``failed``); a running job whose ``heartbeat_at`` is old is leased again by another
  worker, which is why progress (``last_row`` and the counters) is committed with each
  batch of contacts. ``lease_id`` names the worker run holding the job: every write of a
  worker is conditioned on it, so a worker that lost its lease (it stalled, another took
  over) cannot write progress any more.
* ``import_files``: the uploaded bytes in chunks of about 1 MiB, so any worker replica can
  read the file and nothing depends on a local disk. Deleted when the job ends.
* ``import_row_errors``: one row per problem of a rejected row, and one per row left out
  because an earlier row had the same phone (``code`` ``duplicate``); ``seq`` orders the
  problems of one row.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from contacts.adapters.orm import COMPANY_ID_LENGTH, metadata

#: Values of ``import_jobs.status``.
JOB_STATUSES: Final = ("queued", "running", "completed", "failed")
#: Values of ``import_jobs.format``.
JOB_FORMATS: Final = ("csv", "xlsx")


def _counter(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default=text("0"))


import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("format", String(8), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("mapping", JSONB, nullable=True),
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("byte_size", BigInteger, nullable=False),
    Column("total_rows", BigInteger, nullable=True),
    Column("last_row", BigInteger, nullable=False, server_default=text("0")),
    _counter("processed"),
    _counter("created"),
    _counter("updated"),
    _counter("unchanged"),
    _counter("skipped"),
    _counter("errors"),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_id", UUID(as_uuid=False), nullable=True),
    CheckConstraint(
        "status IN ({})".format(", ".join(f"'{status}'" for status in JOB_STATUSES)),
        name="status",
    ),
    CheckConstraint(
        "format IN ({})".format(", ".join(f"'{name}'" for name in JOB_FORMATS)),
        name="format",
    ),
)
# Listing, newest first: WHERE company_id = ? AND (created_at, id) < (?, ?).
Index(
    None,
    import_jobs.c.company_id,
    import_jobs.c.created_at,
    import_jobs.c.id,
)
# Leasing: the oldest job that is queued, or running with an old heartbeat.
Index(
    "ix_import_jobs_pending",
    import_jobs.c.created_at,
    postgresql_where=import_jobs.c.status.in_(("queued", "running")),
)

import_files = Table(
    "import_files",
    metadata,
    Column(
        "job_id",
        UUID(as_uuid=False),
        ForeignKey("import_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("chunk_no", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

import_row_errors = Table(
    "import_row_errors",
    metadata,
    Column(
        "job_id",
        UUID(as_uuid=False),
        ForeignKey("import_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("row", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("column", Text, nullable=False),
    Column("code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
)
