"""Alembic environment of the whatsapp service (see esquadrao_common.migrations)."""

from esquadrao_common.migrations import run_env
from whatsapp.adapters.orm import metadata

run_env(metadata)
