"""Alembic environment of the sample migrations used by the platform's migration tests."""

from sqlalchemy import Column, MetaData, String, Table

from esquadrao_common.migrations import run_env

metadata = MetaData()
Table("notes", metadata, Column("id", String(36), primary_key=True), Column("body", String))

run_env(metadata)
