"""The whatsapp service as it runs: worker processes (``python -m whatsapp worker``) on a
migrated database, Redis, the WhatsApp simulator and a broker of the test's own.

Why a broker of its own: the send workers' consumer group (``whatsapp-sender``) and its
topics are fixed names from the catalog. On the shared broker, any other whatsapp worker
running at the same time (another test, a benchmark, the local stack) would join the
same group and take some of the partitions, and records left on those topics by other
runs would be read too. A private broker (embedded, in memory, ~1 s to start) gives the
test exactly the members it starts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import pytest
import whatsapp
from esquadrao_common.migrations import upgrade
from esquadrao_devstack.process import ChildProcess
from esquadrao_devstack.stack import Component, LocalStack, StackConfig

MIGRATIONS = Path(whatsapp.__file__).parent / "migrations"

#: Lines of a worker's log shown when something goes wrong.
LOG_TAIL = 40


@pytest.fixture
async def whatsapp_database(database_url: str) -> str:
    """A fresh database with the whatsapp migrations applied."""
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url)
    return database_url


@pytest.fixture
async def private_kafka(tmp_path: Path) -> AsyncIterator[str]:
    """The bootstrap address of a broker of this test alone, with the catalog's topics."""
    stack = LocalStack(
        tmp_path / "stack", StackConfig(), components=[Component.KAFKA], create_databases=False
    )
    async with stack:
        yield stack.kafka_bootstrap


@dataclass
class WorkerProcess:
    """One ``python -m whatsapp worker`` process; its output goes to ``log``."""

    child: ChildProcess
    log: Path

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def name(self) -> str:
        """What the worker writes in the ``owner`` column of the sessions it drives:
        ``host:pid`` (``whatsapp.entrypoints.sender.worker_name``)."""
        return f"{socket.gethostname()}:{self.child.pid}"

    def exited(self) -> str | None:
        """Why the worker is not running, with its log's tail; None while it runs."""
        code = self.child.returncode
        if code is None:
            return None
        return f"worker {self.name} exited with status {code}:\n{self.tail()}"

    def tail(self, lines: int = LOG_TAIL) -> str:
        return self.child.log_tail(lines)

    def problems(self, lines: int = LOG_TAIL) -> str:
        """The last ``lines`` warnings and errors of the log (a shutdown's tail is mostly
        connections closing; these say what went wrong)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        notable = [line for line in text.splitlines() if "[warning" in line or "[error" in line]
        return "\n".join(notable[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed, nothing leaves the group."""
        self.child.kill()


#: Starts one worker with these extra environment variables.
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
async def whatsapp_workers(
    whatsapp_database: str,
    private_kafka: str,
    redis_url: str,
    whatsapp_simulator: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[StartWorker]:
    """Factory of worker processes on the test's servers: ``start(**env)``; the
    limits profile ``lifted`` for every session unless ``WHATSAPP_DEFAULT_PROFILE`` is
    given. Workers still running at the end are stopped (SIGTERM, then SIGKILL); when
    the test failed, every worker's log tail is printed."""
    started: list[WorkerProcess] = []

    def start(**extra_env: str) -> WorkerProcess:
        number = len(started) + 1
        log = tmp_path / f"worker-{number}.log"
        env = {
            **os.environ,
            "DATABASE_URL": whatsapp_database,
            "KAFKA_BOOTSTRAP": private_kafka,
            "REDIS_URL": redis_url,
            "WHATSAPP_SIMULATOR_URL": whatsapp_simulator,
            "WHATSAPP_DEFAULT_PROFILE": "lifted",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "INFO",
            **extra_env,
        }
        child = ChildProcess(
            f"whatsapp-worker-{number}",
            [sys.executable, "-m", "whatsapp", "worker"],
            log_path=log,
            env=env,
        )
        child.start()
        worker = WorkerProcess(child, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        await asyncio.gather(*(worker.child.stop(grace=20.0) for worker in started))
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            for worker in started:
                print(
                    f"\n--- {worker.log}: last warnings and errors\n{worker.problems()}"
                    f"\n--- last lines\n{worker.tail(LOG_TAIL // 4)}"
                )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item (``rep_call``), for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
