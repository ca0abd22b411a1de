"""WhatsApp simulator benchmark: idle sessions held, and sends accepted per second.

``python -m bench.wasim_sessions`` starts a simulator as a child process (data in a
temporary directory) and prints:

- memory: the simulator's RSS with ``--sessions`` idle session connections (each paired
  and connected), per session above the RSS of the idle simulator; and this process's
  RSS as the client side (websockets' asyncio client), for reference;
- HTTP sends: ``--sends`` Cloud API sends from ``--concurrency`` keep-alive connections,
  every one recorded by the witness before it is answered; sends/s as this process sees
  them (client and simulator share the machine's cores, and the client is a minimal one
  so that the figure is the simulator's);
- session sends: the same through ``--send-sessions`` session connections.

Limits and receipts are those of a healthy number, minus the throughput and pair limits
(off, or they would refuse most of the load); no webhook URL is registered, so the
receipts are scheduled but not posted. Nothing here passes or fails: it only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from esquadrao_wasim.client import SimSession, SimulatorControl
from esquadrao_wasim.process import SimulatorProcess
from rich.console import Console
from rich.table import Table

KNOBS = {
    "pairing_delay_s": 0,
    "keepalive_timeout_s": 3600,
    "max_mps": None,
    "pair_rate_limit": None,
    "read_rate": 0.0,
}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str


def _raise_open_files_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def bench_idle_sessions(simulator: SimulatorProcess, count: int) -> list[Figure]:
    control = SimulatorControl(simulator.url)
    try:
        baseline = _rss(simulator.pid)
        client_baseline = _rss(os.getpid())
        opening = asyncio.Semaphore(256)
        sessions: list[SimSession] = []

        async def open_one(n: int) -> None:
            async with opening:
                session = await SimSession.open(simulator.url, f"bench-idle-{n}")
                await session.connected(within=60)
                session.frames.clear()
                sessions.append(session)

        started = time.perf_counter()
        await asyncio.gather(*(open_one(n) for n in range(count)))
        opened_in = time.perf_counter() - started
        await asyncio.sleep(3)
        stats = (await control.stats())["sessions"]
        held = _rss(simulator.pid)
        gc.collect()
        client = _rss(os.getpid())
        figures = [
            Figure("sessions connected (simulator's count)", stats["connected"], "sessions"),
            Figure("sessions opened per second (hello → connected)", count / opened_in, "/s"),
            Figure("simulator RSS, idle, no sessions", baseline / MIB, "MiB"),
            Figure(f"simulator RSS with {count:,} idle sessions", held / MIB, "MiB"),
            Figure("simulator memory per idle session", (held - baseline) / count / 1024, "KiB"),
            Figure(
                "client (websockets) memory per session",
                (client - client_baseline) / count / 1024,
                "KiB",
            ),
        ]
        closing = asyncio.Semaphore(512)

        async def close_one(session: SimSession) -> None:
            async with closing:
                await session.close()

        await asyncio.gather(*(close_one(session) for session in sessions))
        return figures
    finally:
        await control.aclose()


async def _post_json(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str, body: bytes
) -> int:
    """One request on a keep-alive HTTP/1.1 connection; returns the status code."""
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def bench_http_sends(simulator: SimulatorProcess, sends: int, concurrency: int) -> Figure:
    """Cloud API sends from a minimal keep-alive HTTP/1.1 client, so that the figure is
    the simulator's and not a client library's (httpx costs more CPU per request than
    the simulator does, on the same cores)."""
    phone_number_id = f"bench-{uuid.uuid4().hex[:8]}"
    async with SimulatorControl(simulator.url) as control:
        await control.register_number(
            phone_number_id, display_phone_number="+5511400000000", access_token="bench-token"
        )
    host, port = simulator.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /v20.0/{phone_number_id}/messages HTTP/1.1\r\nHost: {host}\r\n"
        "Authorization: Bearer bench-token\r\nContent-Type: application/json\r\n"
    )
    counter = iter(range(sends))
    refused = 0

    async def connection() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in counter:
                body = {
                    "messaging_product": "whatsapp",
                    "to": f"+55119{n:08d}",
                    "type": "text",
                    "text": {"body": "Olá! Sua encomenda chegou."},
                    "biz_opaque_callback_data": f"bench-http-{n}",
                }
                if await _post_json(reader, writer, head, json.dumps(body).encode()) != 200:
                    refused += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if refused:
        raise RuntimeError(f"{refused} of {sends} HTTP sends were refused")
    return Figure(f"HTTP sends accepted ({concurrency} connections)", sends / elapsed, "sends/s")


async def bench_session_sends(simulator: SimulatorProcess, sends: int, count: int) -> Figure:
    sessions = [
        await SimSession.open(simulator.url, f"bench-send-{uuid.uuid4().hex[:8]}")
        for _ in range(count)
    ]
    per_session = sends // count

    async def run(index: int, session: SimSession) -> None:
        await session.connected()
        for n in range(per_session):
            await session.send_text(f"bench-ws-{index}-{n}", f"+55119{n:08d}", "Olá!")
        acks = 0
        while acks < per_session:
            frame = await session.expect("ack", "error", within=60)
            if frame["type"] == "error":
                raise RuntimeError(f"session send refused: {frame}")
            acks += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(index, session) for index, session in enumerate(sessions)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(session.close() for session in sessions))
    return Figure(
        f"session sends acked ({count} sessions)", per_session * count / elapsed, "sends/s"
    )


async def main(args: argparse.Namespace) -> None:
    _raise_open_files_limit(args.sessions + 1024)
    data_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-wasim-"))
    console = Console()
    try:
        async with SimulatorProcess(data_dir, knobs=KNOBS) as simulator:
            try:
                figures = await bench_idle_sessions(simulator, args.sessions)
                figures.append(await bench_http_sends(simulator, args.sends, args.concurrency))
                figures.append(await bench_session_sends(simulator, args.sends, args.send_sessions))
                async with SimulatorControl(simulator.url) as control:
                    stats = await control.stats()
            except BaseException:
                console.print(f"[red]the simulator's log ends with:[/]\n{simulator.log_tail()}")
                raise
            figures.append(Figure("accepted by the witness", stats["accepted_total"], "messages"))
            figures.append(
                Figure("duplicates seen by the witness", stats["duplicate_acceptances"], "messages")
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    table = Table(title="WhatsApp simulator", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for figure in figures:
        table.add_row(figure.name, f"{figure.value:,.1f}", figure.unit)
    console.print(table)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="idle sessions to hold")
    parser.add_argument("--sends", type=int, default=20_000, help="sends per send benchmark")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP connections")
    parser.add_argument("--send-sessions", type=int, default=50, help="sessions that send")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
