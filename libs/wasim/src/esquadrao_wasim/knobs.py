"""Knobs: how the simulated WhatsApp behaves, globally and per number or session.

Global knobs apply to every sender (a Cloud API phone number or a session); a sender's
override holds only the knobs it changes and is merged over the global ones (nested
objects field by field). Rates are probabilities in [0, 1], drawn from the sender's own
random generator, which a ``seed`` makes reproducible: the same knobs and the same
sequence of requests on a sender give the same outcomes.

The defaults describe a healthy number with Meta's documented limits: 80 messages per
second per number, 1 message per 6 s to the same recipient after a burst, receipts within
a second or two, half the messages read, no replies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Rate = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReceiptDelays(_Strict):
    """Seconds from acceptance to each receipt. A receipt never comes before the previous
    one: a smaller delay counts as the previous receipt's."""

    sent: float = Field(default=0.0, ge=0)
    delivered: float = Field(default=0.5, ge=0)
    read: float = Field(default=1.5, ge=0)


class PairRateLimit(_Strict):
    """Messages from one sender to one recipient: ``burst`` at once, then one every
    ``per_seconds`` (Meta: about one every 6 s after a burst); beyond it, 131056."""

    burst: int = Field(default=45, ge=1)
    per_seconds: float = Field(default=6.0, gt=0)


class Knobs(_Strict):
    """Every knob with its default; see the module docstring for how they combine."""

    seed: int | None = Field(
        default=None, description="Seed of the senders' random generators (None: random)."
    )
    latency_ms: float = Field(default=0.0, ge=0, description="Added before every answer.")
    latency_jitter_ms: float = Field(default=0.0, ge=0, description="Uniform extra latency.")
    failure_rate: Rate = Field(default=0.0, ge=0, le=1, description="131000, HTTP 500.")
    throttle_rate: Rate = Field(default=0.0, ge=0, le=1, description="Random 130429.")
    max_mps: float | None = Field(
        default=80.0, gt=0, description="Messages per second per sender; beyond: 130429."
    )
    pair_rate_limit: PairRateLimit | None = Field(default_factory=PairRateLimit)
    spam_rate: Rate = Field(default=0.0, ge=0, le=1, description="Random 131048.")
    undeliverable_rate: Rate = Field(default=0.0, ge=0, le=1, description="Random 131026.")
    not_on_whatsapp: list[str] = Field(
        default_factory=list, description="Recipients (E.164 or digits) that get 131026."
    )
    enforce_service_window: bool = Field(
        default=False,
        description="Free-form messages to a customer silent for 24 h (or ever) get 131047.",
    )
    error_delivery: Literal["sync", "webhook"] = Field(
        default="sync",
        description=(
            "How 131026, 131047 and 131048 are reported: in the answer to the send, or as "
            "Meta mostly does, accepted first and then a failed status."
        ),
    )
    receipt_delays: ReceiptDelays = Field(default_factory=ReceiptDelays)
    delivered_rate: Rate = Field(default=1.0, ge=0, le=1, description="Messages delivered.")
    read_rate: Rate = Field(default=0.5, ge=0, le=1, description="Delivered messages read.")
    reply_rate: Rate = Field(default=0.0, ge=0, le=1, description="Delivered messages answered.")
    reply_texts: list[str] = Field(
        default_factory=lambda: ["Obrigado!", "Quero saber mais", "SAIR"], min_length=1
    )
    reply_delay_s: float = Field(default=2.0, ge=0, description="After the last receipt.")
    webhook_duplicate_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="Callbacks (and session pushes) sent twice."
    )
    webhook_shuffle: bool = Field(
        default=False, description="Hold each callback back by a random part of the window."
    )
    webhook_shuffle_window_s: float = Field(default=1.0, ge=0)
    webhook_max_attempts: int = Field(default=8, ge=1, description="Deliveries per callback.")
    disconnect_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="Session dropped after a received frame."
    )
    pairing_delay_s: float | None = Field(
        default=1.0, ge=0, description="Pairing completes by itself after it (None: admin only)."
    )
    pairing_code_ttl_s: float = Field(default=60.0, gt=0, description="Then a new code.")
    keepalive_timeout_s: float = Field(
        default=30.0, gt=0, description="A session silent that long is dropped."
    )


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested dicts are merged key by key, and a ``None``
    change replaces the value (it does not delete it)."""
    merged = dict(base)
    for key, value in changes.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def effective_knobs(global_knobs: Knobs, override: dict[str, Any]) -> Knobs:
    """The knobs of a sender: ``override`` merged over ``global_knobs``.

    Raises pydantic's ValidationError when the result is not valid knobs.
    """
    if not override:
        return global_knobs
    return Knobs.model_validate(deep_merge(global_knobs.model_dump(), override))
