"""Esquadrão local stack: embedded broker, Postgres and Redis as supervised child processes."""
