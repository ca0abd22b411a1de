"""Fakes of the platform's ports, for services' unit tests.

Unit tests of handlers run against these instead of Postgres and Kafka: a handler that
takes a unit of work and stages events runs unchanged with :class:`FakeUnitOfWork`, and
code that publishes runs with :class:`FakePublisher`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from esquadrao_common.db import run_callbacks
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.tracing import configure_tracing

_span_recorder: InMemorySpanExporter | None = None


def span_recorder() -> InMemorySpanExporter:
    """An exporter that keeps every span this process ends from now on, in memory.

    One per process (the tracer provider is process-wide); tests call ``clear()`` on it
    before the work they want to inspect.
    """
    global _span_recorder
    if _span_recorder is None:
        recorder = InMemorySpanExporter()
        configure_tracing("tests", processors=(SimpleSpanProcessor(recorder),))
        _span_recorder = recorder
    return _span_recorder


class FakePublisher:
    """Records what is published; ``fail_next`` makes the next publish calls raise."""

    def __init__(self) -> None:
        self.published: list[OutgoingRecord] = []
        self.calls = 0
        self.fail_next = 0
        self.error: Exception = ConnectionError("broker unavailable (fake)")

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise self.error
        self.published.extend(records)

    def topics(self) -> list[str]:
        return [record.topic for record in self.published]


class FakeUnitOfWork:
    """A unit of work that keeps staged events in memory and counts commits.

    ``events`` holds ``(topic, key, event)`` staged by a handler through ``stage``; they
    are kept only if ``commit()`` is called before the block ends, like a real
    transaction. Likewise ``after_commit`` callbacks run at ``commit()`` and are dropped
    otherwise. Services extend it with in-memory repositories.
    """

    def __init__(self) -> None:
        self.committed = 0
        self.rolled_back = 0
        self.events: list[tuple[str, str | bytes | None, Message]] = []
        self._pending: list[tuple[str, str | bytes | None, Message]] = []
        self._after_commit: list[Callable[[], None]] = []

    def stage(self, topic: str, key: str | bytes | None, event: Message) -> None:
        self._pending.append((topic, key, event))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Like the real one: ``callback()`` runs at ``commit()``, dropped otherwise."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Like the real one: what is staged, and callbacks registered, in a block that
        raises are discarded."""
        enclosing, self._pending = self._pending, []
        enclosing_callbacks, self._after_commit = self._after_commit, []
        try:
            yield
            enclosing.extend(self._pending)
            enclosing_callbacks.extend(self._after_commit)
        finally:
            self._pending = enclosing
            self._after_commit = enclosing_callbacks

    async def __aenter__(self) -> Self:
        self._pending = []
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pending or self._after_commit:
            await self.rollback()

    async def commit(self) -> None:
        self.events.extend(self._pending)
        self._pending = []
        self.committed += 1
        callbacks, self._after_commit = self._after_commit, []
        run_callbacks(callbacks)

    async def rollback(self) -> None:
        self._pending = []
        self._after_commit = []
        self.rolled_back += 1
