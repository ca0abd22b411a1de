"""Contacts API latency under a fixed request rate: ``python -m bench.contacts_api``.

The benchmark starts what it measures: the servers of the local stack (embedded unless
``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``REDIS_URL`` are set), a fresh database migrated
with ``python -m contacts migrate``, ``--contacts`` seeded contacts, and the API as its own
process (``python -m contacts api``: one uvicorn process, as one replica runs). The
company's API limits are lifted through the admin endpoints, so every request still pays
for its rate-limit check in Redis but none is refused.

The load generator is **open loop**: request ``i`` of a run is due at ``start + i / rate``
whatever happened to the requests before it, and its latency is measured from that due
time, not from when it was actually sent. A server that stalls therefore shows the wait
of every request that was due meanwhile (no coordinated omission), and a generator that
cannot keep up shows it in ``send lag`` (how late requests left, p99: waiting for a free
connection, or for the generator itself) instead of quietly lowering the rate. Requests
go over ``--connections`` keep-alive connections (the model of wrk2): a request due while
every connection is busy waits for one, and that wait is part of its latency.

Two endpoints, each at each of ``--rates``:

- ``GET /contacts/{id}``: a random seeded contact;
- ``GET /contacts?limit=50``: a random page of the listing (cursors collected beforehand,
  so deep pages are asked as often as the first).

Nothing here passes or fails: it prints achieved rate, latency percentiles and errors.
docs/benchmarks.md records figures with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from contacts.domain.model import ContactDraft
from contacts.service_layer.contacts import upsert_drafts
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao_common.auth import Role, mint_token
from esquadrao_common.db import Database
from esquadrao_devstack.process import free_port
from esquadrao_devstack.stack import LocalStack, StackConfig
from rich.console import Console
from rich.table import Table

from bench.support import drop_database, fresh_database

COMPANY = "bench-company"
SECRET = "contacts-benchmark-secret-0123456789abcdef"
PAGE_SIZE = 50
SEED_BATCH = 500

#: A request target: the next path to GET (a new random contact or page each call).
Target = Callable[[], str]


@dataclass(frozen=True)
class RunResult:
    """One endpoint at one rate: latencies (seconds) from each request's due time."""

    endpoint: str
    target_rate: float
    duration: float
    latencies: list[float]
    send_lags: list[float]
    errors: int

    @property
    def achieved_rate(self) -> float:
        return len(self.latencies) / self.duration if self.duration else 0.0

    def percentile(self, values: list[float], fraction: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection, reading just enough of each response (status
    line, ``Content-Length``, body) to be done with it. A general client (httpx) costs
    the generator more CPU per request than the server spends answering it, which would
    make the benchmark measure itself."""

    def __init__(self, host: str, port: int, headers: Mapping[str, str]) -> None:
        self._host, self._port = host, port
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._headers = f"Host: {host}:{port}\r\n{extra}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """GET ``path``; the response's status. Reconnects after a failed request."""
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._reader, self._writer
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._headers + b"\r\n")
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            self.close()
            raise
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def open_loop(
    pool: asyncio.Queue[Connection], target: Target, *, rate: float, seconds: float
) -> tuple[list[float], list[float], int, float]:
    """GET ``target()`` at ``rate`` per second for ``seconds``, each request at its due time.

    A request waits for a free connection of ``pool`` if all are busy (as a real client's
    requests do); that wait counts in its latency, which is measured from its due time.
    Returns (latencies of 200 responses, send lags, errors, elapsed seconds).
    """
    total = int(rate * seconds)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0

    async def fire(due: float, path: str) -> None:
        nonlocal errors
        connection = await pool.get()
        lags.append(time.perf_counter() - due)
        try:
            status = await connection.get(path)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            status = 0
        finally:
            pool.put_nowait(connection)
        if status == 200:
            latencies.append(time.perf_counter() - due)
        else:
            errors += 1

    start = time.perf_counter()
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(due, target())))
    await asyncio.gather(*tasks)
    return latencies, lags, errors, time.perf_counter() - start


async def seed(database_url: str, count: int) -> list[str]:
    """``count`` contacts of the benchmark company, created as an import would; their ids."""
    database = Database(database_url, pool_size=2)
    ids: list[str] = []
    try:
        for first in range(0, count, SEED_BATCH):
            drafts = [
                ContactDraft(
                    phone_e164=f"+55119{n:08d}",
                    name=f"Contato {n}",
                    tags=("bench", f"grupo-{n % 20}"),
                    condominio=f"Condomínio {n % 50}",
                )
                for n in range(first, min(count, first + SEED_BATCH))
            ]
            async with ContactsUnitOfWork(database) as uow:
                results = await upsert_drafts(uow, COMPANY, drafts, now=datetime.now(UTC))
                await uow.commit()
            ids.extend(result.contact_id for result in results)
    finally:
        await database.dispose()
    return ids


