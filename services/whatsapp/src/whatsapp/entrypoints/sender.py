"""The send worker: the ``whatsapp-sender`` consumer group, and the sessions it drives.

Both command topics (interactive and bulk) are read by one consumer group with a range
assignor, so partition ``p`` of each goes to the same worker. A session's commands are
keyed by its id, so they all land in one partition, and **the worker that owns that
partition drives the session** (:class:`SessionSupervisor`): when partitions are assigned
it resolves what a previous driver left in flight (UNKNOWN, never re-sent), takes the
sessions over and connects them; when they are revoked it stops them before another
worker may start. A worker that dies stops heartbeating, the group gives its partitions to
the others, and its sessions reconnect there. Nothing else decides who sends.

Records are handled by :func:`command_handler`: a ``SendMessage`` becomes a ledger entry
(once per message id) and wakes its session's driver after the commit; a
``SessionControl`` is applied by the driver. Consuming is cheap (one insert), sending is
paced by the drivers, so a bulk backlog moves from Kafka into the ledger, where every
session serves interactive entries first. To keep that backlog bounded, bulk partitions
are paused while the worker's queued bulk entries exceed a limit (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Final

from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.events import decode_event
from esquadrao_common.kafka.assignors import CoPartitionedStickyAssignor
from esquadrao_common.kafka.catalog import Catalog
from esquadrao_common.kafka.consumer import BatchHandler, ConsumerRuntime, IncomingRecord
from esquadrao_common.messaging import Publisher
from prometheus_client import Gauge

from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.ledger import Priority
from whatsapp.domain.messages import StatusUpdate
from whatsapp.domain.sessions import Session
from whatsapp.service_layer import messages as ledger
from whatsapp.service_layer.driver import SessionDriver, take_over
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

log = logging.getLogger(__name__)

#: The consumer group, as the topic catalog names it.
GROUP: Final = "whatsapp-sender"

SESSIONS_DRIVEN = Gauge("esquadrao_whatsapp_sessions_driven", "Sessions this worker drives now.")
BULK_PAUSED = Gauge(
    "esquadrao_whatsapp_bulk_paused", "1 while bulk partitions are paused (backpressure)."
)


def partition_of(session_id: str, partitions: int) -> int:
    """The partition a record keyed ``session_id`` goes to: the Java client's (and
    aiokafka's) default partitioner, murmur2 of the key's bytes."""
    hashed: int = murmur2(session_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def worker_name() -> str:
    """This worker's name in the ``owner`` column: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: Makes the driver of one session, as the takeover read it.
DriverFactory = Callable[[Session], SessionDriver]

#: Sessions taken over per transaction.
TAKEOVER_CHUNK: Final = 1_000
#: Seconds between sweeps for sessions whose drivers sleep while entries are due.
DUE_SWEEP_S: Final = 30.0
#: How long drivers of revoked partitions are held for the rebalance to give them back.
HOLD_S: Final = 60.0


