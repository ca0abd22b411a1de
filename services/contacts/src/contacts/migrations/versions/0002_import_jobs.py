"""Contact import jobs: the jobs, their uploaded files in chunks, their row-level reports.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", UUID(as_uuid=False), nullable=False),
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("mapping", JSONB(), nullable=True),
        sa.Column("options", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("total_rows", sa.BigInteger(), nullable=True),
        sa.Column("last_row", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        _counter("processed"),
        _counter("created"),
        _counter("updated"),
        _counter("unchanged"),
        _counter("skipped"),
        _counter("errors"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("lease_id", UUID(as_uuid=False), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_import_jobs"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')",
            name="ck_import_jobs_status",
        ),
        sa.CheckConstraint("format IN ('csv', 'xlsx')", name="ck_import_jobs_format"),
    )
    op.create_index(
        "ix_import_jobs_company_id_created_at_id",
        "import_jobs",
        ["company_id", "created_at", "id"],
    )
    op.create_index(
        "ix_import_jobs_pending",
        "import_jobs",
        ["created_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "import_files",
        sa.Column("job_id", UUID(as_uuid=False), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "chunk_no", name="pk_import_files"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name="fk_import_files_job_id_import_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "import_row_errors",
        sa.Column("job_id", UUID(as_uuid=False), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("column", sa.Text(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "row", "seq", name="pk_import_row_errors"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name="fk_import_row_errors_job_id_import_jobs",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("import_row_errors")
    op.drop_table("import_files")
    op.drop_table("import_jobs")
