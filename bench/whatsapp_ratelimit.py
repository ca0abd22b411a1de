"""WhatsApp send limits: accuracy of a session's shared Redis bucket, and the adaptive rate
under throttling. ``python -m bench.whatsapp_ratelimit``.

Redis is the local stack's (embedded unless ``REDIS_URL`` is set). Two measurements:

- **accuracy**: ``--workers`` processes (as many replicas) acquire, as fast as they can,
  for one session through :class:`whatsapp.adapters.limits.SessionLimiter` on
  :func:`~whatsapp.adapters.limits.shared_rate_limiter`, at each of ``--rates`` for
  ``--seconds``. Each refusal is asked again at once, so Redis sees the worst contention
  a session's bucket can get. Printed: sends granted per second against the configured
  rate (their ratio; a bucket that starts full may grant ``burst + rate × window`` in a
  window, the "ceiling" column), each process's share of the grants, acquires per second
  and the round trip of one acquire (one Lua script run), p50 and p99;
- **adaptive**: one sender on the ``cloud`` profile (80/s) against a simulated provider
  that throttles whatever exceeds ``--throttled-capacity`` messages in the last second
  while a throttling episode lasts (from 4 s to 12 s); the sender waits ``retry_after``
  when refused and reports every answer to the limiter. Printed: the session's rate,
  the sends and the throttles of every second: halving, then the additive climb back.

Nothing here passes or fails: it only measures. docs/benchmarks.md records figures with
the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path

import redis.asyncio
from esquadrao_devstack.stack import Component, LocalStack, StackConfig
from rich.console import Console
from rich.table import Table
from whatsapp.adapters.limits import CLOUD, LIFTED, SessionLimiter, shared_rate_limiter

#: Every accuracy send goes to one recipient: the ``lifted`` profile has no pair limit, so
#: only the session's bucket is measured.
RECIPIENT = "+5511900000000"
#: When the simulated provider throttles (seconds from the start of the adaptive run).
THROTTLING_EPISODE = (4.0, 12.0)


def _redis(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def percentile(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of the sorted ``ordered`` (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- accuracy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerResult:
    """What one process got: grants, refusals, its window (wall clock) and the round trip
    of each acquire (seconds)."""

    granted: int
    refused: int
    started: float
    ended: float
    round_trips: list[float]
    degraded: bool


@dataclass(frozen=True)
class AccuracyRun:
    rate: float
    burst: float
    workers: list[WorkerResult]

    @property
    def window(self) -> float:
        """From the first process's start to the last one's end."""
        return max(w.ended for w in self.workers) - min(w.started for w in self.workers)

    @property
    def granted(self) -> int:
        return sum(w.granted for w in self.workers)

    @property
    def achieved(self) -> float:
        return self.granted / self.window

    @property
    def ceiling(self) -> float:
        """The most a bucket that starts full may grant per second over the window."""
        return (self.burst + self.rate * self.window) / self.window

    @property
    def acquires_per_second(self) -> float:
        return sum(w.granted + w.refused for w in self.workers) / self.window


async def _hammer(
    redis_url: str, session_id: str, rate: float, burst: float, seconds: float, start: Barrier
) -> WorkerResult:
    client = _redis(redis_url)
    fallback = shared_rate_limiter(client)
    limiter = SessionLimiter(fallback)
    limiter.configure(session_id, LIFTED, {"rate": rate, "burst": burst})
    try:
        await client.ping()  # connected before the clock starts
        await asyncio.to_thread(start.wait)
        granted = refused = 0
        round_trips: list[float] = []
        started = time.time()
        deadline = time.perf_counter() + seconds
        while (before := time.perf_counter()) < deadline:
            decision = await limiter.acquire(session_id, RECIPIENT)
            round_trips.append(time.perf_counter() - before)
            if decision.allowed:
                granted += 1
            else:
                refused += 1
        return WorkerResult(
            granted, refused, started, time.time(), round_trips, degraded=fallback.degraded
        )
    finally:
        await client.aclose()


def _worker(
    redis_url: str,
    session_id: str,
    rate: float,
    burst: float,
    seconds: float,
    start: Barrier,
    results: multiprocessing.queues.Queue[WorkerResult],
) -> None:
    results.put(asyncio.run(_hammer(redis_url, session_id, rate, burst, seconds, start)))


def run_accuracy(
    redis_url: str, rate: float, burst: float, workers: int, seconds: float
) -> AccuracyRun:
    """``workers`` processes hammering one fresh session bucket at ``rate``/``burst``."""
    context = multiprocessing.get_context("spawn")  # no fork of a process running a loop
    start = context.Barrier(workers)
    results: multiprocessing.queues.Queue[WorkerResult] = context.Queue()
    session_id = f"bench-{uuid.uuid4().hex[:10]}"
    processes = [
        context.Process(
            target=_worker, args=(redis_url, session_id, rate, burst, seconds, start, results)
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=seconds + 60) for _ in processes]  # before join
    finally:
        for process in processes:
            process.join(timeout=10)
    return AccuracyRun(rate, burst, collected)


# --- adaptive ---------------------------------------------------------------------------------


class ThrottlingProvider:
    """Accepts every send, except during the throttling episode, when it throttles those
    that would make more than ``capacity`` accepted in the last second."""

    def __init__(self, capacity: int, clock_origin: float) -> None:
        self._capacity = capacity
        self._origin = clock_origin
        self._accepted: deque[float] = deque()

    def throttling(self, elapsed: float) -> bool:
        """Whether the episode is on ``elapsed`` seconds after the start."""
        begin, end = THROTTLING_EPISODE
        return begin <= elapsed < end

    def send(self, now: float) -> bool:
        """Whether the send at ``now`` is accepted."""
        while self._accepted and self._accepted[0] <= now - 1.0:
            self._accepted.popleft()
        if self.throttling(now - self._origin) and len(self._accepted) >= self._capacity:
            return False
        self._accepted.append(now)
        return True


@dataclass(frozen=True)
class TracePoint:
    """The second that ended at ``second`` (from the start): whether the provider was
    throttling, the session's rate at its end, sends accepted and throttled in it."""

    second: int
    throttling: bool
    rate: float
    sent: int
    throttled: int