class SessionSupervisor:
    """The sessions of the partitions this worker owns (a ``PartitionOwnership``).

    ``partitions`` is the partition count of the command topics. Sessions created after
    the assignment are adopted on their first command (a ``SessionControl`` START, sent
    by the API on creation) through :meth:`driver_for`.

    Idle drivers sleep until woken; :meth:`sweep` is the one periodic query that finds
    sessions with claimable entries whose wake-up was missed (one query per worker, not
    one per session).

    The group rebalances eagerly: every member's partitions are revoked, then assigned
    anew, and with the co-partitioned sticky assignor most come back to the member that
    had them. So a revocation only *holds* the drivers (they stop sending, keep their
    connection); the assignment that follows releases those whose partition came back and
    whose session no other worker took in between, and stops the rest. Drivers still held
    ``hold_s`` after a revocation (no assignment came) are stopped.
    """

    def __init__(
        self,
        *,
        owner: str,
        uow: Callable[[], WhatsappUnitOfWork],
        make_driver: DriverFactory,
        partitions: int,
        clock: Callable[[], datetime],
        hold_s: float = HOLD_S,
    ) -> None:
        self.owner = owner
        self._uow = uow
        self._make_driver = make_driver
        self._partitions = partitions
        self._clock = clock
        self._owned: set[int] = set()
        self.drivers: dict[str, SessionDriver] = {}
        self.held: dict[str, SessionDriver] = {}
        self._hold_s = hold_s
        self._hold_expiry: asyncio.Task[None] | None = None
        self.unknown_on_adoption = 0

    def owns(self, session_id: str) -> bool:
        return partition_of(session_id, self._partitions) in self._owned

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions if tp.topic == INTERACTIVE_TOPIC}
        self._owned |= numbers
        kept = await self._release_held()
        async with self._uow() as uow:
            ids = [
                session_id
                for session_id, _ in await uow.sessions.live_ids()
                if partition_of(session_id, self._partitions) in numbers
            ]
        await self._adopt(ids)
        log.info(
            "owning partitions %s: %d sessions (%d kept their connection)",
            sorted(self._owned),
            len(self.drivers),
            kept,
        )

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions if tp.topic == INTERACTIVE_TOPIC}
        self._owned -= numbers
        leaving = [
            driver
            for session_id, driver in self.drivers.items()
            if partition_of(session_id, self._partitions) in numbers
        ]
        await asyncio.gather(*(driver.hold() for driver in leaving), return_exceptions=True)
        for driver in leaving:
            self.held[driver.session_id] = self.drivers.pop(driver.session_id)
        SESSIONS_DRIVEN.set(len(self.drivers))
        if self.held and self._hold_expiry is None:
            self._hold_expiry = asyncio.get_running_loop().create_task(self._expire_held())

    async def _release_held(self) -> int:
        """Release the held drivers whose partition came back and whose session is still
        ours in the database; stop the others. How many were released."""
        if self._hold_expiry is not None:
            self._hold_expiry.cancel()
            self._hold_expiry = None
        held, self.held = self.held, {}
        back = [
            session_id
            for session_id in held
            if partition_of(session_id, self._partitions) in self._owned
        ]
        async with self._uow() as uow:
            owners = await uow.sessions.owners(back)
        released = 0
        for session_id in back:
            if owners.get(session_id) == self.owner:
                driver = held.pop(session_id)
                self.drivers[session_id] = driver
                driver.release()
                released += 1
        await _stop_all(held.values())
        SESSIONS_DRIVEN.set(len(self.drivers))
        return released

    async def _expire_held(self) -> None:
        await asyncio.sleep(self._hold_s)
        self._hold_expiry = None
        held, self.held = self.held, {}
        if held:
            log.info("stopping %d sessions held since their partitions were revoked", len(held))
        await _stop_all(held.values())

    async def _adopt(self, session_ids: list[str]) -> None:
        """Take the sessions over (:func:`~whatsapp.service_layer.driver.take_over`), a
        chunk per transaction, and start a driver for each; the drivers' connection
        set-ups are then bounded per worker."""
        new = [session_id for session_id in session_ids if session_id not in self.drivers]
        for start in range(0, len(new), TAKEOVER_CHUNK):
            async with self._uow() as uow:
                takeover = await take_over(
                    uow, new[start : start + TAKEOVER_CHUNK], self.owner, self._clock()
                )
                await uow.commit()
            if takeover.unknown:
                log.warning(
                    "%d messages of adopted sessions were in flight: now unknown",
                    takeover.unknown,
                )
                self.unknown_on_adoption += takeover.unknown
            for session in takeover.sessions:
                driver = self._make_driver(session)
                self.drivers[session.id] = driver
                driver.start()
        SESSIONS_DRIVEN.set(len(self.drivers))

    async def driver_for(self, session_id: str) -> SessionDriver | None:
        """The driver of ``session_id``, adopting it if it is ours and not driven yet."""
        driver = self.drivers.get(session_id)
        if driver is not None and driver.done:
            # Its session was deleted (the driver ended); it may have been restored.
            del self.drivers[session_id]
            driver = None
        if driver is None and self.owns(session_id):
            await self._adopt([session_id])
            driver = self.drivers.get(session_id)
        return driver

    async def sweep(self) -> int:
        """Wake the drivers whose sessions have entries they could claim now; how many."""
        async with self._uow() as uow:
            due = await uow.ledger.sessions_with_due(list(self.drivers), self._clock())
        self.wake_all(due)
        return len(due)

    def wake_all(self, session_ids: set[str]) -> None:
        """New entries were queued for these sessions."""
        for session_id in session_ids:
            driver = self.drivers.get(session_id)
            if driver is not None:
                driver.wake()

    async def stop(self) -> None:
        if self._hold_expiry is not None:
            self._hold_expiry.cancel()
            self._hold_expiry = None
        await _stop_all([*self.drivers.values(), *self.held.values()])
        self.drivers.clear()
        self.held.clear()
        SESSIONS_DRIVEN.set(0)


