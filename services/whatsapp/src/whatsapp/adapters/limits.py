"""Per-session send limits: how fast one WhatsApp number may send, in total and to one
recipient.

Every send first asks :meth:`SessionLimiter.acquire`. Two token buckets shape it:

- the **session rate**: the number's throughput (Cloud API: 80 messages per second by
  default), adaptive: a THROTTLED refusal from the provider halves it, and successes bring it
  back slowly (:class:`~esquadrao_common.resilience.ratelimit.AdaptiveRate`);
- the **pair limit**: a burst to one recipient, then one message per ``interval`` seconds
  (the provider's PAIR_RATE_LIMITED, Cloud API error 131056), so that a campaign sending
  several messages to the same person spaces them out while other recipients still go.

How fast a number may go depends on what drives it, hence :class:`ProviderProfile`s:
``cloud`` (the Cloud API's published figures), ``sim`` (a WhatsApp-Web-like number, which
WhatsApp bans quickly for bulk traffic: conservative) and ``lifted`` (no practical limit,
for benchmarks and tests). A session may override the rate, burst and pair values of its
profile.

The buckets live in Redis (:func:`shared_rate_limiter`), so the replicas that send for a
session during an ownership hand-over draw from the same tokens; while Redis is unreachable
each process enforces the limits on its own rather than stopping every send.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import redis.asyncio
from esquadrao_common.resilience.ratelimit import (
    AdaptiveRate,
    Clock,
    FallbackRateLimiter,
    Limit,
    LocalTokenBucket,
    RateLimiter,
    RedisTokenBucket,
)

from whatsapp.domain.messages import is_e164

#: Prefix of every Redis key of these limits: ``whatsapp:rate:{session_id}`` and
#: ``whatsapp:pair:{session_id}:{recipient}``.
KEY_PREFIX: Final = "whatsapp"


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class PairLimit:
    """At most ``burst`` messages at once to one recipient, then one every ``interval``
    seconds."""

    burst: float
    interval: float

    def __post_init__(self) -> None:
        _check_positive("pair_interval", self.interval)
        _check_positive("pair_burst", self.burst)
        if self.burst < 1:
            raise ValueError(f"pair_burst must be at least 1, got {self.burst}")

    @property
    def limit(self) -> Limit:
        """The token bucket of one recipient."""
        return Limit(rate=1 / self.interval, burst=self.burst)


#: The keys :meth:`ProviderProfile.with_overrides` accepts.
OVERRIDABLE: Final = frozenset({"rate", "burst", "pair_burst", "pair_interval"})


@dataclass(frozen=True)
class ProviderProfile:
    """How fast a session of one kind may send.

    ``rate`` messages per second with ``burst`` saved up; ``pair`` is the per-recipient
    limit, ``None`` for none. When the provider throttles, the adaptive rate falls at most
    to ``rate * floor_fraction`` and climbs back by ``rate * increase_fraction`` per
    second of successes: fractions rather than absolute figures so that they keep their
    meaning when a session overrides the rate.
    """

    name: str
    rate: float
    burst: float
    pair: PairLimit | None
    floor_fraction: float = 0.1
    increase_fraction: float = 0.05

    def __post_init__(self) -> None:
        _check_positive("rate", self.rate)
        _check_positive("burst", self.burst)
        Limit(rate=self.rate, burst=self.burst)  # burst of at least 1
        for name, fraction in (
            ("floor_fraction", self.floor_fraction),
            ("increase_fraction", self.increase_fraction),
        ):
            if not 0 < fraction <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {fraction}")

    @property
    def limit(self) -> Limit:
        """The session's bucket when the provider is not throttling it (the ceiling)."""
        return Limit(rate=self.rate, burst=self.burst)

    @property
    def floor(self) -> float:
        """The lowest rate throttling can bring the session to, messages per second."""
        return self.rate * self.floor_fraction

    @property
    def increase_step(self) -> float:
        """What each second of successes adds back to a throttled rate."""
        return self.rate * self.increase_fraction

    def with_overrides(self, overrides: Mapping[str, object]) -> ProviderProfile:
        """This profile with a session's own values.

        ``overrides`` maps some of :data:`OVERRIDABLE` to positive finite numbers (``bool``
        is not a number here); anything else raises ``ValueError``, as does a burst below
        1. ``pair_burst`` and ``pair_interval`` adjust the profile's pair limit; on a
        profile without one, both must be given to set one up.
        """
        unknown = set(overrides) - OVERRIDABLE
        if unknown:
            raise ValueError(
                f"unknown limit overrides {sorted(unknown)}; expected some of {sorted(OVERRIDABLE)}"
            )
        values: dict[str, float] = {}
        for key, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            _check_positive(key, value)
            values[key] = float(value)
        pair = self.pair
        if pair is not None:
            pair = PairLimit(
                burst=values.get("pair_burst", pair.burst),
                interval=values.get("pair_interval", pair.interval),
            )
        elif "pair_burst" in values or "pair_interval" in values:
            if not {"pair_burst", "pair_interval"} <= values.keys():
                raise ValueError(
                    f"profile {self.name!r} has no pair limit: give both pair_burst and "
                    "pair_interval to set one"
                )
            pair = PairLimit(burst=values["pair_burst"], interval=values["pair_interval"])
        return dataclasses.replace(
            self,
            rate=values.get("rate", self.rate),
            burst=values.get("burst", self.burst),
            pair=pair,
        )


