"""The outbox relay: publishes committed outbox rows to Kafka, in order per key.

A pass locks the free ordering lanes (``FOR UPDATE SKIP LOCKED``), reads their unsent rows
in id order, publishes them, waits for the broker's acknowledgement and marks them sent,
all in one transaction that holds the lane locks. Several relay replicas therefore share
the lanes without ever publishing two rows of one key at the same time.

Delivery is at least once: a crash after the broker acknowledged a batch and before the
``sent_at`` update committed publishes that batch again. Consumers are idempotent
(:mod:`esquadrao_common.inbox`), so a duplicate costs work, never correctness.

The relay wakes on ``NOTIFY`` from committing writers and polls every ``poll_interval``
seconds as a fallback (a lost notification, a dropped listening connection). It exposes
the backlog (unsent rows, age of the oldest) and publish lag as Prometheus metrics, and
deletes sent rows older than ``retention``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from esquadrao_common.db import Database
from esquadrao_common.messaging import Headers, OutgoingRecord, Publisher
from esquadrao_common.notifications import listen_until, sleep_unless
from esquadrao_common.outbox import LANES, NOTIFY_CHANNEL
from esquadrao_common.platform_tables import outbox_lanes_table, outbox_table
from esquadrao_common.resilience.backoff import full_jitter
from esquadrao_common.tracing import TRACE_HEADERS, context_from, headers_of, start_messaging_span

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Counter(
    "esquadrao_outbox_published_total", "Outbox rows published to Kafka", ["service", "topic"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "esquadrao_outbox_publish_failures_total", "Relay passes whose publish failed", ["service"]
)
OUTBOX_BACKLOG = Gauge("esquadrao_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "esquadrao_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none)",
    ["service"],
)
OUTBOX_LAG = Histogram(
    "esquadrao_outbox_publish_lag_seconds",
    "Time from an outbox row's commit to the broker's acknowledgement",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTBOX_CLEANED = Counter(
    "esquadrao_outbox_cleaned_total", "Sent outbox rows deleted after retention", ["service"]
)


class OutboxRelay:
    """Publishes one service's outbox. ``await relay.run()`` until ``relay.stop()``."""

    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        *,
        service: str,
        batch_size: int = 500,
        lanes_per_pass: int = LANES,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(hours=24),
        cleanup_interval: float = 60.0,
        max_backoff: float = 10.0,
    ) -> None:
        self.database = database
        self.publisher = publisher
        self.service = service
        self.batch_size = batch_size
        self.lanes_per_pass = lanes_per_pass
        self.poll_interval = poll_interval
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def ensure_lanes(self) -> None:
        """Create the lane rows (idempotent); the lanes table ships empty in migrations."""
        async with self.database.engine.begin() as connection:
            await connection.execute(
                insert(outbox_lanes_table)
                .values([{"lane": lane} for lane in range(LANES)])
                .on_conflict_do_nothing()
            )

    async def publish_pending(self) -> int:
        """Publish unsent rows of the lanes no other relay holds; returns how many.

        Keeps going until no lane it can take has unsent rows, so a backlog drains in one
        call (rows in lanes another replica holds are that replica's to publish).
        Raises what the publisher raises; nothing of the failed batch is marked sent.
        """
        total = 0
        while published := await self._publish_batch():
            total += published
        return total

    async def _publish_batch(self) -> int:
        async with self.database.sessionmaker() as session, session.begin():
            lanes = (
                (
                    await session.execute(
                        select(outbox_lanes_table.c.lane)
                        .where(
                            outbox_lanes_table.c.lane.in_(
                                select(outbox_table.c.lane)
                                .where(outbox_table.c.sent_at.is_(None))
                                .distinct()
                            )
                        )
                        .order_by(outbox_lanes_table.c.lane)
                        .limit(self.lanes_per_pass)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not lanes:
                return 0
            rows = (
                await session.execute(
                    select(
                        outbox_table.c.id,
                        outbox_table.c.topic,
                        outbox_table.c.key,
                        outbox_table.c.value,
                        outbox_table.c.headers,
                        outbox_table.c.event_id,
                        outbox_table.c.created_at,
                    )
                    .where(outbox_table.c.sent_at.is_(None), outbox_table.c.lane.in_(lanes))
                    .order_by(outbox_table.c.id)
                    .limit(self.batch_size)
                )
            ).all()
            if not rows:
                return 0
            await self._publish_rows(rows)
            await session.execute(
                update(outbox_table)
                .where(outbox_table.c.id.in_([row.id for row in rows]))
                .values(sent_at=func.now())
            )
        acknowledged = datetime.now(UTC)
        lag = OUTBOX_LAG.labels(self.service)
        for row in rows:
            OUTBOX_PUBLISHED.labels(self.service, row.topic).inc()
            lag.observe(max(0.0, (acknowledged - row.created_at).total_seconds()))
        return len(rows)

    async def _publish_rows(self, rows: Sequence[Any]) -> None:
        """Publish ``rows``, one producer span each, continuing the trace stored with it."""
        spans: list[Span] = []
        records = []
        for row in rows:
            stored: dict[str, str] = row.headers
            span = start_messaging_span(
                "publish",
                row.topic,
                parent=context_from(stored),
                key=row.key,
                message_id=str(row.event_id),
            )
            spans.append(span)
            headers: Headers = [
                (name, value.encode())
                for name, value in stored.items()
                if name not in TRACE_HEADERS
            ]
            records.append(
                OutgoingRecord(row.topic, row.key, row.value, headers + headers_of(span))
            )
        try:
            await self.publisher.publish(records)
        except BaseException as error:
            for span in spans:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise
        finally:
            for span in spans:
                span.end()

    async def measure_backlog(self) -> tuple[int, float]:
        """(unsent rows, age in seconds of the oldest) — also exported as gauges."""
        async with self.database.sessionmaker() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox_table.c.created_at)).where(
                        outbox_table.c.sent_at.is_(None)
                    )
                )
            ).one()
        age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        OUTBOX_BACKLOG.labels(self.service).set(count)
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)
        return int(count), age

    async def cleanup(self, batch: int = 10_000) -> int:
        """Delete sent rows older than ``retention``, ``batch`` at a time; returns how many."""
        deleted = 0
        while True:
            async with self.database.engine.begin() as connection:
                result = await connection.execute(
                    text(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE "
                        "sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => :age) "
                        "LIMIT :batch)"
                    ),
                    {"age": self.retention.total_seconds(), "batch": batch},
                )
            count = int(result.rowcount or 0)
            deleted += count
            if count < batch:
                OUTBOX_CLEANED.labels(self.service).inc(deleted)
                return deleted

    async def _sleep(self, seconds: float) -> None:
        await sleep_unless(self._stopping, seconds)

    async def run(self) -> None:
        """Publish until :meth:`stop`: on every notification, else every ``poll_interval``."""
        self._stopping.clear()
        await self.ensure_lanes()
        listener = asyncio.create_task(
            listen_until(
                self.database.url,
                NOTIFY_CHANNEL,
                self._wake,
                self._stopping,
                max_backoff=self.max_backoff,
            ),
            name="outbox-listener",
        )
        failures = 0
        last_cleanup = last_measure = 0.0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self.publish_pending()
                    # Every writer's commit wakes the relay; counting the backlog on
                    # each wake would add a query per commit under load.
                    if time.monotonic() - last_measure >= self.poll_interval:
                        await self.measure_backlog()
                        last_measure = time.monotonic()
                    if time.monotonic() - last_cleanup >= self.cleanup_interval:
                        await self.cleanup()
                        last_cleanup = time.monotonic()
                    failures = 0
                except Exception as error:
                    failures += 1
                    OUTBOX_PUBLISH_FAILURES.labels(self.service).inc()
                    delay = full_jitter(failures, 0.2, self.max_backoff)
                    log.warning(
                        "outbox relay pass failed (attempt %d, next in %.2fs): %r",
                        failures,
                        delay,
                        error,
                    )
                    await self._sleep(delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            self._stopping.set()
            await listener

    async def stop(self) -> None:
        """Ask :meth:`run` to return after the pass in progress."""
        self._stopping.set()
        self._wake.set()