async def _stop_all(drivers: Iterable[SessionDriver]) -> None:
    await asyncio.gather(*(driver.stop() for driver in drivers), return_exceptions=True)


def command_handler(
    supervisor: SessionSupervisor, clock: Callable[[], datetime]
) -> BatchHandler[WhatsappUnitOfWork]:
    """The handler of the command topics, a poll's records at a time (it does not commit;
    the runtime does): ``SendMessage`` records go into the ledger together
    (:func:`~whatsapp.service_layer.messages.accept_commands`), each queued one waking its
    session's driver once committed; ``SessionControl`` records go to the drivers."""

    async def handle_commands(records: Sequence[IncomingRecord], uow: WhatsappUnitOfWork) -> None:
        sends: list[ledger.IncomingCommand] = []
        for record in records:
            command = decode_event(commands_pb2.WhatsappCommand, record.value)
            which = command.WhichOneof("payload")
            if which == "send_message":
                priority = (
                    Priority.BULK if record.source_topic == BULK_TOPIC else Priority.INTERACTIVE
                )
                sends.append(
                    ledger.IncomingCommand(
                        command.send_message, command.envelope, priority, record.source_topic
                    )
                )
            elif which == "session_control":
                _after_commit_control(uow, supervisor, command.session_control)
        if not sends:
            return
        outcomes = await ledger.accept_commands(uow, sends, clock())
        woken = {
            item.command.session_id
            for item, outcome in zip(sends, outcomes, strict=True)
            if outcome is ledger.Accepted.QUEUED
        }
        if woken:
            uow.after_commit(lambda: supervisor.wake_all(woken))

    return handle_commands


def _after_commit_control(
    uow: WhatsappUnitOfWork,
    supervisor: SessionSupervisor,
    control: commands_pb2.SessionControl,
) -> None:
    """Apply an operator's ``SessionControl`` once the records around it committed."""
    if not supervisor.owns(control.session_id):
        log.warning("control for session %s outside my partitions", control.session_id)
        return

    def apply() -> None:
        asyncio.get_running_loop().create_task(
            _control(supervisor, control.session_id, control.action, control.reason)
        )

    uow.after_commit(apply)


async def _control(
    supervisor: SessionSupervisor, session_id: str, action: int, reason: str
) -> None:
    driver = await supervisor.driver_for(session_id)
    if driver is not None:
        await driver.control(action, reason)


