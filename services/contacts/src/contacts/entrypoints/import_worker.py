"""The import worker: runs queued contact import jobs, one at a time per replica.

It wakes on ``NOTIFY contacts_import_jobs`` (sent when an upload commits) and, as a
fallback for a lost notification or a dropped listening connection, polls every
``poll_interval`` seconds; polling is also how it finds jobs whose worker died (their
heartbeat went stale). While a job runs, its heartbeat is refreshed every
``heartbeat_interval`` seconds, well under the runner's ``stale_after``.

``stop()`` lets the job in hand finish its current batch, then gives it back to the queue
(resumable by any replica) and returns. Any number of replicas may run: leases use
``FOR UPDATE SKIP LOCKED``, so each job is run by one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from esquadrao_common.db import Database
from esquadrao_common.notifications import listen_until, sleep_unless
from esquadrao_common.resilience.backoff import full_jitter
from esquadrao_common.service import Platform, Worker

from contacts.adapters.import_store import IMPORT_JOBS_CHANNEL
from contacts.config import ContactsSettings
from contacts.service_layer.imports import ImportJobRunner, Lease
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

log = logging.getLogger(__name__)


class ImportWorker:
    """Leases and runs import jobs until :meth:`stop` (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        runner: ImportJobRunner,
        *,
        poll_interval: float = 5.0,
        heartbeat_interval: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.database = database
        self.runner = runner
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run jobs until :meth:`stop`; a failing pass (database down) is retried after a
        jittered, growing delay."""
        self._stopping.clear()
        listener = asyncio.create_task(
            listen_until(
                self.database.url,
                IMPORT_JOBS_CHANNEL,
                self._wake,
                self._stopping,
                max_backoff=self.max_backoff,
            ),
            name="import-jobs-listener",
        )
        failures = 0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    lease = await self.runner.lease()
                    if lease is not None:
                        await self._run_job(lease)
                    failures = 0
                except Exception as error:
                    failures += 1
                    delay = full_jitter(failures, 0.5, self.max_backoff)
                    log.warning(
                        "import worker pass failed (attempt %d, next in %.2fs): %r",
                        failures,
                        delay,
                        error,
                    )
                    await self._sleep(delay)
                    continue
                if lease is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            self._stopping.set()
            await listener

    async def stop(self) -> None:
        """Ask :meth:`run` to return once the batch in progress is committed."""
        self._stopping.set()
        self._wake.set()

    async def _run_job(self, lease: Lease) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(lease), name="import-job-heartbeat")
        try:
            result = await self.runner.run(lease, self._stopping.is_set)
            log.info("import job %s: %s", lease.job.id, result.value)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                if not await self.runner.heartbeat(lease):
                    return
            except Exception as error:
                log.warning("import job %s heartbeat failed: %r", lease.job.id, error)

    async def _sleep(self, seconds: float) -> None:
        await sleep_unless(self._stopping, seconds)


def import_worker(platform: Platform, settings: ContactsSettings) -> Worker:
    """The import worker of a contacts worker process."""
    database = platform.database
    runner = ImportJobRunner(
        lambda: ContactsUnitOfWork(database),
        batch_size=settings.import_batch_size,
        default_region=settings.default_region,
    )
    return ImportWorker(database, runner)
