"""WhatsApp send worker benchmarks: ``python -m bench.whatsapp_send [throughput]
[interactive] [memory] [rebalance] [drivers] [ingest]`` (no name: the first four).

Each benchmark starts what it measures: a fresh database migrated to the whatsapp schema,
``sim`` sessions seeded in it (``SessionRepository.add``: ``desired_running``, provider
``sim``, profile ``lifted``), and **one worker process** (``python -m whatsapp worker``,
``WHATSAPP_DEFAULT_PROFILE=lifted``, so the session limits never hold a send back), as one
replica runs. Kafka, Postgres and Redis are the local stack's (embedded unless
``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``REDIS_URL`` are set); the WhatsApp simulator is
started as a child process with its data in a temporary directory, unless
``WHATSAPP_SIMULATOR_URL`` is set. Before the worker starts, the simulator's knobs are set
for the benchmark's sessions (globally on an own simulator, per session on a given one):
pairing at once, no throughput or pair limits, and receipts out of the way (delivered and
read never, the ``sent`` receipt an hour after acceptance) so that they do not dominate;
``--receipts`` keeps the simulator's default receipts (``sent`` at once, ``delivered``
always, ``read`` half the time), which the worker then stores too.

- **throughput** — ``--messages`` ``SendMessage`` commands for ``--send-sessions`` sessions
  are published to ``whatsapp.send.bulk.v1`` *before* the worker starts (keyed by session,
  each session's messages to distinct recipients). The worker consumes them into the
  ledger and its session drivers send them. The clock is the simulator's witness record:
  from the first acceptance of a benchmark message to the last, sends/s (also over the
  middle 80 % of acceptances, without ramp-up and tail). The witness is then asked for
  every acceptance of the benchmark's sessions: each message must be accepted exactly
  once (duplicates and missing ones are printed), and the ledger's statuses are counted.
  Also printed: the time from the worker's start to its first send (group join, session
  adoption, connections), the rate at which commands entered the ledger, CPU seconds the
  worker and the simulator used over the send window, and database transactions per send
  (``pg_stat_database``).
- **interactive** — a bulk backlog of ``--backlog`` commands for the ``--send-sessions``
  sessions is published, the worker starts, and once bulk sends are flowing interactive
  commands for the same sessions are published on ``whatsapp.send.interactive.v1`` at
  ``--rate`` per second for ``--seconds`` (open loop: command ``i`` is due at
  ``start + i / rate`` whatever happened before). Latency of an interactive message = its
  acceptance by the simulator (``accepted_at``, wall clock) − its due time (wall clock,
  taken just before the publish call; same machine, same clock). Printed: p50, p95, p99
  and max, split at the message's ``queued_at`` in the ledger into the consumer's part
  (publish → ledger) and the driver's (ledger → accepted); the bulk acceptance rate during
  the interactive window against the rate over the whole drain, and how much bulk was
  still waiting when the window ended, in the ledger and on Kafka (nothing left means the
  window was not all under load). The worker drains the whole backlog before it is
  stopped, so nothing is left on the topics.
- **memory** — RSS of a worker with no session (after it joined the group), then of a
  fresh worker with ``--sessions`` sessions, all paired, connected and idle: per-session
  KiB is the difference over the count. Also printed: time from the worker's start (and
  from the partition assignment, read in its log) to the last session connected
  (``connected_since`` in the database), and what the idle sessions cost: the worker's
  CPU and the database transactions per second over ``--idle-seconds``. Sessions that
  do not connect (a driver that crashed) are counted and printed, not waited for forever.
- **rebalance** — ``--rebalance-sessions`` sessions connected on one worker, then a
  second worker joins the group: how many sessions reconnected (``connected_since`` moved
  past the join) against how many changed owner, and how long until every session was
  connected again. Ideally only the sessions the newcomer takes reconnect; the first
  worker's others keep their connection through the rebalance.
- **drivers** (only when named) — the throughput benchmark without the consumer: the
  ``--messages`` commands are taken into the ledger by this process (``accept_command``,
  what the worker's consumer does) before the worker starts, so the worker only sends.
  Against **throughput**, it tells whether the consumer or the senders set the pace.
- **ingest** (only when named) — the other half: the commands are published, the sessions
  exist but should not run, so the worker only consumes them into the ledger (commands/s
  from the first ``queued_at`` to the last, CPU and transactions per command).

The machine (cores, load) and the command line are printed with the figures. A machine
shared with other work skews them: the CPU used by processes other than the worker and
the simulator during each measurement is printed too. The worker joins the real
``whatsapp-sender`` group on the real command topics: on a broker shared with other runs,
another member of that group would take partitions (and sessions) away, so what the
worker owned is printed as well. ``--profile`` runs the worker under cProfile and prints
its top functions; ``--keep`` keeps the worker logs and profiles. Nothing here passes or
fails: it only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil
import whatsapp
from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.db import Database
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.migrations import upgrade
from esquadrao_devstack.process import ChildProcess
from esquadrao_devstack.stack import Component, LocalStack, StackConfig
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.process import SimulatorProcess
from rich.console import Console
from rich.table import Table
from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC
from whatsapp.domain.ledger import Priority
from whatsapp.service_layer import messages as ledger
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork
from whatsapp.testing import (
    command_record,
    new_company_id,
    publish_records,
    recipient_phone,
    seed_sim_sessions,
    send_message,
)

from bench.support import drop_database, fresh_database

MIGRATIONS = Path(whatsapp.__file__).parent / "migrations"
#: Simulator knobs of every benchmark session: no pairing wait, no limits.
SIM_KNOBS: dict[str, Any] = {"pairing_delay_s": 0, "max_mps": None, "pair_rate_limit": None}
#: Receipts out of the way: never delivered or read, ``sent`` after the benchmark.
QUIET_RECEIPTS: dict[str, Any] = {
    "delivered_rate": 0.0,
    "read_rate": 0.0,
    "receipt_delays": {"sent": 3600.0, "delivered": 3600.0, "read": 3600.0},
}
#: Ledger statuses of a message whose send is over (sent, or resolved otherwise).
DONE_STATUSES = ("sent", "delivered", "read", "failed", "unknown", "expired")
KIB, MIB = 1024, 1024 * 1024
PUBLISH_CHUNK = 2000
SEED_CHUNK = 1000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of the sorted ``ordered`` (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    note: str = ""


@dataclass
class Result:
    title: str
    figures: list[Figure] = field(default_factory=list)
    profile: str = ""

    def add(self, name: str, value: str, note: str = "") -> None:
        self.figures.append(Figure(name, value, note))


# --- processes ---------------------------------------------------------------------------


class Sampler:
    """CPU seconds and RSS of some processes, and of the whole machine, every ``interval``
    seconds (wall clock), to tell afterwards what each used in a window."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.processes: dict[str, psutil.Process] = {}
        #: (wall time, machine busy CPU seconds, {name: (cpu seconds, rss)}).
        self.samples: list[tuple[float, float, dict[str, tuple[float, int]]]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.processes[name] = psutil.Process(pid)

    def sample(self) -> None:
        machine = psutil.cpu_times()
        busy = machine.user + machine.system + getattr(machine, "nice", 0.0)
        busy += getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0)
        per: dict[str, tuple[float, int]] = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error), process.oneshot():
                times = process.cpu_times()
                per[name] = (times.user + times.system, process.memory_info().rss)
        self.samples.append((time.time(), busy, per))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def _around(self, start: float, end: float) -> tuple[Any, Any]:
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        return before[-1], after[0]

    def cpu(self, name: str, start: float, end: float) -> float:
        """CPU seconds ``name`` used from ``start`` to ``end`` (sample resolution)."""
        first, last = self._around(start, end)
        if name == "machine":
            return float(last[1] - first[1])
        if name not in first[2] or name not in last[2]:
            return float("nan")
        return float(last[2][name][0] - first[2][name][0])

    def window(self, start: float, end: float) -> float:
        first, last = self._around(start, end)
        return float(last[0] - first[0])

    def cpu_split(self, start: float, end: float) -> str:
        """What each watched process and everything else used, in cores, over a window."""
        seconds = self.window(start, end)
        if seconds <= 0:
            return "n/a"
        parts = [f"{name} {self.cpu(name, start, end) / seconds:.2f}" for name in self.processes]
        others = self.cpu("machine", start, end) - sum(
            self.cpu(name, start, end) for name in self.processes
        )
        parts.append(f"other processes {others / seconds:.2f}")
        return ", ".join(parts) + f" (of {psutil.cpu_count()} cores)"