class ReceiptWriter:
    """Stores the receipts pushed on session connections, many per transaction.

    Receipts arrive three per message (sent, delivered, read) on hundreds of connections;
    one transaction each would cost more than the sends. :meth:`add` only queues (a
    connection's reader must not wait on the database: acknowledgements queue behind it);
    :meth:`run` writes what queued, up to ``max_batch`` at a time. A crash loses receipts
    not yet written: their messages keep an earlier status (never a wrong one).
    """

    def __init__(
        self,
        uow: Callable[[], WhatsappUnitOfWork],
        clock: Callable[[], datetime],
        *,
        max_batch: int = 500,
        linger_s: float = 0.02,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: asyncio.Queue[tuple[str, StatusUpdate]] = asyncio.Queue()
        self._stopping = asyncio.Event()

    def add(self, session_id: str, update: StatusUpdate) -> None:
        self._queue.put_nowait((session_id, update))

    async def run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(self._queue.get(), 0.5)
                batch = [first]
                await asyncio.sleep(self._linger_s)
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("could not store %d receipts", len(batch))

    async def _write(self, batch: list[tuple[str, StatusUpdate]]) -> None:
        by_session: dict[str, list[StatusUpdate]] = defaultdict(list)
        for session_id, update in batch:
            by_session[session_id].append(update)
        async with self._uow() as uow:
            for session_id, updates in by_session.items():
                await ledger.apply_statuses(uow, session_id, updates, self._clock())
            await uow.commit()

    async def stop(self) -> None:
        self._stopping.set()


async def repeat(
    interval_s: float, stopping: asyncio.Event, action: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run ``action`` every ``interval_s`` until ``stopping`` is set; a failure is logged
    and the next turn comes all the same."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)
        try:
            await action()
        except Exception:
            log.exception("%s failed", what)


class Backpressure:
    """Pauses the bulk partitions while the worker's sessions have too much queued bulk
    work, and resumes them below half of it. Interactive partitions are never paused."""

    def __init__(
        self,
        runtime: ConsumerRuntime[WhatsappUnitOfWork],
        supervisor: SessionSupervisor,
        uow: Callable[[], WhatsappUnitOfWork],
        limit: int,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._runtime = runtime
        self._supervisor = supervisor
        self._uow = uow
        self._limit = limit
        self._interval_s = interval_s
        self._paused = False
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await repeat(self._interval_s, self._stopping, self._check, "backpressure check")

    async def _check(self) -> None:
        ids = list(self._supervisor.drivers)
        async with self._uow() as uow:
            queued = await uow.ledger.queued_count(ids, Priority.BULK)
        bulk = [tp for tp in self._runtime.assignment() if tp.topic == BULK_TOPIC]
        if not self._paused and queued > self._limit:
            self._runtime.pause(bulk)
            self._paused = True
            log.info("bulk paused: %d queued", queued)
        elif self._paused and queued <= self._limit // 2:
            self._runtime.resume(bulk)
            self._paused = False
            log.info("bulk resumed: %d queued", queued)
        elif self._paused:
            # Partitions assigned since start resumed: hold them too.
            self._runtime.pause(bulk)
        BULK_PAUSED.set(1 if self._paused else 0)

    async def stop(self) -> None:
        self._stopping.set()


class SendWorker:
    """The worker: consumer runtime, session supervisor, receipt writer, backpressure."""

    def __init__(
        self,
        *,
        bootstrap: str,
        uow: Callable[[], WhatsappUnitOfWork],
        publisher: Publisher,
        make_driver: Callable[[ReceiptWriter], DriverFactory],
        clock: Callable[[], datetime],
        bulk_backlog_limit: int,
        owner: str | None = None,
        client_id: str = "whatsapp-sender",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
    ) -> None:
        catalog = Catalog.load()
        self.receipts = ReceiptWriter(uow, clock)
        self.supervisor = SessionSupervisor(
            owner=owner or worker_name(),
            uow=uow,
            make_driver=make_driver(self.receipts),
            partitions=catalog.topic(INTERACTIVE_TOPIC).partitions,
            clock=clock,
        )
        self.runtime: ConsumerRuntime[WhatsappUnitOfWork] = ConsumerRuntime(
            bootstrap=bootstrap,
            group=catalog.group(GROUP),
            batch_handler=command_handler(self.supervisor, clock),
            uow_factory=uow,
            publisher=publisher,
            client_id=client_id,
            assignor=CoPartitionedStickyAssignor.for_member(),
            ownership=self.supervisor,
            topic_priority=(INTERACTIVE_TOPIC,),
            # Taking commands in is a multi-row insert per partition chunk, so chunks may
            # be large; polls stay moderate, since interactive commands that arrive while
            # a poll of bulk ones is processed wait for the next poll.
            max_batch=250,
            max_records_per_transaction=250,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
        self.backpressure = Backpressure(self.runtime, self.supervisor, uow, bulk_backlog_limit)

    async def run(self) -> None:
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(self.receipts.run(), name="receipts"),
            asyncio.create_task(self.backpressure.run(), name="backpressure"),
            asyncio.create_task(
                repeat(DUE_SWEEP_S, stopping, self.supervisor.sweep, "sweep for due entries"),
                name="sweep",
            ),
        ]
        try:
            await self.runtime.run()
        finally:
            stopping.set()
            await self.backpressure.stop()
            await self.supervisor.stop()
            await self.receipts.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.runtime.stop()
