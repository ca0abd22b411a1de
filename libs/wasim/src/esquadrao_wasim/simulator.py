"""The simulated WhatsApp itself, shared by both surfaces: knobs, decisions, the witness
records, and the receipts and replies that follow an accepted message.

A *sender* is a Cloud API phone number (channel ``cloud``) or a session (channel
``session``). :meth:`Simulator.submit` decides a send's fate — latency, then the checks in
Meta's order of precedence — records an acceptance durably before it returns, and then
schedules the message's receipts (``sent``, ``delivered``, ``read``) and the customer's
reply. Receipts and inbound messages go to the sender's :class:`EventSink`: signed
webhooks for numbers, frames for sessions.

The simulator never deduplicates: a message id accepted twice is counted twice. That is
the point of a witness.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from esquadrao_wasim import store
from esquadrao_wasim.errors import (
    MESSAGE_LEVEL_ERRORS,
    PAIR_RATE_LIMIT,
    RATE_LIMIT,
    REENGAGEMENT,
    SOMETHING_WENT_WRONG,
    SPAM_RATE_LIMIT,
    UNDELIVERABLE,
    WhatsappError,
)
from esquadrao_wasim.knobs import Knobs, effective_knobs
from esquadrao_wasim.limits import BucketSet

#: How long a customer's last message opens the customer service window (131047).
SERVICE_WINDOW_S = 24 * 3600

_NON_DIGITS = re.compile(r"\D")


def digits(phone: str) -> str:
    """A phone number as WhatsApp ids write it: digits only (``+55 11 9…`` → ``55119…``)."""
    return _NON_DIGITS.sub("", phone)


class Channel(StrEnum):
    CLOUD = "cloud"
    SESSION = "session"


@dataclass(frozen=True)
class Sender:
    """A Cloud API phone number id or a session id, with its channel."""

    channel: Channel
    id: str

    @property
    def scope(self) -> str:
        """The name of its knob override: ``number:<id>`` or ``session:<id>``."""
        return f"{'number' if self.channel is Channel.CLOUD else 'session'}:{self.id}"


@dataclass(frozen=True)
class OutboundMessage:
    """What the simulator needs to know of a send."""

    message_id: str  # the sender's id for it ("" when none was given)
    to: str  # digits
    kind: str  # text, template, image, document, audio, video, ...
    free_form: bool  # not a template: subject to the customer service window


@dataclass(frozen=True)
class SendOutcome:
    """Accepted (``provider_message_id``) or refused (``error``)."""

    provider_message_id: str | None = None
    error: WhatsappError | None = None
    details: str | None = None


@dataclass(frozen=True)
class StatusEvent:
    """A receipt of an accepted message."""

    provider_message_id: str
    message_id: str
    recipient: str  # digits
    status: str  # sent, delivered, read, failed
    timestamp: int
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class InboundEvent:
    """A customer's message to a sender."""

    provider_message_id: str
    from_: str  # digits
    text: str
    timestamp: int
    profile_name: str
    reply_to: str | None = None


Event = StatusEvent | InboundEvent


class EventSink(Protocol):
    """Where a channel's receipts and inbound messages go (webhooks or session frames)."""

    def deliver(self, sender_id: str, event: Event, knobs: Knobs) -> None:
        """Deliver (or queue) ``event`` for ``sender_id``; must not block."""

    def stats(self) -> dict[str, Any]:
        """Counters for ``/_sim/stats``."""

    def clear(self) -> None:
        """Drop whatever is pending (a reset)."""


class PhoneNumber(BaseModel):
    """A Cloud API phone number: how clients authenticate and where its webhooks go."""

    model_config = ConfigDict(extra="forbid")

    phone_number_id: str = Field(min_length=1)
    display_phone_number: str = Field(min_length=1, description="E.164 or digits.")
    access_token: str = Field(min_length=1)
    waba_id: str | None = Field(default=None, description="Entry id of webhooks.")
    webhook_url: str | None = None
    app_secret: str | None = Field(default=None, description="Signs the webhooks.")
    verify_token: str | None = Field(
        default=None, description="Given: the webhook is verified when registered."
    )

    @field_validator("display_phone_number")
    @classmethod
    def _digits_only(cls, value: str) -> str:
        return digits(value)

    @property
    def entry_id(self) -> str:
        return self.waba_id or self.phone_number_id