class WorkerProcess:
    """``python -m whatsapp worker`` as a child process (dies with this one), its output
    in ``<run_dir>/<name>.log``; optionally under cProfile."""

    def __init__(self, run_dir: Path, name: str, env: dict[str, str], *, profile: bool) -> None:
        self.name = name
        self.profile_path = run_dir / f"{name}.prof" if profile else None
        argv = [sys.executable]
        if self.profile_path is not None:
            argv += ["-m", "cProfile", "-o", str(self.profile_path)]
        argv += ["-m", "whatsapp", "worker"]
        self.log_path = run_dir / f"{name}.log"
        self.child = ChildProcess(
            f"whatsapp worker ({name})", argv, log_path=self.log_path, env=env
        )
        self.started_at = 0.0

    def start(self) -> None:
        self.child.start()
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        return self.child.pid

    def rss(self) -> int:
        return int(psutil.Process(self.child.pid).memory_info().rss)

    def ensure_running(self) -> None:
        self.child.ensure_running()

    async def stop(self) -> None:
        await self.child.stop(grace=60)

    def log_events(self, text: str) -> list[tuple[float, str]]:
        """Wall time and message of the log lines whose message contains ``text``."""
        events: list[tuple[float, str]] = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if text not in line:
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    record = json.loads(line)
                    event = str(record.get("event", ""))
                    if text in event:
                        stamp = record["timestamp"].replace("Z", "+00:00")
                        events.append((datetime.fromisoformat(stamp).timestamp(), event))
        return events

    def log_times(self, text: str) -> list[float]:
        """Wall times of the log lines whose message contains ``text``."""
        return [at for at, _ in self.log_events(text)]

    def ownership(self) -> str:
        """What the worker last said it owns ("owning partitions [...]: n sessions"), and
        how many revocations it went through: another ``whatsapp-sender`` member on the
        same broker takes partitions (and sessions) away from the benchmark."""
        owning = self.log_events("owning partitions")
        revoked = len(self.log_events(": revoked"))
        last = owning[-1][1].removeprefix("owning ") if owning else "never assigned"
        return f"{last}; {revoked} revocation(s)"

    def log_counts(self) -> Counter[str]:
        """How many log lines of each level (warnings and errors tell of trouble)."""
        counts: Counter[str] = Counter()
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    counts[str(json.loads(line).get("level", "?"))] += 1
        return counts

    def top_functions(self, limit: int = 25) -> str:
        if self.profile_path is None or not self.profile_path.exists():
            return ""
        out = io.StringIO()
        stats = pstats.Stats(str(self.profile_path), stream=out)
        stats.sort_stats("tottime").print_stats(limit)
        return out.getvalue()


