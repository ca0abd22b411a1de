"""Alembic environment of the sample migrations used by the platform's migration tests."""

from esquadrao_common.migrations import run_env
from sqlalchemy import Column, MetaData, String, Table

metadata = MetaData()
Table("notes", metadata, Column("id", String(36), primary_key=True), Column("body", String))

run_env(metadata)