def _profile_name(customer: str) -> str:
    return f"Cliente {customer[-4:]}"


@dataclass
class _Counters:
    inbound_total: int = 0
    statuses_emitted: dict[str, int] = field(default_factory=dict)


class Simulator:
    """The simulated WhatsApp: see the module docstring. Open with :meth:`open`."""

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.database = store.Database(data_dir / store.DATABASE_FILE)
        self.global_knobs = Knobs()
        self.numbers: dict[str, PhoneNumber] = {}
        self.started_at = time.time()
        self._overrides: dict[str, dict[str, Any]] = {}
        self._effective: dict[str, Knobs] = {}
        self._rngs: dict[str, random.Random] = {}
        self._sinks: dict[Channel, EventSink] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._throughput = BucketSet(clock)
        self._pairs = BucketSet(clock)
        self._last_inbound: dict[tuple[str, str], float] = {}
        self._boot = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._counters = _Counters()

    async def open(self) -> None:
        """Open the database and load numbers and knobs saved by an earlier run."""
        await self.database.open()
        for registration in await self.database.run(store.load_numbers):
            number = PhoneNumber.model_validate(registration)
            self.numbers[number.phone_number_id] = number
        saved = await self.database.run(store.load_knobs)
        self.global_knobs = Knobs.model_validate(saved.pop("global", {}))
        self._overrides = saved

    async def close(self) -> None:
        """Cancel what is scheduled and close the database (everything is committed)."""
        self._cancel_timers()
        await self.database.close()

    def attach(self, channel: Channel, sink: EventSink) -> None:
        """Send ``channel``'s receipts and inbound messages to ``sink``."""
        self._sinks[channel] = sink

    # -- knobs -------------------------------------------------------------------------

    def knobs(self, sender: Sender) -> Knobs:
        """The effective knobs of ``sender``."""
        knobs = self._effective.get(sender.scope)
        if knobs is None:
            knobs = effective_knobs(self.global_knobs, self._overrides.get(sender.scope, {}))
            self._effective[sender.scope] = knobs
        return knobs

    def override(self, sender: Sender) -> dict[str, Any]:
        """The knobs ``sender`` sets itself (over the global ones)."""
        return dict(self._overrides.get(sender.scope, {}))

    async def set_global_knobs(self, knobs: Knobs) -> None:
        """Replace the global knobs (each sender's override still applies over them)."""
        for override in self._overrides.values():
            effective_knobs(knobs, override)  # raises before anything changes
        await self.database.run(store.save_knobs("global", knobs.model_dump()))
        self.global_knobs = knobs
        self._effective.clear()
        self._rngs.clear()

    async def set_override(self, sender: Sender, override: dict[str, Any]) -> Knobs:
        """Replace ``sender``'s override (empty: none); return its effective knobs.

        Raises pydantic's ValidationError, changing nothing, if the result is invalid.
        """
        knobs = effective_knobs(self.global_knobs, override)
        await self.database.run(store.save_knobs(sender.scope, override or None))
        if override:
            self._overrides[sender.scope] = override
        else:
            self._overrides.pop(sender.scope, None)
        self._effective.pop(sender.scope, None)
        self._rngs.pop(sender.scope, None)
        return knobs

    def rng(self, sender: Sender) -> random.Random:
        """``sender``'s random generator: seeded from the ``seed`` knob and the sender, so
        each sender's sequence of outcomes is reproducible on its own."""
        generator = self._rngs.get(sender.scope)
        if generator is None:
            seed = self.knobs(sender).seed
            generator = random.Random(None if seed is None else f"{seed}/{sender.scope}")
            self._rngs[sender.scope] = generator
        return generator

    # -- numbers -----------------------------------------------------------------------

    async def register_number(self, number: PhoneNumber) -> None:
        await self.database.run(
            store.save_number(number.phone_number_id, number.model_dump(mode="json"))
        )
        self.numbers[number.phone_number_id] = number

    async def unregister_number(self, phone_number_id: str) -> bool:
        if phone_number_id not in self.numbers:
            return False
        await self.database.run(store.delete_number(phone_number_id))
        del self.numbers[phone_number_id]
        return True

    # -- sending -----------------------------------------------------------------------

    def new_provider_id(self, peer: str) -> str:
        """A ``wamid.…`` id, unique across runs of the simulator."""
        raw = f"{peer}:{self._boot}:{next(self._ids)}".encode()
        return "wamid." + base64.b64encode(raw).decode()

    async def submit(
        self,
        sender: Sender,
        message: OutboundMessage,
        *,
        still_open: Callable[[], bool] | None = None,
    ) -> SendOutcome:
        """Decide a send and record it: an accepted send is committed when this returns.

        ``still_open`` is asked after the latency: a connection closed meanwhile gets the
        message neither accepted nor refused (nobody could be told).
        """
        knobs = self.knobs(sender)
        rng = self.rng(sender)
        latency_ms = knobs.latency_ms + rng.random() * knobs.latency_jitter_ms
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if still_open is not None and not still_open():
            return SendOutcome()
        error = self._check(sender, message, knobs, rng)
        now = time.time()
        if error is not None and (
            error.code not in MESSAGE_LEVEL_ERRORS or knobs.error_delivery == "sync"
        ):
            self.database.run_soon(
                store.insert_rejected(
                    store.RejectedRow(
                        message.message_id, sender.channel, sender.id, message.to, error.code, now
                    )
                )
            )
            return SendOutcome(error=error)
        provider_id = self.new_provider_id(message.to)
        await self.database.run(
            store.insert_accepted(
                store.AcceptedRow(
                    message.message_id,
                    provider_id,
                    sender.channel,
                    sender.id,
                    message.to,
                    message.kind,
                    now,
                )
            )
        )
        if error is not None:
            self._emit_status(
                sender,
                message,
                provider_id,
                "failed",
                knobs.receipt_delays.sent,
                knobs,
                rng,
                error=error.as_dict(),
            )
        else:
            self._schedule_receipts(sender, message, provider_id, knobs, rng)
        return SendOutcome(provider_message_id=provider_id)

    def _check(
        self, sender: Sender, message: OutboundMessage, knobs: Knobs, rng: random.Random
    ) -> WhatsappError | None:
        """The first error the send runs into, in Meta's order: server, throughput, pair
        rate, quality, recipient."""
        if rng.random() < knobs.failure_rate:
            return SOMETHING_WENT_WRONG
        if knobs.max_mps is not None and not self._throughput.take(
            (sender.scope,), max(1.0, knobs.max_mps), knobs.max_mps
        ):
            return RATE_LIMIT
        if rng.random() < knobs.throttle_rate:
            return RATE_LIMIT
        pair = knobs.pair_rate_limit
        if pair is not None and not self._pairs.take(
            (sender.scope, message.to), pair.burst, 1 / pair.per_seconds
        ):
            return PAIR_RATE_LIMIT
        if rng.random() < knobs.spam_rate:
            return SPAM_RATE_LIMIT
        blocked = {digits(phone) for phone in knobs.not_on_whatsapp}
        if rng.random() < knobs.undeliverable_rate or message.to in blocked:
            return UNDELIVERABLE
        if (
            knobs.enforce_service_window
            and message.free_form
            and time.time() - self._last_inbound.get((sender.scope, message.to), -math.inf)
            > SERVICE_WINDOW_S
        ):
            return REENGAGEMENT
        return None

    def _schedule_receipts(
        self,
        sender: Sender,
        message: OutboundMessage,
        provider_id: str,
        knobs: Knobs,
        rng: random.Random,
    ) -> None:
        delays = knobs.receipt_delays
        at = delays.sent
        self._emit_status(sender, message, provider_id, "sent", at, knobs, rng)
        if rng.random() >= knobs.delivered_rate:
            return
        at = max(at, delays.delivered)
        self._emit_status(sender, message, provider_id, "delivered", at, knobs, rng)
        if rng.random() < knobs.read_rate:
            at = max(at, delays.read)
            self._emit_status(sender, message, provider_id, "read", at, knobs, rng)
        if rng.random() < knobs.reply_rate:
            text = rng.choice(knobs.reply_texts)
            self._later(
                at + knobs.reply_delay_s,
                self.receive,
                sender,
                message.to,
                text,
                None,
                provider_id,
            )

    def _emit_status(
        self,
        sender: Sender,
        message: OutboundMessage,
        provider_id: str,
        status: str,
        at: float,
        knobs: Knobs,
        rng: random.Random,
        *,
        error: dict[str, Any] | None = None,
    ) -> None:
        def make() -> StatusEvent:
            return StatusEvent(
                provider_id, message.message_id, message.to, status, int(time.time()), error
            )

        self._emit(sender, make, at, knobs, rng)

    def _emit(
        self,
        sender: Sender,
        make: Callable[[], Event],
        at: float,
        knobs: Knobs,
        rng: random.Random,
    ) -> None:
        """Deliver ``make()`` to ``sender``'s sink ``at`` seconds from now, shuffled and
        duplicated as the knobs say."""
        if knobs.webhook_shuffle:
            at += rng.random() * knobs.webhook_shuffle_window_s
        copies = 2 if rng.random() < knobs.webhook_duplicate_rate else 1
        for _ in range(copies):
            self._later(at, self._deliver, sender, make)

    def _deliver(self, sender: Sender, make: Callable[[], Event]) -> None:
        sink = self._sinks.get(sender.channel)
        if sink is None:
            return
        event = make()
        if isinstance(event, StatusEvent):
            emitted = self._counters.statuses_emitted
            emitted[event.status] = emitted.get(event.status, 0) + 1
        sink.deliver(sender.id, event, self.knobs(sender))

    def _later(self, delay: float, callback: Callable[..., object], *args: Any) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # -- inbound -----------------------------------------------------------------------

    def receive(
        self,
        sender: Sender,
        customer: str,
        text: str,
        profile_name: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """A customer (``customer``, any phone form) writes to ``sender``: open the service
        window, deliver the message, and return its provider id."""
        customer = digits(customer)
        provider_id = self.new_provider_id(customer)
        self._last_inbound[(sender.scope, customer)] = time.time()
        self._counters.inbound_total += 1
        name = profile_name or _profile_name(customer)

        def make() -> InboundEvent:
            return InboundEvent(provider_id, customer, text, int(time.time()), name, reply_to)

        self._emit(sender, make, 0.0, self.knobs(sender), self.rng(sender))
        return provider_id

    # -- witness -----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        witness = await self.database.run(store.witness_stats)
        witness["inbound_total"] = self._counters.inbound_total
        witness["statuses_emitted"] = dict(self._counters.statuses_emitted)
        for channel, sink in self._sinks.items():
            witness["webhooks" if channel is Channel.CLOUD else "sessions"] = sink.stats()
        return witness

    async def reset(self, *, everything: bool = False) -> None:
        """Forget traffic: witness records, scheduled receipts and replies, pending
        deliveries, limits and service windows. ``everything`` also forgets numbers and
        knobs (sessions are the hub's to forget)."""
        self._cancel_timers()
        for sink in self._sinks.values():
            sink.clear()
        self._throughput.clear()
        self._pairs.clear()
        self._last_inbound.clear()
        self._counters = _Counters()
        await self.database.run(store.clear_everything if everything else store.clear_traffic)
        if everything:
            self.numbers.clear()
            self.global_knobs = Knobs()
            self._overrides.clear()
        self._effective.clear()
        self._rngs.clear()
