"""The session driver: one per session a worker owns, from adoption to release.

A driver keeps its session's connection up and sends its queued messages:

* **connection loop** — while the session should run: connect (pairing when it has no
  credentials), then wait for the connection to end; after a drop, wait a full-jitter
  exponential backoff (:class:`~whatsapp.domain.sessions.ReconnectPolicy`) and try again,
  up to ``max_retries`` attempts in a row, then FAILED. A ban is BANNED, a takeover by
  another connection FAILED, a logout forgets the credentials and pairs again. Every
  transition is stored and published (``SessionStateChanged``).
* **breaker** — a :class:`~esquadrao_common.resilience.breaker.CircuitBreaker` per session
  counts failed connection attempts and transient send failures; it opens after
  ``threshold`` in a row, or at once on a quality signal (131048) or a ban, holds
  everything for its timeout, then lets one probe through (half-open). Its changes are
  published (``SessionHealthChanged``) and stored, so pools route around it.
* **send loop** — while connected and the breaker allows: claim the next entries
  (interactive first) in a committed transaction, take each one's tokens from the
  session's limits (rate, then the recipient's pair limit), hand them to the provider
  concurrently across recipients but in order for each recipient, and record all
  outcomes in one transaction. The claim size follows the session's current rate (about
  a quarter second of sending), so a crash can leave few entries UNKNOWN. An idle loop
  sleeps until it is woken (new entries committed) or its earliest retry falls due: it
  costs the database nothing, which is what lets one worker hold thousands of sessions.

The driver never decides ownership: the worker's supervisor takes sessions over in bulk
(:func:`take_over`) when their partition is assigned, creates a driver for each, and
stops it when the partition is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.events import event_type_of, new_envelope
from esquadrao_common.resilience.backoff import Uniform, full_jitter
from esquadrao_common.resilience.breaker import CircuitBreaker, CircuitState
from prometheus_client import Counter, Gauge, Histogram

from whatsapp.adapters.credentials import SAVED
from whatsapp.adapters.limits import RefusedBy, SessionLimiter, profile_named
from whatsapp.domain.events import EVENTS_TOPIC, PRODUCER, session_state_changed
from whatsapp.domain.ledger import LedgerEntry
from whatsapp.domain.messages import (
    InboundMessage,
    OutboundMessage,
    StatusUpdate,
    outbound_from_command,
    to_timestamp,
)
from whatsapp.domain.provider import (
    CloseKind,
    ConnectionClosed,
    FailureKind,
    Pairing,
    ProviderFailure,
    SendAccepted,
    SessionConnection,
)
from whatsapp.domain.sessions import LIVE_STATES, ReconnectPolicy, Session, SessionState
from whatsapp.service_layer import messages as ledger
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

log = logging.getLogger(__name__)

SENDS = Counter(
    "esquadrao_whatsapp_sends",
    "Provider calls by outcome (sent, failed, retry, unknown, released).",
    ["session", "outcome"],
)
SEND_LATENCY = Histogram(
    "esquadrao_whatsapp_send_seconds",
    "Time from handing a message to the provider to its answer.",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONNECTS = Counter(
    "esquadrao_whatsapp_reconnects", "Reconnection attempts per session.", ["session"]
)
CONNECTED = Gauge(
    "esquadrao_whatsapp_session_connected", "1 while the session is connected.", ["session"]
)
UPTIME = Gauge(
    "esquadrao_whatsapp_session_connected_since_seconds",
    "Unix time the session's current connection was established (0: not connected).",
    ["session"],
)
SEND_RATE = Gauge(
    "esquadrao_whatsapp_session_rate",
    "Messages per second the session's adaptive limit allows now.",
    ["session"],
)

#: Entries claimed per round: about this many seconds of sending at the current rate.
CLAIM_HORIZON_S = 0.25
#: How long a closing connection's send round may take to record its outcomes.
SEND_ROUND_GRACE_S = 15.0
#: Backoff (base, cap) in seconds after the driver itself failed (database unavailable).
DRIVER_FAILURE_BACKOFF_S = (1.0, 60.0)


@dataclass(frozen=True)
class DriverPolicy:
    """How drivers behave; built once per worker from the settings."""

    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    breaker_threshold: int = 5
    breaker_timeout_s: float = 600.0
    retry: ledger.RetryPolicy = field(default_factory=lambda: ledger.RetryPolicy(max_attempts=8))
    max_claim: int = 32
    default_profile: str = ""
    #: Sessions of one worker setting up their connection at the same time.
    parallel_starts: int = 32
    metrics_flush_s: float = 10.0


class CredentialVault(Protocol):
    """Seals and opens a session's credentials (encrypted at rest)."""

    def seal(self, secrets: Mapping[str, Any]) -> bytes: ...

    def open(self, sealed: bytes) -> dict[str, Any]: ...