# --- the bench context -------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    run_dir: Path
    console: Console
    stack: LocalStack
    simulator_url: str
    #: The simulator started here (None: a given one, shared: per-session knobs).
    simulator: SimulatorProcess | None
    publisher: KafkaPublisher
    #: The company of the run's sessions and commands.
    company_id: str = field(default_factory=lambda: new_company_id("bench"))

    @property
    def knobs(self) -> dict[str, Any]:
        return SIM_KNOBS if self.args.receipts else SIM_KNOBS | QUIET_RECEIPTS

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh database with the whatsapp schema for one benchmark, dropped after it."""
        url = await fresh_database(self.stack.postgres_url, "bench_whatsapp")
        try:
            await asyncio.to_thread(upgrade, MIGRATIONS, url)
            yield url
        finally:
            await close_probe(url)
            await drop_database(self.stack.postgres_url, url)

    def worker(self, name: str, database_url: str) -> WorkerProcess:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            KAFKA_BOOTSTRAP=self.stack.kafka_bootstrap,
            KAFKA_ENABLE_IDEMPOTENCE="false",
            REDIS_URL=self.stack.redis_url,
            WHATSAPP_SIMULATOR_URL=self.simulator_url,
            WHATSAPP_DEFAULT_PROFILE="lifted",
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
        )
        if self.args.batch is not None:
            env["WHATSAPP_SEND_BATCH"] = str(self.args.batch)
        return WorkerProcess(self.run_dir, name, env, profile=self.args.profile)

    def sampler(self, worker: WorkerProcess) -> Sampler:
        sampler = Sampler()
        sampler.watch("worker", worker.pid)
        sampler.watch("simulator", self.simulator.pid if self.simulator else None)
        return sampler

    async def seed_sessions(self, database_url: str, count: int) -> list[str]:
        """``count`` sim sessions that should run, on the ``lifted`` profile; their ids.
        Their simulator knobs are set too (per session on a shared simulator)."""
        database = Database(database_url, pool_size=2)
        try:
            ids = await seed_sim_sessions(database, count, self.company_id, name_prefix="bench")
        finally:
            await database.dispose()
        if self.simulator is None:
            async with SimulatorControl(self.simulator_url) as control:
                limit = asyncio.Semaphore(32)

                async def configure(session_id: str) -> None:
                    async with limit:
                        await control.set_session_knobs(session_id, **self.knobs)

                await asyncio.gather(*(configure(session_id) for session_id in ids))
        return ids

    async def publish(self, plan: Sequence[Planned]) -> float:
        """Publish the records of ``plan`` in order; seconds it took."""
        started = time.perf_counter()
        await publish_records(
            self.publisher, (record for _, _, record in plan), batch_size=PUBLISH_CHUNK
        )
        return time.perf_counter() - started

    async def acceptances(self, session_ids: Sequence[str]) -> dict[str, list[float]]:
        """Every acceptance the witness recorded for the sessions: ``accepted_at`` by
        message id."""
        by_message: dict[str, list[float]] = {}
        async with SimulatorControl(self.simulator_url, timeout=60) as control:
            if self.simulator is not None:
                items = await control.all_messages()
            else:
                items = []
                for session_id in session_ids:
                    items.extend(await control.all_messages(session_id=session_id))
        for item in items:
            by_message.setdefault(str(item.get("message_id")), []).append(
                float(item["accepted_at"])
            )
        return by_message


#: One planned message: (message id, session id, its record).
Planned = tuple[str, str, OutgoingRecord]


def plan_commands(
    company_id: str,
    count: int,
    session_ids: Sequence[str],
    topic: str = BULK_TOPIC,
    *,
    first_recipient: int = 0,
) -> list[Planned]:
    """``count`` text commands on ``topic`` spread round-robin over the sessions; each
    session's successive messages go to different recipients (a campaign's shape)."""
    plan: list[Planned] = []
    for n in range(count):
        session_id = session_ids[n % len(session_ids)]
        to = recipient_phone(first_recipient + (n // len(session_ids)) % 1_000_000)
        command = send_message(session_id, company_id, to_phone_e164=to, body=f"Oferta {n}")
        plan.append((command.send_message.message_id, session_id, command_record(command, topic)))
    return plan


# --- database probes ---------------------------------------------------------------------


#: One connection per benchmark database for the probes (the shared Postgres has few).
_probes: dict[str, asyncpg.Connection] = {}


async def query(database_url: str, sql: str, *params: Any) -> list[asyncpg.Record]:
    connection = _probes.get(database_url)
    if connection is None or connection.is_closed():
        connection = _probes[database_url] = await asyncpg.connect(database_url)
    return list(await connection.fetch(sql, *params))


async def close_probe(database_url: str) -> None:
    connection = _probes.pop(database_url, None)
    if connection is not None:
        await connection.close()


async def status_counts(
    database_url: str, company_id: str, priority: int | None = None
) -> dict[str, int]:
    """The company's ledger entries by status (of one priority when given)."""
    sql = "SELECT status, count(*) FROM messages WHERE company_id = $1"
    params: list[Any] = [company_id]
    if priority is not None:
        sql += " AND priority = $2"
        params.append(priority)
    rows = await query(database_url, sql + " GROUP BY status", *params)
    return {str(row[0]): int(row[1]) for row in rows}


async def connected_sessions(database_url: str) -> int:
    rows = await query(database_url, "SELECT count(*) FROM sessions WHERE state = 'connected'")
    return int(rows[0][0])


async def foreign_commands(database_url: str, company_id: str) -> int:
    """Entries of other companies: commands left on the topics by earlier (interrupted)
    runs, which the worker consumed too (and rejected: their sessions are not here)."""
    rows = await query(
        database_url, "SELECT count(*) FROM messages WHERE company_id <> $1", company_id
    )
    return int(rows[0][0])