#: Cloud API: Meta's default throughput of a business number is 80 messages per second;
#: a burst of half a second's worth keeps any one-second window at most 1.5 times that
#: (burst + rate) while a quiet session can still start at once. Meta lets a
#: number send a few messages in a row to one user, then about one per 6 seconds (error
#: 131056 beyond that).
CLOUD: Final = ProviderProfile(
    name="cloud", rate=80, burst=40, pair=PairLimit(burst=10, interval=6)
)
#: A WhatsApp-Web-like number: nothing is published, and bulk traffic gets such numbers
#: banned, so one message per second (5 at once at most), and 3 to a recipient, then one
#: per 20 seconds.
SIM: Final = ProviderProfile(name="sim", rate=1, burst=5, pair=PairLimit(burst=3, interval=20))
#: No practical limit and no pair limit: for benchmarks and tests that measure everything
#: but the limits (each send still pays its round trip to the bucket).
LIFTED: Final = ProviderProfile(name="lifted", rate=1_000_000, burst=1_000_000, pair=None)

#: The profiles by name.
PROFILES: Final[Mapping[str, ProviderProfile]] = MappingProxyType(
    {profile.name: profile for profile in (CLOUD, SIM, LIFTED)}
)


def profile_named(name: str) -> ProviderProfile:
    """The profile called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown provider profile {name!r}; known: {sorted(PROFILES)}") from None


def shared_rate_limiter(
    client: redis.asyncio.Redis, *, retry_primary_after: float = 5.0, clock: Clock = time.monotonic
) -> FallbackRateLimiter:
    """The limiter :class:`SessionLimiter` runs on in production: buckets in Redis under
    :data:`KEY_PREFIX`, shared by every replica, answered by buckets in this process while
    Redis is unreachable (so an outage allows up to one session's limit per replica instead
    of stopping sends; Redis is tried again every ``retry_primary_after`` seconds).

    Give ``client`` short ``socket_timeout`` and ``socket_connect_timeout`` values: every
    send waits for its acquire, so a hung Redis must fail fast to reach the fallback.
    """
    return FallbackRateLimiter(
        RedisTokenBucket(client, prefix=KEY_PREFIX),
        LocalTokenBucket(clock),
        retry_primary_after=retry_primary_after,
        clock=clock,
    )


class RefusedBy(enum.Enum):
    """Which limit refused a send."""

    SESSION_RATE = "session_rate"
    PAIR = "pair"


@dataclass(frozen=True)
class SendDecision:
    """Whether a send may go now; if not, which limit refused it and for how many seconds
    (``retry_after``) asking again for the same recipient is pointless."""

    allowed: bool
    retry_after: float = 0.0
    refused_by: RefusedBy | None = None


_ALLOWED: Final = SendDecision(allowed=True)


@dataclass(slots=True)
class _Session:
    profile: ProviderProfile
    rate: AdaptiveRate


class SessionLimiter:
    """The send limits of the sessions one worker drives.

    A session is configured (:meth:`configure`) when the worker takes it over and
    forgotten (:meth:`forget`) when it lets it go; asking about any other session raises
    ``KeyError``. ``limiter`` holds the buckets (:func:`shared_rate_limiter` in production,
    a ``LocalTokenBucket`` in tests) under the keys ``rate:{session_id}`` and
    ``pair:{session_id}:{recipient}``. The adaptive rate of each session lives in this
    process (it reacts to the throttles this worker saw); ``clock`` (seconds, monotonic)
    paces it.

    :meth:`acquire` checks the session rate first, then the pair limit, and lets a send go
    only when both grant it. A send the session rate refuses takes nothing from the pair
    limit: pair tokens are scarce (one per 6 or 20 seconds) and refusals by the session
    rate are the normal pacing of a busy session. A send the pair limit refuses has
    already taken its session token, which is not given back (buckets have no refund):
    one message's worth of the session's throughput lost per pair refusal, a small price
    as long as callers wait ``retry_after`` before asking again for that recipient.
    """

    def __init__(self, limiter: RateLimiter, clock: Clock = time.monotonic) -> None:
        self._limiter = limiter
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def configure(
        self,
        session_id: str,
        profile: ProviderProfile,
        overrides: Mapping[str, object] | None = None,
    ) -> ProviderProfile:
        """Apply ``profile`` (with the session's ``overrides``, see
        :meth:`ProviderProfile.with_overrides`) to ``session_id``; returns the profile in
        effect.

        Configuring a session again with the same effective profile changes nothing (a
        throttled session stays throttled); with a different one, its adaptive rate
        starts over at the new ceiling. The buckets themselves are shared and keep their
        tokens either way.
        """
        effective = profile.with_overrides(overrides) if overrides else profile
        current = self._sessions.get(session_id)
        if current is None or current.profile != effective:
            adaptive = AdaptiveRate(
                effective.limit,
                floor=effective.floor,
                increase_step=effective.increase_step,
                clock=self._clock,
            )
            self._sessions[session_id] = _Session(effective, adaptive)
        return effective

    def forget(self, session_id: str) -> None:
        """Drop ``session_id``'s state (its adaptive rate); unknown ids are ignored."""
        self._sessions.pop(session_id, None)

    async def acquire(self, session_id: str, recipient_e164: str) -> SendDecision:
        """Take what one message from ``session_id`` to ``recipient_e164`` needs, or say
        which limit refused it and for how long.

        ``ValueError`` when the recipient is not in E.164 form (the pair key must not
        depend on how a caller spelled the number). Errors of the limiter other than
        Redis being unreachable (which :func:`shared_rate_limiter` absorbs) propagate.
        """
        session = self._session(session_id)
        if not is_e164(recipient_e164):
            raise ValueError(f"recipient {recipient_e164!r} is not in E.164 form")
        decision = await self._limiter.acquire(f"rate:{session_id}", session.rate.limit)
        if not decision.allowed:
            return SendDecision(False, decision.retry_after, RefusedBy.SESSION_RATE)
        pair = session.profile.pair
        if pair is None:
            return _ALLOWED
        decision = await self._limiter.acquire(f"pair:{session_id}:{recipient_e164}", pair.limit)
        if not decision.allowed:
            return SendDecision(False, decision.retry_after, RefusedBy.PAIR)
        return _ALLOWED

    def on_throttled(self, session_id: str) -> bool:
        """The provider throttled a send of ``session_id`` (THROTTLED): halve its rate, at
        most once per cooldown and not below the floor. Returns whether it was lowered."""
        return self._session(session_id).rate.on_throttle()

    def on_success(self, session_id: str) -> bool:
        """The provider accepted a send of ``session_id``: let a throttled rate creep back
        up (one step per second at most, never above the profile's rate). Returns whether
        it was raised."""
        return self._session(session_id).rate.on_success()

    def current_rate(self, session_id: str) -> float:
        """The rate ``session_id`` sends at now, messages per second."""
        return self._session(session_id).rate.rate

    def _session(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"session {session_id!r} has no limits configured") from None