#: Makes the connection of a session: ``connect(session, secrets, listener)``.
ConnectionFactory = Callable[[Session, dict[str, Any], "SessionDriver"], SessionConnection]

#: Where a driver hands receipts to be stored in batches (see :class:`ReceiptWriter`).
ReceiptSink = Callable[[str, StatusUpdate], None]


@dataclass
class SessionFigures:
    """The per-session figures operators ask for (seed 000): flushed to the session row
    and exported to Prometheus."""

    processed: int = 0
    errors: int = 0
    reconnects: int = 0
    response_time_total_s: float = 0.0
    recent: list[float] = field(default_factory=list)

    def record(self, started: float, ended: float, ok: bool) -> None:
        self.processed += 1
        if not ok:
            self.errors += 1
        self.response_time_total_s += ended - started
        self.recent.append(ended)

    def as_dict(
        self, now_mono: float, connected_since: datetime | None, now: datetime
    ) -> dict[str, Any]:
        cutoff = now_mono - 60.0
        self.recent = [moment for moment in self.recent if moment >= cutoff]
        uptime = (now - connected_since).total_seconds() if connected_since else 0.0
        average = self.response_time_total_s / self.processed if self.processed else 0.0
        return {
            "uptime_s": round(uptime, 3),
            "processed": self.processed,
            "per_minute": len(self.recent),
            "average_response_ms": round(average * 1000, 3),
            "errors": self.errors,
            "reconnects": self.reconnects,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


class SessionDriver:
    """Drives one session; see the module docstring. ``start()`` once, ``stop()`` once."""

    def __init__(
        self,
        session: Session,
        *,
        owner: str,
        uow: Callable[[], WhatsappUnitOfWork],
        connect: ConnectionFactory,
        vault: CredentialVault,
        limiter: SessionLimiter,
        receipts: ReceiptSink,
        policy: DriverPolicy,
        starts: asyncio.Semaphore | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: Uniform = random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        session_id = self.session_id = session.id
        self._owner = owner
        self._uow = uow
        self._connect = connect
        self._vault = vault
        self._limiter = limiter
        self._receipts = receipts
        self._policy = policy
        self._starts = starts if starts is not None else asyncio.Semaphore(1)
        self._clock = clock
        self._rng = rng
        self._monotonic = monotonic
        self._session: Session | None = session
        # The first turn uses the session as the takeover read it; later ones read afresh.
        self._fresh = True
        self._connection: SessionConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._control = asyncio.Event()
        self._reconnect_now = False
        self._restart_requested = False
        self._in_round = False
        self._round_over = asyncio.Event()
        self._round_over.set()
        self._draining = False
        # Held: the partition was revoked in a rebalance and may come back (see hold()).
        self._held = False
        self._sender: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._gave_up: str | None = None
        self._attempt_reported = True
        self._connected = asyncio.Event()
        # Set once the connection needs no more set-up from us: connected, or waiting
        # for a phone to pair (which may take minutes).
        self._set_up = asyncio.Event()
        self.figures = SessionFigures()
        self.breaker = CircuitBreaker(
            f"session {session_id}",
            failure_threshold=policy.breaker_threshold,
            reset_timeout=policy.breaker_timeout_s,
            on_state_change=self._breaker_changed,
        )
        self._pending_health: list[tuple[CircuitState, CircuitState, str]] = []
        self._flushed: tuple[object, ...] = ()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"session {self.session_id}")

    async def stop(self) -> None:
        """Stop driving: let the round in progress get its answers and record them, then
        close the connection. Idempotent; returns once the driver is done."""
        self._stopping = True
        self._wake.set()
        self._control.set()
        await self._close_connection()
        if self._task is not None:
            # A failure of the driver was logged where it happened.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _close_connection(self) -> None:
        """Close the connection once the send round in progress is recorded.

        Closing first would fail the sends still waiting for their acknowledgement as
        outcome unknown — messages most likely never delivered, and never re-sent. The
        send loop stops claiming as soon as ``_draining`` is set, and hands nothing more
        over (what it claimed and did not send goes back to the queue).
        """
        self._draining = True
        self._wake.set()
        sender = self._sender
        if sender is not None and not sender.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(sender), SEND_ROUND_GRACE_S)
        if self._connection is not None:
            await self._connection.close()

    async def hold(self) -> None:
        """Stop sending, keep the connection: the session's partition was revoked by a
        rebalance and will most likely be assigned back to this worker, which then
        releases it instead of reconnecting it. Returns once the send round in
        progress recorded its outcomes, so nothing is in flight while another worker may
        take the session over. A held driver does not reconnect a connection that ends."""
        self._held = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._round_over.wait(), SEND_ROUND_GRACE_S)

    def release(self) -> None:
        """The partition came back: send and reconnect again."""
        self._held = False
        self._wake.set()
        self._control.set()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def wake(self) -> None:
        """New entries were queued for this session."""
        self._wake.set()

    async def control(self, action: int, reason: str) -> None:
        """Apply an operator's ``SessionControl`` action (see ``commands.proto``)."""
        if action == commands_pb2.SESSION_ACTION_RESET_BREAKER:
            self.breaker.reset(reason or "manual reset")
            await self._flush_health()
        elif action == commands_pb2.SESSION_ACTION_RECONNECT:
            self._restart_requested = True
            if self._connection is not None:
                self._reconnect_now = True
                await self._close_connection()
        elif action == commands_pb2.SESSION_ACTION_START:
            self._restart_requested = True
            session = self._session
            if session is not None and session.state in (SessionState.BANNED, SessionState.FAILED):
                # The operator vouches for the number again (unbanned, new credentials).
                self.breaker.reset(reason or "restarted by an operator")
                await self._flush_health()
        elif action == commands_pb2.SESSION_ACTION_STOP and self._connection is not None:
            await self._close_connection()
        # START and STOP changed desired_running, which the loop re-reads when woken.
        self._control.set()
        self._wake.set()

    # --- the connection loop --------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if await self._step():
                    return
                failures = 0
            except Exception:
                delay = full_jitter(failures, *DRIVER_FAILURE_BACKOFF_S, self._rng)
                failures += 1
                log.exception(
                    "driver of session %s failed; again in %.1f s", self.session_id, delay
                )
                await self._wait_control(delay)

    async def _step(self) -> bool:
        """One turn of the connection loop; True when the driver is done for good."""
        if self._fresh:
            self._fresh = False
            session = self._session
        else:
            session = await self._load()
        if session is None:
            if self._session is not None:
                await self._move(SessionState.STOPPED, "deleted")
            return True
        if not session.desired_running:
            await self._move(SessionState.STOPPED, "stopped by an operator")
            await self._wait_control(None)
        elif (
            session.state in (SessionState.BANNED, SessionState.FAILED)
            and not self._restart_requested
        ) or self._held:
            # Terminal until an operator restarts it; held until released.
            await self._wait_control(None)
        else:
            await self._connection_round(session)
        return False

    async def _connection_round(self, session: Session) -> None:
        """One connection attempt and its life; then what the way it ended calls for."""
        first = session.state in (
            SessionState.STOPPED,
            SessionState.FAILED,
            SessionState.BANNED,
        )
        if first:
            self._restart_requested = False
            self._gave_up = None
            session.reconnect_attempts = 0
        starting = first or session.state is SessionState.STARTING
        target = SessionState.STARTING if starting else SessionState.RECONNECTING
        retry_after = self.breaker.retry_after()
        if retry_after > 0:
            await self._move(target, f"circuit open: {self.breaker.snapshot().reason}")
            await self._wait_control(retry_after)
            return
        # Set-ups are bounded per worker: after a failover hundreds of sessions arrive at
        # once, and connecting them all together would exhaust the database pool and hit
        # the provider with a storm of logins.
        async with self._starts:
            async with self._uow() as uow:
                await self._move_in(
                    uow,
                    target,
                    "starting" if starting else f"attempt {session.reconnect_attempts + 1}",
                )
                secrets = await self._secrets(uow)
                await uow.commit()
            if not self.breaker.allow():
                return
            self._attempt_reported = False
            try:
                connection = self._connect(session, secrets, self)
            except (ValueError, KeyError) as error:
                self._report_attempt(ok=None)
                await self._move(SessionState.FAILED, f"bad credentials: {error}")
                return
            self._connection = connection
            self._connected.clear()
            self._set_up.clear()
            self._draining = False
            run = asyncio.create_task(connection.run())
            sender = self._sender = asyncio.create_task(self._send_loop())
            set_up = asyncio.ensure_future(self._set_up.wait())
            await asyncio.wait({run, set_up}, return_when=asyncio.FIRST_COMPLETED)
            set_up.cancel()
        try:
            await asyncio.wait({run, sender}, return_when=asyncio.FIRST_COMPLETED)
            failure = sender.exception() if sender.done() else None
            if failure is not None:
                # The send loop failed (the database went away): end the connection and
                # let the reconnection backoff pace the next attempt.
                log.error("send loop of session %s failed: %r", self.session_id, failure)
                await connection.close()
            try:
                closed = await run
            except OSError as error:
                closed = ConnectionClosed(CloseKind.DISCONNECTED, f"cannot connect: {error}")
            if failure is not None:
                closed = ConnectionClosed(CloseKind.DISCONNECTED, f"send loop failed: {failure}")
        finally:
            self._connected.clear()
            self._wake.set()
            await self._finish_send_loop(sender)
            self._connection = None
            CONNECTED.labels(self.session_id).set(0)
            UPTIME.labels(self.session_id).set(0)
        await self._after_close(closed)

    async def _finish_send_loop(self, sender: asyncio.Task[None]) -> None:
        """Let the send round in progress record its outcomes (sends on a closed
        connection fail at once); if it cannot, declare what it had in flight unknown
        now rather than at the next adoption."""
        if sender.done():
            return
        if not self._in_round:
            # Idle or still waiting for the connection: nothing to record.
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            return
        try:
            await asyncio.wait_for(asyncio.shield(sender), SEND_ROUND_GRACE_S)
        except TimeoutError:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            with contextlib.suppress(Exception):
                async with self._uow() as uow:
                    await ledger.resolve_in_flight(uow, [self.session_id], self._clock())
                    await uow.commit()
        except Exception:
            log.exception("send loop of session %s failed while closing", self.session_id)

    def _report_attempt(self, *, ok: bool | None) -> None:
        """Tell the breaker how the connection attempt it let through went, once."""
        if self._attempt_reported:
            return
        self._attempt_reported = True
        if ok is None:
            self.breaker.release()
        elif ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure(None)

    async def _after_close(self, closed: ConnectionClosed) -> None:
        """Where a connection that ended leaves the session (see the module docstring)."""
        session = self._session
        assert session is not None
        if self._gave_up is not None:
            self._report_attempt(ok=None)
            await self._move(SessionState.FAILED, self._gave_up)
            return
        if closed.kind is CloseKind.CLOSED:
            self._report_attempt(ok=None)
            if self._stopping:
                return
            reason = "connection closed"
            if self._reconnect_now:
                self._reconnect_now = False
                session.reconnect_attempts = 0
                reason = "reconnect requested by an operator"
            await self._move(SessionState.DISCONNECTED, reason)
            return
        if closed.kind is CloseKind.BANNED:
            self._report_attempt(ok=None)
            self.breaker.trip(f"banned: {closed.reason}")
            await self._flush_health()
            await self._move(SessionState.BANNED, closed.reason or "banned by WhatsApp")
            return
        if closed.kind is CloseKind.REPLACED:
            self._report_attempt(ok=None)
            await self._move(SessionState.FAILED, "replaced by another connection")
            return
        if closed.kind is CloseKind.LOGGED_OUT:
            self._report_attempt(ok=None)
            await self._forget_credentials()
            await self._move(SessionState.DISCONNECTED, "logged out: pairing again")
            return
        self._report_attempt(ok=False)
        await self._flush_health()
        await self._move(SessionState.DISCONNECTED, closed.reason or "connection lost")
        session.reconnect_attempts += 1
        self.figures.reconnects += 1
        RECONNECTS.labels(self.session_id).inc()
        if self._policy.reconnect.exhausted(session.reconnect_attempts):
            await self._move(
                SessionState.FAILED,
                f"gave up after {session.reconnect_attempts} reconnection attempts",
            )
            return
        delay = self._policy.reconnect.delay(session.reconnect_attempts - 1, self._rng)
        session.next_reconnect_at = self._clock() + timedelta(seconds=delay)
        await self._persist()
        await self._wait_control(delay)

    async def _wait_control(self, seconds: float | None) -> None:
        """Sleep until an operator's action (or stop), or ``seconds`` (None: no limit)."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._control.wait(), seconds)
        self._control.clear()

    # --- ConnectionListener ---------------------------------------------------------------

    async def pairing(self, pairing: Pairing) -> None:
        now = self._clock()
        async with self._uow() as uow:
            await uow.sessions.set_pairing(
                self.session_id,
                {
                    "qr": pairing.qr,
                    "code": pairing.code,
                    "expires_at": (now + timedelta(seconds=pairing.expires_in_s)).isoformat(),
                },
            )
            await self._move_in(uow, SessionState.PAIRING, "waiting for the phone to pair")
            await uow.commit()
        self._set_up.set()

    async def connected(self, phone_e164: str, new_credentials: str | None) -> None:
        session = self._session
        assert session is not None
        self._report_attempt(ok=True)
        async with self._uow() as uow:
            if new_credentials is not None:
                secrets = await self._secrets(uow)
                secrets[SAVED] = new_credentials
                await uow.sessions.set_credentials(self.session_id, self._vault.seal(secrets))
            await uow.sessions.set_pairing(self.session_id, None)
            if phone_e164:
                session.phone_e164 = phone_e164
            self._stage_health(uow)
            await self._move_in(uow, SessionState.CONNECTED, "connected")
            await uow.commit()
        CONNECTED.labels(self.session_id).set(1)
        UPTIME.labels(self.session_id).set(time.time())
        self._set_up.set()
        self._connected.set()
        self._wake.set()

    async def inbound(self, message: InboundMessage) -> None:
        session = self._session
        assert session is not None
        async with self._uow() as uow:
            await ledger.record_inbound(uow, session, message, self._clock())
            await uow.commit()

    async def status(self, update: StatusUpdate) -> None:
        self._receipts(self.session_id, update)

    # --- the send loop --------------------------------------------------------------------

    async def _send_loop(self) -> None:
        await self._connected.wait()
        connection = self._connection
        session = self._session
        assert connection is not None
        assert session is not None
        profile = session.profile or self._policy.default_profile or session.provider.value
        self._limiter.configure(session.id, profile_named(profile), session.limit_overrides)
        last_flush = self._monotonic()
        while not (self._stopping or self._draining) and self._connected.is_set():
            if self._monotonic() - last_flush >= self._policy.metrics_flush_s:
                await self._flush_metrics()
                last_flush = self._monotonic()
            if self._held:
                self._wake.clear()
                await self._sleep_or_wake(None)
                continue
            wait = self.breaker.retry_after()
            if wait > 0:
                await self._sleep_or_wake(wait)
                continue
            rate = self._limiter.current_rate(session.id)
            SEND_RATE.labels(session.id).set(rate)
            size = max(1, min(self._policy.max_claim, math.ceil(rate * CLAIM_HORIZON_S)))
            if self.breaker.state is CircuitState.HALF_OPEN:
                size = 1
            self._wake.clear()
            # From the claim to the recorded outcomes the round must not be cancelled: a
            # claim that committed unseen would leave its entries in flight.
            self._in_round = True
            self._round_over.clear()
            try:
                async with self._uow() as uow:
                    now = self._clock()
                    batch = await ledger.claim(uow, session.id, now, size)
                    due = None if batch else await uow.ledger.next_due_at(session.id)
                    await uow.commit()
                if batch:
                    outcomes = await self._hand_over(connection, batch)
                    async with self._uow() as uow:
                        await ledger.record_outcomes(
                            uow, outcomes, self._clock(), self._policy.retry
                        )
                        await uow.commit()
            finally:
                self._in_round = False
                self._round_over.set()
            if not batch:
                await self._sleep_or_wake(self._idle_wait(due, now))
                continue
            await self._flush_health()

    @staticmethod
    def _idle_wait(due: datetime | None, now: datetime) -> float | None:
        """How long an idle send loop sleeps unless woken: until the earliest retry falls
        due, else until woken (None). New entries wake it once committed, and the
        supervisor's sweep wakes a driver that has claimable entries all the same."""
        return None if due is None else max(0.0, (due - now).total_seconds())

    async def _sleep_or_wake(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _hand_over(
        self, connection: SessionConnection, batch: list[LedgerEntry]
    ) -> list[tuple[LedgerEntry, ledger.Outcome]]:
        """Send ``batch``: concurrently across recipients, in order for each recipient."""
        by_recipient: dict[str, list[LedgerEntry]] = defaultdict(list)
        for entry in batch:
            by_recipient[entry.to_phone_e164].append(entry)
        results: dict[str, ledger.Outcome] = {}

        async def send_in_order(entries: list[LedgerEntry]) -> None:
            for position, entry in enumerate(entries):
                outcome = await self._send_one(connection, entry)
                results[entry.message_id] = outcome
                if outcome is None:
                    # Refused by the pair limit or stopped: later ones to the same
                    # recipient keep their order behind it.
                    for later in entries[position + 1 :]:
                        later.next_attempt_at = entry.next_attempt_at
                        results[later.message_id] = None
                    return

        await asyncio.gather(*(send_in_order(entries) for entries in by_recipient.values()))
        return [(entry, results[entry.message_id]) for entry in batch]

    async def _send_one(self, connection: SessionConnection, entry: LedgerEntry) -> ledger.Outcome:
        session_id = self.session_id
        try:
            message: OutboundMessage = outbound_from_command(entry.send_command())
        except ValueError as error:
            return ProviderFailure(FailureKind.INVALID_REQUEST, "invalid_command", str(error))
        while True:
            if self._stopping or self._draining or self._held or not self._connected.is_set():
                return None
            decision = await self._limiter.acquire(session_id, entry.to_phone_e164)
            if decision.allowed:
                break
            if decision.refused_by is RefusedBy.PAIR:
                entry.next_attempt_at = self._clock() + timedelta(seconds=decision.retry_after)
                SENDS.labels(session_id, "released").inc()
                return None
            await asyncio.sleep(decision.retry_after)
        if not self.breaker.allow():
            return None
        started = self._monotonic()
        try:
            accepted: SendAccepted = await connection.send(message)
        except ProviderFailure as failure:
            self._on_failure(failure)
            self.figures.record(started, self._monotonic(), ok=False)
            SEND_LATENCY.labels(self._provider).observe(self._monotonic() - started)
            return failure
        self.breaker.record_success()
        self._limiter.on_success(session_id)
        self.figures.record(started, self._monotonic(), ok=True)
        SEND_LATENCY.labels(self._provider).observe(self._monotonic() - started)
        SENDS.labels(session_id, "sent").inc()
        return accepted

    def _on_failure(self, failure: ProviderFailure) -> None:
        session_id = self.session_id
        kind = failure.kind
        if failure.outcome_unknown:
            SENDS.labels(session_id, "unknown").inc()
            self.breaker.record_failure(failure)
        elif kind is FailureKind.THROTTLED:
            self._limiter.on_throttled(session_id)
            self.breaker.release()
            SENDS.labels(session_id, "retry").inc()
        elif kind is FailureKind.QUALITY:
            self.breaker.release()
            self.breaker.trip(f"provider error {failure.code}: {failure.title}")
            SENDS.labels(session_id, "failed").inc()
        elif kind is FailureKind.TRANSIENT:
            self.breaker.record_failure(failure)
            SENDS.labels(session_id, "retry" if failure.retryable else "failed").inc()
        elif kind is FailureKind.AUTH:
            self.breaker.release()
            SENDS.labels(session_id, "retry").inc()
            self._connected.clear()
            self._closing = asyncio.get_running_loop().create_task(self._auth_failed(failure))
        else:
            # The message's own problem (undeliverable, invalid, pair rate): the session
            # is fine.
            self.breaker.release()
            SENDS.labels(session_id, "retry" if failure.retryable else "failed").inc()

    async def _auth_failed(self, failure: ProviderFailure) -> None:
        """Credentials refused: end the connection; the session will be FAILED."""
        self._gave_up = f"credentials refused: {failure}"
        await self._close_connection()

    @property
    def _provider(self) -> str:
        return self._session.provider.value if self._session else "unknown"

    # --- state, health, metrics -----------------------------------------------------------

    async def _load(self) -> Session | None:
        """Read the session afresh; None when it is gone or deleted (``_session`` then keeps
        what is known of it, to report it stopped)."""
        async with self._uow() as uow:
            session = await uow.sessions.get(self.session_id)
        if session is None:
            return None
        if session.deleted_at is not None:
            self._session = session
            return None
        if self._session is not None:
            # Keep what this driver knows better than the row (attempts, breaker).
            session.reconnect_attempts = self._session.reconnect_attempts
        self._session = session
        return session

    async def _secrets(self, uow: WhatsappUnitOfWork | None = None) -> dict[str, Any]:
        if uow is None:
            async with self._uow() as own:
                sealed = await own.sessions.credentials(self.session_id)
        else:
            sealed = await uow.sessions.credentials(self.session_id)
        return self._vault.open(sealed) if sealed else {}

    async def _forget_credentials(self) -> None:
        async with self._uow() as uow:
            secrets = await self._secrets(uow)
            secrets.pop(SAVED, None)
            await uow.sessions.set_credentials(self.session_id, self._vault.seal(secrets))
            await uow.commit()

    async def _move(self, state: SessionState, reason: str) -> None:
        async with self._uow() as uow:
            await self._move_in(uow, state, reason)
            await uow.commit()

    async def _move_in(self, uow: WhatsappUnitOfWork, state: SessionState, reason: str) -> None:
        session = self._session
        assert session is not None
        now = self._clock()
        change = session.move(state, reason, now)
        if change is None:
            return
        if not await uow.sessions.set_state(session, now=now, owner=self._owner):
            log.warning("session %s is driven elsewhere now: not moving it", session.id)
            return
        log.info("session %s: %s → %s (%s)", session.id, change.previous.value, state.value, reason)
        key, event = session_state_changed(change)
        uow.stage(EVENTS_TOPIC, key, event)

    async def _persist(self) -> None:
        session = self._session
        assert session is not None
        async with self._uow() as uow:
            await uow.sessions.set_state(session, now=self._clock(), owner=self._owner)
            await uow.commit()

    def _breaker_changed(self, old: CircuitState, new: CircuitState, reason: str) -> None:
        self._pending_health.append((old, new, reason))

    async def _flush_health(self) -> None:
        """Store and publish the breaker changes since the last flush."""
        if not self._pending_health or self._session is None:
            return
        async with self._uow() as uow:
            self._stage_health(uow)
            await uow.sessions.set_state(self._session, now=self._clock(), owner=self._owner)
            await uow.commit()

    def _stage_health(self, uow: WhatsappUnitOfWork) -> None:
        """Stage a ``SessionHealthChanged`` per breaker change since the last one staged,
        and put the breaker's state on the session (written with its state)."""
        session = self._session
        if not self._pending_health or session is None:
            return
        changes, self._pending_health = self._pending_health, []
        now = self._clock()
        for old, new, reason in changes:
            event = whatsapp_pb2.WhatsappEvent(
                session_health_changed=whatsapp_pb2.SessionHealthChanged(
                    session_id=session.id,
                    breaker_state=_BREAKER_TO_PROTO[new],
                    previous_breaker_state=_BREAKER_TO_PROTO[old],
                    reason=reason,
                    changed_at=to_timestamp(now),
                )
            )
            event.envelope.CopyFrom(
                new_envelope(event_type_of(event), session.company_id, PRODUCER, occurred_at=now)
            )
            uow.stage(EVENTS_TOPIC, session.id, event)
        session.breaker_state = changes[-1][1].value
        session.breaker_reason = changes[-1][2]

    async def _flush_metrics(self) -> None:
        session = self._session
        if session is None:
            return
        now = self._clock()
        figures = self.figures.as_dict(self._monotonic(), session.connected_since, now)
        figures["current_rate"] = self._limiter.current_rate(session.id)
        figures["breaker"] = self.breaker.state.value
        fingerprint = (
            figures["processed"],
            figures["reconnects"],
            figures["current_rate"],
            figures["breaker"],
        )
        if fingerprint == self._flushed:
            # Idle since the last flush: uptime is derived from connected_since.
            return
        self._flushed = fingerprint
        async with self._uow() as uow:
            await uow.sessions.save_metrics(session.id, figures, now)
            await uow.commit()


@dataclass(frozen=True)
class Takeover:
    """Sessions a worker took over: the live ones, as read, and how many entries their
    previous drivers had left in flight (now UNKNOWN)."""

    sessions: list[Session]
    unknown: int


async def take_over(
    uow: WhatsappUnitOfWork, session_ids: list[str], owner: str, now: datetime
) -> Takeover:
    """Make ``owner`` the driver of ``session_ids``, in bulk (a rebalance hands a worker
    thousands at once): what earlier drivers left in flight becomes UNKNOWN (never
    re-sent), the sessions are read once, and a "live" state they left behind is reported
    DISCONNECTED. The caller commits, then starts a driver per session returned."""
    unknown = await ledger.resolve_in_flight(uow, session_ids, now)
    await uow.sessions.set_owner(session_ids, owner)
    taken = await uow.sessions.live(session_ids)
    for session in taken:
        if session.state not in LIVE_STATES:
            continue
        change = session.move(SessionState.DISCONNECTED, f"taken over by {owner}", now)
        if change is not None and await uow.sessions.set_state(session, now=now, owner=owner):
            key, event = session_state_changed(change)
            uow.stage(EVENTS_TOPIC, key, event)
    return Takeover(taken, unknown)


_BREAKER_TO_PROTO = {
    CircuitState.CLOSED: whatsapp_pb2.BREAKER_STATE_CLOSED,
    CircuitState.OPEN: whatsapp_pb2.BREAKER_STATE_OPEN,
    CircuitState.HALF_OPEN: whatsapp_pb2.BREAKER_STATE_HALF_OPEN,
}