async def transactions(database_url: str) -> int:
    """Transactions committed in the database so far (the statistics lag by up to ~1 s)."""
    name = database_url.rsplit("/", 1)[1]
    rows = await query(
        database_url, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
    )
    return int(rows[0][0]) if rows else 0


async def wait_until(
    ctx: Context,
    worker: WorkerProcess,
    what: str,
    progress: Callable[[], Awaitable[int]],
    target: int,
    *,
    stall_s: float,
    every_s: float = 0.5,
    report_s: float = 5.0,
    partial: bool = False,
    moving: Callable[[], Awaitable[int]] | None = None,
) -> float:
    """Poll ``progress()`` until it reaches ``target``; the wall time it did. Raises when
    the worker exits, or when nothing moves for ``stall_s`` seconds (with ``partial``,
    returns then: the caller reports how far it got). What "moves" is ``moving()`` when
    given (the worker may be busy with other work first), else ``progress()``."""
    last_moved, last_change, last_report = -1, time.monotonic(), time.monotonic()
    while True:
        worker.ensure_running()
        value = await progress()
        now = time.monotonic()
        if value >= target:
            return time.time()
        moved = value if moving is None else await moving()
        if moved != last_moved:
            last_moved, last_change = moved, now
        elif now - last_change > stall_s:
            if partial:
                ctx.say(f"  {what}: stuck at {value:,}/{target:,} for {stall_s:g} s, going on")
                return time.time()
            raise TimeoutError(
                f"{what}: stuck at {value:,}/{target:,} for {stall_s:g} s; "
                f"worker log: {worker.log_path}\n{worker.child.log_tail(20)}"
            )
        if now - last_report >= report_s:
            ctx.say(f"  {what}: {value:,}/{target:,}")
            last_report = now
        await asyncio.sleep(every_s)


def witness_check(
    result: Result, accepted: dict[str, list[float]], message_ids: Sequence[str], label: str = ""
) -> list[float]:
    """Add the exactly-once figures; the first acceptance time of each accepted message."""
    once = sum(1 for m in message_ids if len(accepted.get(m, ())) == 1)
    duplicated = [m for m in message_ids if len(accepted.get(m, ())) > 1]
    missing = sum(1 for m in message_ids if m not in accepted)
    result.add(
        f"{label}accepted exactly once (simulator witness)",
        f"{once:,} / {len(message_ids):,}",
        f"{len(duplicated):,} duplicated, {missing:,} never accepted",
    )
    return sorted(accepted[m][0] for m in message_ids if m in accepted)


# --- 1. throughput -----------------------------------------------------------------------


async def fill_ledger(database_url: str, plan: Sequence[Planned]) -> float:
    """Take the commands of ``plan`` into the ledger here, as the worker's consumer would
    (``accept_command``, 500 per transaction); seconds it took."""
    database = Database(database_url, pool_size=2)
    started = time.perf_counter()
    try:
        now = datetime.now(UTC)
        for chunk in chunks(plan, 500):
            async with WhatsappUnitOfWork(database) as uow:
                for _, _, record in chunk:
                    command = commands_pb2.WhatsappCommand.FromString(record.value)
                    await ledger.accept_command(
                        uow, command.send_message, command.envelope, Priority.BULK, BULK_TOPIC, now
                    )
                await uow.commit()
    finally:
        await database.dispose()
    return time.perf_counter() - started


async def bench_throughput(ctx: Context) -> Result:
    args = ctx.args
    result = Result(
        f"Sends through one worker: {args.messages:,} bulk commands published first, "
        f"{args.send_sessions} sim sessions, limits lifted"
    )
    async with ctx.database() as database_url:
        sessions = await ctx.seed_sessions(database_url, args.send_sessions)
        plan = plan_commands(ctx.company_id, args.messages, sessions)
        published_in = await ctx.publish(plan)
        ctx.say(f"published {len(plan):,} bulk commands in {published_in:.1f} s")
        result.add(
            "publish (before the worker starts)",
            f"{published_in:.1f} s",
            f"{len(plan) / published_in:,.0f} commands/s",
        )
        await measure_sends(ctx, result, "throughput", database_url, sessions, plan)
        return result


async def bench_drivers(ctx: Context) -> Result:
    args = ctx.args
    result = Result(
        f"Sends from a full ledger (drivers alone, no consumer load): {args.messages:,} "
        f"entries, {args.send_sessions} sim sessions, limits lifted"
    )
    async with ctx.database() as database_url:
        sessions = await ctx.seed_sessions(database_url, args.send_sessions)
        plan = plan_commands(ctx.company_id, args.messages, sessions)
        filled_in = await fill_ledger(database_url, plan)
        ctx.say(f"{len(plan):,} entries queued in the ledger in {filled_in:.1f} s")
        result.add(
            "ledger filled here (accept_command, 500/transaction)",
            f"{filled_in:.1f} s",
            f"{len(plan) / filled_in:,.0f} entries/s, one process, no Kafka, no inbox",
        )
        await measure_sends(ctx, result, "drivers", database_url, sessions, plan)
        return result