async def run_adaptive(redis_url: str, seconds: float, capacity: int) -> list[TracePoint]:
    """One ``cloud`` session sending as fast as its limits allow to a throttling provider;
    one trace point per second."""
    client = _redis(redis_url)
    limiter = SessionLimiter(shared_rate_limiter(client))
    session_id = f"bench-adaptive-{uuid.uuid4().hex[:10]}"
    limiter.configure(session_id, CLOUD)
    origin = time.monotonic()
    provider = ThrottlingProvider(capacity, origin)
    trace: list[TracePoint] = []
    sent = throttled = sequence = 0
    next_point = 1
    try:
        while True:
            sequence += 1
            decision = await limiter.acquire(session_id, f"+55119{sequence:08d}")
            if not decision.allowed:
                await asyncio.sleep(decision.retry_after)
                continue
            now = time.monotonic()
            while now - origin >= next_point:  # close the seconds that ended before this send
                rate = limiter.current_rate(session_id)
                episode = provider.throttling(next_point - 1)  # episodes start on a second
                trace.append(TracePoint(next_point, episode, rate, sent, throttled))
                sent = throttled = 0
                next_point += 1
            if now - origin >= seconds:
                break
            if provider.send(now):
                sent += 1
                limiter.on_success(session_id)
            else:
                throttled += 1
                limiter.on_throttled(session_id)
    finally:
        await client.aclose()
    return trace


# --- report -----------------------------------------------------------------------------------


def _print_accuracy(console: Console, runs: list[AccuracyRun], seconds: float) -> None:
    workers = len(runs[0].workers)
    table = Table(
        title=f"Session bucket accuracy ({workers} processes, one session, {seconds:g} s, "
        f"{os.cpu_count()} cores)",
        title_justify="left",
    )
    columns = ("rate/s", "burst", "window s", "granted", "achieved/s", "ratio", "ceiling")
    for column in (*columns, "acquires/s", "rtt p50 ms", "rtt p99 ms", "degraded"):
        table.add_column(column, justify="right")
    for run in runs:
        round_trips = sorted(t for w in run.workers for t in w.round_trips)
        table.add_row(
            f"{run.rate:g}",
            f"{run.burst:g}",
            f"{run.window:.2f}",
            f"{run.granted:,}",
            f"{run.achieved:.1f}",
            f"{run.achieved / run.rate:.3f}",
            f"{run.ceiling / run.rate:.3f}",
            f"{run.acquires_per_second:,.0f}",
            f"{percentile(round_trips, 0.5) * 1000:.3f}",
            f"{percentile(round_trips, 0.99) * 1000:.3f}",
            str(any(w.degraded for w in run.workers)),
        )
    console.print(table)
    shares = Table(title="Share of the grants per process (%)", title_justify="left")
    shares.add_column("rate/s", justify="right")
    for index in range(workers):
        shares.add_column(f"p{index}", justify="right")
    for run in runs:
        shares.add_row(
            f"{run.rate:g}", *(f"{100 * w.granted / run.granted:.1f}" for w in run.workers)
        )
    console.print(shares)


def _print_trace(console: Console, trace: list[TracePoint], capacity: int) -> None:
    begin, end = THROTTLING_EPISODE
    table = Table(
        title=f"Adaptive rate, cloud profile (80/s), provider capped at {capacity}/s "
        f"from {begin:g} s to {end:g} s",
        title_justify="left",
    )
    for column in ("second", "throttling", "rate/s", "sent", "throttled"):
        table.add_column(column, justify="right")
    for point in trace:
        table.add_row(
            str(point.second),
            "yes" if point.throttling else "",
            f"{point.rate:g}",
            str(point.sent),
            str(point.throttled),
        )
    console.print(table)


async def _run(
    args: argparse.Namespace, run_dir: Path
) -> tuple[list[AccuracyRun], list[TracePoint]]:
    stack = LocalStack(run_dir, StackConfig.from_env(), components=[Component.REDIS])
    async with stack:
        runs = [
            await asyncio.to_thread(
                run_accuracy, stack.redis_url, rate, args.burst, args.workers, args.seconds
            )
            for rate in args.rates
        ]
        trace = await run_adaptive(stack.redis_url, args.adaptive_seconds, args.throttled_capacity)
    return runs, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8, help="acquiring processes")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[80.0, 500.0],
        help="configured session rates, comma-separated",
    )
    parser.add_argument("--burst", type=float, default=10.0, help="bucket size of each run")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument(
        "--adaptive-seconds", type=float, default=30.0, help="length of the adaptive run"
    )
    parser.add_argument(
        "--throttled-capacity",
        type=int,
        default=30,
        help="messages per second the provider accepts during the throttling episode",
    )
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-ratelimit-"))
    try:
        runs, trace = asyncio.run(_run(args, run_dir))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    console = Console(width=140)  # the tables are wider than a default 80 columns
    _print_accuracy(console, runs, args.seconds)
    _print_trace(console, trace, args.throttled_capacity)


if __name__ == "__main__":
    main()
