"""Alembic environment of the contacts service (see esquadrao_common.migrations)."""

from contacts.adapters import import_tables  # noqa: F401  (declares its tables on metadata)
from contacts.adapters.orm import metadata
from esquadrao_common.migrations import run_env

run_env(metadata)