async def bench_ingest(ctx: Context) -> Result:
    args = ctx.args
    result = Result(
        f"Consumer alone: {args.messages:,} bulk commands published first, "
        f"{args.send_sessions} sessions that do not run (nothing is sent)"
    )
    async with ctx.database() as database_url:
        database = Database(database_url, pool_size=2)
        try:
            sessions = await seed_sim_sessions(
                database, args.send_sessions, ctx.company_id, desired_running=False
            )
        finally:
            await database.dispose()
        plan = plan_commands(ctx.company_id, args.messages, sessions)
        published_in = await ctx.publish(plan)
        ctx.say(f"published {len(plan):,} bulk commands in {published_in:.1f} s")
        transactions_before = await transactions(database_url)
        worker = ctx.worker("ingest", database_url)
        worker.start()
        sampler = ctx.sampler(worker)
        sampler.start()
        try:

            async def ingested() -> int:
                return sum((await status_counts(database_url, ctx.company_id)).values())

            await wait_until(
                ctx, worker, "commands in the ledger", ingested, len(plan), stall_s=args.stall
            )
            await asyncio.sleep(1.5)  # let pg_stat_database catch up
            transactions_used = await transactions(database_url) - transactions_before
        finally:
            await sampler.stop()
            await worker.stop()
        counts = await status_counts(database_url, ctx.company_id)
        result.add("ledger statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
        rows = await query(
            database_url,
            "SELECT min(queued_at), max(queued_at) FROM messages WHERE company_id = $1",
            ctx.company_id,
        )
        first, last = rows[0][0].timestamp(), rows[0][1].timestamp()
        window = last - first
        result.add(
            "COMMANDS INTO THE LEDGER /S",
            f"{len(plan) / window:,.0f}" if window > 0 else "n/a",
            f"first to last queued_at: {window:.1f} s",
        )
        worker_cpu = sampler.cpu("worker", first, last)
        result.add(
            "worker CPU while consuming",
            f"{worker_cpu / window:.2f} cores",
            f"{worker_cpu / len(plan) * 1000:.2f} ms CPU per command",
        )
        result.add("CPU use while consuming", sampler.cpu_split(first, last))
        result.add(
            "database transactions per command",
            f"{transactions_used / len(plan):.2f}",
            f"{transactions_used:,} over the worker's run (consumer, relay, idle drivers)",
        )
        await report_worker(ctx, result, worker, database_url)
        return result


async def report_worker(
    ctx: Context, result: Result, worker: WorkerProcess, database_url: str
) -> None:
    """What every benchmark reports of its worker: log lines by level, the partitions it
    owned, commands of earlier runs it consumed, and its profile when asked for."""
    levels = worker.log_counts()
    result.add("worker log lines by level", ", ".join(f"{k} {v}" for k, v in levels.items()))
    result.add("worker owned", worker.ownership())
    result.add(
        "foreign commands consumed",
        f"{await foreign_commands(database_url, ctx.company_id):,}",
        "left on the topics by earlier runs; rejected (unknown session)",
    )
    result.profile = worker.top_functions()


async def measure_sends(
    ctx: Context,
    result: Result,
    name: str,
    database_url: str,
    sessions: Sequence[str],
    plan: Sequence[Planned],
) -> None:
    """Start a worker, wait until every message of ``plan`` is done, add the figures."""
    args = ctx.args
    transactions_before = await transactions(database_url)
    worker = ctx.worker(name, database_url)
    worker.start()
    sampler = ctx.sampler(worker)
    sampler.start()
    try:

        async def done() -> int:
            counts = await status_counts(database_url, ctx.company_id)
            return sum(counts.get(status, 0) for status in DONE_STATUSES)

        finished = await wait_until(
            ctx, worker, "messages sent", done, len(plan), stall_s=args.stall
        )
        await asyncio.sleep(1.5)  # let pg_stat_database catch up
        transactions_used = await transactions(database_url) - transactions_before
    finally:
        await sampler.stop()
        await worker.stop()
    message_ids = [message_id for message_id, _, _ in plan]
    accepted = await ctx.acceptances(sessions)
    times = witness_check(result, accepted, message_ids)
    counts = await status_counts(database_url, ctx.company_id)
    result.add("ledger statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    first, last = times[0], times[-1]
    window = last - first
    owning = worker.log_times("owning partitions")
    if owning:
        result.add(
            "worker start → partitions assigned",
            f"{owning[0] - worker.started_at:.1f} s",
            "interpreter, imports (PYTHONDONTWRITEBYTECODE: compiled at every start), group join",
        )
        result.add(
            "partitions assigned → first send",
            f"{first - owning[0]:.1f} s",
            "sessions adopted, connected (pairing), first claims",
        )
    else:
        result.add("worker start → first send", f"{first - worker.started_at:.1f} s")
    queued = await query(
        database_url,
        "SELECT min(queued_at), max(queued_at) FROM messages WHERE company_id = $1",
        ctx.company_id,
    )
    ingest_s = (queued[0][1] - queued[0][0]).total_seconds()
    if name != "drivers":
        result.add(
            "commands into the ledger (consumer)",
            f"{len(plan) / ingest_s:,.0f} /s" if ingest_s > 0 else "n/a",
            f"first to last queued_at: {ingest_s:.1f} s",
        )
    result.add(
        "first send → last send (witness)",
        f"{window:.1f} s",
        f"worker start → last send {last - worker.started_at:.1f} s, "
        f"→ all recorded {finished - worker.started_at:.1f} s",
    )
    result.add("SENDS/S (first → last acceptance)", f"{len(times) / window:,.0f}")
    p10, p90 = percentile(times, 0.1), percentile(times, 0.9)
    result.add(
        "sends/s, middle 80 % of acceptances",
        f"{0.8 * len(times) / (p90 - p10):,.0f}" if p90 > p10 else "n/a",
        "without ramp-up and tail",
    )
    worker_cpu = sampler.cpu("worker", first, last)
    result.add(
        "worker CPU over the send window",
        f"{worker_cpu / window:.2f} cores",
        f"{worker_cpu / len(times) * 1000:.2f} ms CPU per send",
    )
    result.add("CPU use over the send window", sampler.cpu_split(first, last))
    result.add(
        "database transactions per send",
        f"{transactions_used / len(plan):.2f}",
        f"{transactions_used:,} over the worker's run (ingest, claims, outcomes, relay)",
    )
    await report_worker(ctx, result, worker, database_url)


# --- 2. interactive latency under a bulk backlog -----------------------------------------


async def bench_interactive(ctx: Context) -> Result:
    args = ctx.args
    total = int(args.rate * args.seconds)
    result = Result(
        f"Interactive latency while a bulk backlog drains: {args.backlog:,} bulk queued first, "
        f"then {args.rate:g} interactive/s for {args.seconds:g} s, {args.send_sessions} sessions"
    )
    async with ctx.database() as database_url:
        sessions = await ctx.seed_sessions(database_url, args.send_sessions)
        backlog = plan_commands(ctx.company_id, args.backlog, sessions)
        published_in = await ctx.publish(backlog)
        ctx.say(f"published {len(backlog):,} bulk commands in {published_in:.1f} s")
        worker = ctx.worker("interactive", database_url)
        worker.start()
        sampler = ctx.sampler(worker)
        sampler.start()
        due_at: dict[str, float] = {}
        lags: list[float] = []
        try:

            async def bulk_done() -> int:
                counts = await status_counts(database_url, ctx.company_id, priority=1)
                return sum(counts.get(status, 0) for status in DONE_STATUSES)

            warm = max(1, min(len(backlog) // 50, 200))
            await wait_until(
                ctx, worker, "bulk sends before the load", bulk_done, warm, stall_s=args.stall
            )
            ctx.say(f"bulk is draining: {args.rate:g} interactive/s for {args.seconds:g} s")
            # Recipients apart from the campaign's: no reply waits behind a bulk message
            # to the same customer.
            interactive = [
                (message_id, record)
                for message_id, _, record in plan_commands(
                    ctx.company_id, total, sessions, INTERACTIVE_TOPIC, first_recipient=50_000_000
                )
            ]
            pending: list[asyncio.Task[None]] = []

            async def publish_one(record: OutgoingRecord) -> None:
                await ctx.publisher.publish([record])

            start = time.perf_counter()
            wall_start = time.time()
            for i, (message_id, record) in enumerate(interactive):
                due = start + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(time.perf_counter() - due)
                due_at[message_id] = wall_start + (due - start)
                pending.append(asyncio.create_task(publish_one(record)))
            await asyncio.gather(*pending)
            window_end = wall_start + total / args.rate
            bulk_counts = await status_counts(database_url, ctx.company_id, priority=1)
            bulk_queued = bulk_counts.get("queued", 0)
            bulk_unconsumed = len(backlog) - sum(bulk_counts.values())

            async def interactive_done() -> int:
                counts = await status_counts(database_url, ctx.company_id, priority=0)
                return sum(counts.get(status, 0) for status in DONE_STATUSES)

            async def anything_done() -> int:
                counts = await status_counts(database_url, ctx.company_id)
                return sum(counts.get(status, 0) for status in DONE_STATUSES)

            await wait_until(
                ctx,
                worker,
                "interactive sent",
                interactive_done,
                total,
                stall_s=args.stall,
                moving=anything_done,
            )
            await wait_until(
                ctx, worker, "bulk backlog drained", bulk_done, len(backlog), stall_s=args.stall
            )
        finally:
            await sampler.stop()
            await worker.stop()
        accepted = await ctx.acceptances(sessions)
        interactive_ids = list(due_at)
        witness_check(result, accepted, interactive_ids, "interactive ")
        bulk_ids = [message_id for message_id, _, _ in backlog]
        bulk_times = witness_check(result, accepted, bulk_ids, "bulk ")
        latencies = sorted(accepted[m][0] - due_at[m] for m in interactive_ids if m in accepted)
        for label, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            result.add(
                f"INTERACTIVE LATENCY {label}", f"{percentile(latencies, fraction) * 1000:,.0f} ms"
            )
        result.add(
            "interactive latency max",
            f"{latencies[-1] * 1000:,.0f} ms" if latencies else "n/a",
            f"from the due time of the publish to the simulator's acceptance, {len(latencies)} "
            "messages",
        )
        rows = await query(
            database_url,
            "SELECT message_id, queued_at FROM messages WHERE priority = $1",
            int(Priority.INTERACTIVE),
        )
        queued_at = {str(row[0]): row[1].timestamp() for row in rows}
        consumed = sorted(queued_at[m] - due_at[m] for m in interactive_ids if m in queued_at)
        sent = sorted(
            accepted[m][0] - queued_at[m]
            for m in interactive_ids
            if m in queued_at and m in accepted
        )
        for part, values in (
            ("publish → in the ledger (consumer)", consumed),
            ("in the ledger → accepted (driver)", sent),
        ):
            result.add(
                f"  of which {part}",
                f"p50 {percentile(values, 0.5) * 1000:,.0f} ms",
                f"p99 {percentile(values, 0.99) * 1000:,.0f} ms, max "
                f"{(values[-1] if values else float('nan')) * 1000:,.0f} ms (queued_at)",
            )
        result.add(
            "publish lag p99 (generator)",
            f"{percentile(sorted(lags), 0.99) * 1000:.1f} ms",
            "how late the generator's publishes started",
        )
        in_window = sum(1 for t in bulk_times if wall_start <= t <= window_end)
        result.add(
            "bulk sends/s during the interactive window",
            f"{in_window / (window_end - wall_start):,.0f}",
            f"{in_window:,} bulk sends; when it ended {bulk_queued:,} bulk were queued in the "
            f"ledger and {bulk_unconsumed:,} not consumed from Kafka yet",
        )
        if bulk_times:
            drain = bulk_times[-1] - bulk_times[0]
            result.add(
                "bulk sends/s over the whole drain",
                f"{len(bulk_times) / drain:,.0f}" if drain > 0 else "n/a",
                f"{len(bulk_times):,} in {drain:.1f} s",
            )
        result.add("CPU use during the window", sampler.cpu_split(wall_start, window_end))
        await report_worker(ctx, result, worker, database_url)
        return result


# --- 3. memory per idle session ----------------------------------------------------------


async def settled_rss(worker: WorkerProcess, seconds: float) -> int:
    """The worker's RSS after ``seconds`` more (the last of samples taken each second)."""
    rss = worker.rss()
    for _ in range(max(1, int(seconds))):
        await asyncio.sleep(1)
        worker.ensure_running()
        rss = worker.rss()
    return rss


async def bench_memory(ctx: Context) -> Result:
    args = ctx.args
    count = args.sessions
    result = Result(f"Idle sessions in one worker: {count:,} sim sessions, connected and idle")
    # The baseline: a worker that joined the group and drives nothing.
    async with ctx.database() as database_url:
        worker = ctx.worker("memory-0", database_url)
        worker.start()
        try:

            async def assigned() -> int:
                return len(worker.log_times("owning partitions"))

            await wait_until(ctx, worker, "worker owning its partitions", assigned, 1, stall_s=120)
            baseline = await settled_rss(worker, 5)
        finally:
            await worker.stop()
    ctx.say(f"worker RSS with no session: {baseline / MIB:.1f} MiB")
    async with ctx.database() as database_url:
        await ctx.seed_sessions(database_url, count)
        worker = ctx.worker("memory-n", database_url)
        worker.start()
        sampler = ctx.sampler(worker)
        sampler.start()
        try:

            async def connected() -> int:
                return await connected_sessions(database_url)

            await wait_until(
                ctx,
                worker,
                "sessions connected",
                connected,
                count,
                stall_s=args.stall,
                every_s=1,
                partial=True,
            )
            reached = await connected()
            rows = await query(
                database_url, "SELECT min(connected_since), max(connected_since) FROM sessions"
            )
            first, last = rows[0][0].timestamp(), rows[0][1].timestamp()
            owning = worker.log_times("owning partitions")
            ctx.say(f"{reached:,} connected; idle for {args.idle_seconds:g} s")
            held = await settled_rss(worker, 5)
            idle_start = time.time()
            transactions_before = await transactions(database_url)
            await asyncio.sleep(args.idle_seconds)
            idle_end = time.time()
            transactions_idle = await transactions(database_url) - transactions_before
            held_after = worker.rss()
            still = await connected()
        finally:
            await sampler.stop()
            await worker.stop()
        crashed = len(worker.log_times("crashed"))
        result.add(
            "sessions connected",
            f"{reached:,} / {count:,}",
            f"{crashed:,} session drivers crashed (worker log)" if crashed else "",
        )
        result.add("worker RSS, no session (group joined)", f"{baseline / MIB:.1f} MiB")
        result.add(
            f"worker RSS with {count:,} idle sessions",
            f"{held / MIB:.1f} MiB",
            f"{held_after / MIB:.1f} MiB after {args.idle_seconds:g} s idle",
        )
        result.add("WORKER MEMORY PER IDLE SESSION", f"{(held - baseline) / count / KIB:.1f} KiB")
        result.add(
            "worker start → last one connected",
            f"{last - worker.started_at:.1f} s",
            f"{reached / (last - worker.started_at):,.0f} sessions/s",
        )
        if owning:
            result.add(
                "sessions taken over → last one connected",
                f"{last - owning[0]:.1f} s",
                f"taken over {owning[0] - worker.started_at:.1f} s after start (drivers start "
                f"as they are); first connected {first - worker.started_at:.1f} s after start",
            )
        idle_window = idle_end - idle_start
        worker_cpu = sampler.cpu("worker", idle_start, idle_end)
        result.add(
            "worker CPU while idle",
            f"{worker_cpu / idle_window:.2f} cores",
            f"{worker_cpu / idle_window / count * 1e6:.0f} µs CPU per session per second",
        )
        result.add(
            "database transactions while idle",
            f"{transactions_idle / idle_window:,.0f} /s",
            f"{transactions_idle / idle_window / count:.2f} per session per second",
        )
        result.add("CPU use while idle", sampler.cpu_split(idle_start, idle_end))
        result.add("sessions still connected after the idle time", f"{still:,} / {count:,}")
        await report_worker(ctx, result, worker, database_url)
        return result


async def leave_one_at_a_time(ctx: Context, leaving: WorkerProcess, staying: WorkerProcess) -> None:
    """Stop ``leaving`` and wait until ``staying`` owns partitions again, so that it is not
    stopped in the middle of the rebalance the first one caused: the embedded broker can
    keep a member that leaves while joining as the group's leader, and the next worker's
    joins then loop without an assignment."""
    before = len(staying.log_times("owning partitions"))
    await leaving.stop()

    async def reassigned() -> int:
        return len(staying.log_times("owning partitions")) - before

    await wait_until(
        ctx, staying, "the remaining worker owning partitions", reassigned, 1, stall_s=60
    )


# --- 4. a worker joins -------------------------------------------------------------------


async def bench_rebalance(ctx: Context) -> Result:
    args = ctx.args
    count = args.rebalance_sessions
    result = Result(f"A worker joins: {count:,} connected sessions on one worker, then two")
    async with ctx.database() as database_url:
        await ctx.seed_sessions(database_url, count)

        async def connected() -> int:
            return await connected_sessions(database_url)

        first = ctx.worker("rebalance-1", database_url)
        first.start()
        second: WorkerProcess | None = None
        try:
            await wait_until(ctx, first, "sessions connected", connected, count, stall_s=args.stall)
            await asyncio.sleep(2)
            joined = time.time()
            second = ctx.worker("rebalance-2", database_url)
            second.start()
            newcomer = second

            async def newcomer_owns() -> int:
                return len(newcomer.log_times("owning partitions"))

            await wait_until(
                ctx, second, "second worker owning partitions", newcomer_owns, 1, stall_s=120
            )
            settled = await wait_until(
                ctx, second, "sessions connected again", connected, count, stall_s=args.stall
            )
            rows = await query(
                database_url,
                "SELECT owner, count(*) AS sessions,"
                " count(*) FILTER (WHERE connected_since > to_timestamp($1)) AS reconnected"
                " FROM sessions GROUP BY owner",
                joined,
            )
            owned_after_join = {worker.name: worker.ownership() for worker in (first, second)}
        finally:
            if second is not None:
                await leave_one_at_a_time(ctx, second, first)
            await first.stop()
        names = {
            f"{socket.gethostname()}:{worker.pid}": worker.name
            for worker in (first, second)
            if worker is not None
        }
        by_worker = {names.get(row["owner"], row["owner"]): row for row in rows}
        moved = int(by_worker["rebalance-2"]["sessions"]) if "rebalance-2" in by_worker else 0
        reconnected = sum(int(row["reconnected"]) for row in rows)
        stayed = by_worker.get("rebalance-1")
        result.add(
            "sessions that moved to the newcomer",
            f"{moved:,} / {count:,}",
            f"newcomer: {owned_after_join['rebalance-2']}",
        )
        result.add(
            "SESSIONS RECONNECTED BY THE JOIN",
            f"{reconnected:,} / {count:,}",
            f"of the first worker's remaining {int(stayed['sessions']) if stayed else 0:,}: "
            f"{int(stayed['reconnected']) if stayed else 0:,} reconnected",
        )
        result.add("join → every session connected again", f"{settled - joined:.1f} s")
        result.add("first worker after the join", owned_after_join["rebalance-1"])
        await report_worker(ctx, result, first, database_url)
        return result


# --- main --------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[Context], Awaitable[Result]]] = {
    "throughput": bench_throughput,
    "interactive": bench_interactive,
    "memory": bench_memory,
    "rebalance": bench_rebalance,
    "drivers": bench_drivers,
    "ingest": bench_ingest,
}
#: What runs when no benchmark is named.
DEFAULT = ("throughput", "interactive", "memory", "rebalance")


async def run(args: argparse.Namespace, run_dir: Path, console: Console) -> list[Result]:
    config = StackConfig.from_env()
    stack = LocalStack(
        run_dir,
        config,
        components=(Component.KAFKA, Component.POSTGRES, Component.REDIS),
        create_databases=False,
        durable=False,
    )
    simulator: SimulatorProcess | None = None
    results: list[Result] = []
    async with stack:
        given = os.environ.get("WHATSAPP_SIMULATOR_URL") or None
        knobs = SIM_KNOBS if args.receipts else SIM_KNOBS | QUIET_RECEIPTS
        if given is None:
            simulator = SimulatorProcess(run_dir / "wasim", knobs=knobs)
            await simulator.start()
        try:
            url = given or (simulator.url if simulator else "")
            async with KafkaPublisher(stack.kafka_bootstrap) as publisher:
                ctx = Context(args, run_dir, console, stack, url, simulator, publisher)
                for name in args.benchmarks or DEFAULT:
                    ctx.say(f"[bold]{name}[/bold]")
                    results.append(await BENCHMARKS[name](ctx))
                    print_result(console, results[-1])
        finally:
            if simulator is not None:
                await simulator.stop()
    return results


def print_result(console: Console, result: Result) -> None:
    table = Table(title=result.title, title_justify="left")
    for column in ("figure", "value", "how / note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for figure in result.figures:
        table.add_row(figure.name, figure.value, figure.note)
    console.print(table)
    if result.profile:
        console.print(result.profile, markup=False, highlight=False)


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    memory = psutil.virtual_memory().total / 1024**3
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="benchmark",
        help=f"of {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--send-sessions", type=int, default=50, help="sessions sending")
    parser.add_argument("--messages", type=int, default=20_000, help="throughput: commands")
    parser.add_argument("--backlog", type=int, default=20_000, help="interactive: bulk backlog")
    parser.add_argument("--rate", type=float, default=20.0, help="interactive commands/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="interactive: seconds")
    parser.add_argument("--sessions", type=int, default=10_000, help="memory: idle sessions")
    parser.add_argument("--rebalance-sessions", type=int, default=2_000, help="rebalance: sessions")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="memory: idle window")
    parser.add_argument("--batch", type=int, default=None, help="WHATSAPP_SEND_BATCH")
    parser.add_argument("--receipts", action="store_true", help="the simulator's receipts on")
    parser.add_argument(
        "--stall", type=float, default=120.0, help="give up after this long without progress"
    )
    parser.add_argument("--profile", action="store_true", help="run the worker under cProfile")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (worker logs, profiles)"
    )
    args = parser.parse_args()
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(f"machine: {machine()}")
    console.print(f"command: python -m bench.whatsapp_send {shlex.join(sys.argv[1:])}".rstrip())
    given = [
        name for name in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL") if os.environ.get(name)
    ]
    console.print(
        "servers: "
        + (f"given ({', '.join(given)}), others embedded" if given else "embedded")
        + "; simulator: "
        + ("given (WHATSAPP_SIMULATOR_URL)" if os.environ.get("WHATSAPP_SIMULATOR_URL") else "own")
    )
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-whatsapp-"))
    run_dir.chmod(0o755)  # the embedded Postgres may run as an unprivileged account
    try:
        asyncio.run(run(args, run_dir, console))
    except BaseException:
        console.print(f"[red]failed; logs kept in {run_dir}[/red]")
        raise
    if args.keep:
        console.print(f"logs and profiles kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