def _service_env(database_url: str, stack: LocalStack, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
        KAFKA_ENABLE_IDEMPOTENCE="false",
        REDIS_URL=stack.redis_url,
        HTTP_PORT=str(port),
        HTTP_HOST="127.0.0.1",
        JWT_SECRET=SECRET,
        LOG_LEVEL="WARNING",
    )
    return env


async def wait_ready(base_url: str, process: asyncio.subprocess.Process, within: float) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the contacts API exited with status {process.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the contacts API is not ready")
            await asyncio.sleep(0.2)


async def collect_cursors(client: httpx.AsyncClient, headers: Mapping[str, str]) -> list[str]:
    """The cursor of every page of the listing (``""`` for the first)."""
    cursors = [""]
    while True:
        query = f"/contacts?limit={PAGE_SIZE}" + (f"&cursor={cursors[-1]}" if cursors[-1] else "")
        page = (await client.get(query, headers=headers)).json()
        if page["next_cursor"] is None:
            return cursors
        cursors.append(page["next_cursor"])


async def measure(
    port: int,
    ids: list[str],
    *,
    rates: list[float],
    seconds: float,
    warmup: float,
    connections: int,
) -> list[RunResult]:
    token = mint_token(
        company_id=COMPANY, user="bench", role=Role.ADMIN, secret=SECRET, ttl_seconds=3600
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for kind in ("contact", "global"):
            response = await client.put(
                f"/admin/api-limits/{kind}",
                json={"rate": 1_000_000, "burst": 1_000_000},
                headers=headers,
            )
            response.raise_for_status()
        cursors = await collect_cursors(client, headers)
    rng = random.Random(7)

    def one_contact() -> str:
        return f"/contacts/{rng.choice(ids)}"

    def one_page() -> str:
        cursor = rng.choice(cursors)
        return f"/contacts?limit={PAGE_SIZE}" + (f"&cursor={cursor}" if cursor else "")

    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection("127.0.0.1", port, headers))
    endpoints: list[tuple[str, Target]] = [
        ("GET /contacts/{id}", one_contact),
        (f"GET /contacts?limit={PAGE_SIZE}", one_page),
    ]
    results = []
    try:
        for name, target in endpoints:
            for rate in rates:
                await open_loop(pool, target, rate=rate, seconds=warmup)
                latencies, lags, errors, elapsed = await open_loop(
                    pool, target, rate=rate, seconds=seconds
                )
                results.append(RunResult(name, rate, elapsed, latencies, lags, errors))
    finally:
        while not pool.empty():
            pool.get_nowait().close()
    return results


async def run(args: argparse.Namespace, run_dir: Path, console: Console) -> list[RunResult]:
    stack = LocalStack(run_dir, StackConfig.from_env(), create_databases=False, durable=False)
    async with stack:
        database_url = await fresh_database(stack.postgres_url, "bench_contacts")
        port = free_port()
        env = _service_env(database_url, stack, port)
        log_path = run_dir / "contacts-api.log"
        try:
            migrate = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "contacts",
                "migrate",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
            )
            if await migrate.wait() != 0:
                raise RuntimeError(f"python -m contacts migrate exited with {migrate.returncode}")
            started = time.perf_counter()
            ids = await seed(database_url, args.contacts)
            console.print(f"seeded {len(ids):,} contacts in {time.perf_counter() - started:.1f} s")
            with log_path.open("wb") as log:
                api = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "contacts", "api", env=env, stdout=log, stderr=log
                )
            try:
                await wait_ready(f"http://127.0.0.1:{port}", api, within=60)
                return await measure(
                    port,
                    ids,
                    rates=args.rates,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    connections=args.connections,
                )
            finally:
                api.terminate()
                await api.wait()
        finally:
            await drop_database(stack.postgres_url, database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000, help="contacts seeded")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[50.0, 100.0, 150.0, 200.0],
        help="requests per second, comma-separated (each endpoint runs at each)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections of the generator"
    )
    args = parser.parse_args()
    console = Console()
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-contacts-"))
    run_dir.chmod(0o755)  # the embedded Postgres may run as an unprivileged account
    try:
        results = asyncio.run(run(args, run_dir, console))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    table = Table(
        title=f"Contacts API, open loop ({os.cpu_count()} cores, {args.contacts:,} contacts, "
        f"{args.seconds:g} s per run, {args.connections} connections)",
        title_justify="left",
    )
    columns = ("endpoint", "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    for column in (*columns, "errors", "send lag p99 ms"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for result in results:
        ms = [result.percentile(result.latencies, fraction) * 1000 for fraction in (0.5, 0.9, 0.99)]
        table.add_row(
            result.endpoint,
            f"{result.target_rate:g}",
            f"{result.achieved_rate:.0f}",
            *(f"{value:.1f}" for value in ms),
            f"{max(result.latencies, default=float('nan')) * 1000:.1f}",
            str(result.errors),
            f"{result.percentile(result.send_lags, 0.99) * 1000:.1f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
