"""Per-company API rate limits: 429 with ``Retry-After`` when a company sends too much.

Each company has one token bucket per :class:`ApiLimitKind`: the kind of an endpoint
(``whatsapp``, ``contact``, ``campaign``) and ``global``, which every request of the
company also draws from. A request to a ``contact`` endpoint takes a token from
``api:{company}:contact`` and then from ``api:{company}:global``; it is refused (429) if
either is empty. The buckets live in the :class:`~esquadrao_common.resilience.ratelimit.RateLimiter`
(Redis in production), so every replica draws from the same ones.

Each bucket's :class:`Limit` is its kind's default (configuration) unless an admin of the
company set an override at runtime (``PUT /admin/api-limits/{kind}``). Overrides live in
the :class:`LimitStore` (:class:`RedisLimitStore`: a Redis hash per company), shared by
every replica.

Wiring: ``install_api_limits(app, ApiLimits(limiter, RedisLimitStore(redis)))`` and
``install_auth`` once; then ``dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))]``
on a route or router, and ``app.include_router(api_limits_router())``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Literal, Protocol

import redis.asyncio
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from esquadrao_common.auth import CurrentPrincipal, Principal, Role, require_role
from esquadrao_common.errors import TooManyRequests, problem_responses
from esquadrao_common.resilience.ratelimit import UNAVAILABLE_ERRORS, Limit, RateLimiter

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class ApiLimitKind(StrEnum):
    """A family of endpoints sharing a bucket per company; ``global`` covers them all."""

    WHATSAPP = "whatsapp"
    CONTACT = "contact"
    CAMPAIGN = "campaign"
    GLOBAL = "global"


#: Limits per company when no override is set (rate: requests per second; burst: bucket).
DEFAULT_API_LIMITS: Mapping[ApiLimitKind, Limit] = MappingProxyType(
    {
        ApiLimitKind.WHATSAPP: Limit(rate=20, burst=40),
        ApiLimitKind.CONTACT: Limit(rate=50, burst=100),
        ApiLimitKind.CAMPAIGN: Limit(rate=5, burst=20),
        ApiLimitKind.GLOBAL: Limit(rate=100, burst=200),
    }
)


class LimitStore(Protocol):
    """Runtime overrides of a company's limits, one per kind, shared by all replicas."""

    async def get(self, company_id: str, kind: ApiLimitKind) -> Limit | None:
        """The override of ``kind`` for ``company_id``, or ``None`` (the default applies)."""
        ...

    async def set(self, company_id: str, kind: ApiLimitKind, limit: Limit) -> None: ...

    async def delete(self, company_id: str, kind: ApiLimitKind) -> bool:
        """Remove the override; whether there was one."""
        ...


class RedisLimitStore:
    """Overrides in Redis: hash ``{prefix}:{company_id}``, field = kind, value = JSON
    ``{"rate": r, "burst": b}``.

    Reads are cached in this process per company for ``cache_seconds`` (one ``HGETALL``
    serves every kind), sparing a round trip per request. So a change made through
    another replica takes effect here at most ``cache_seconds`` later; one made through
    this instance takes effect here at once. Stored values that do not parse as a valid
    limit are ignored (logged), so the default applies.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        prefix: str = "api-limits",
        cache_seconds: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[ApiLimitKind, Limit]]] = {}

    def hash_key(self, company_id: str) -> str:
        """The Redis hash holding ``company_id``'s overrides."""
        return f"{self._prefix}:{company_id}"

    async def get(self, company_id: str, kind: ApiLimitKind) -> Limit | None:
        now = self._clock()
        cached = self._cache.get(company_id)
        if cached is None or cached[0] <= now:
            overrides = await self._read(company_id)
            cached = (now + self._cache_seconds, overrides)
            self._cache[company_id] = cached
        return cached[1].get(kind)

    async def set(self, company_id: str, kind: ApiLimitKind, limit: Limit) -> None:
        value = json.dumps({"rate": limit.rate, "burst": limit.burst})
        await self._redis.hset(self.hash_key(company_id), kind.value, value)
        self._cache.pop(company_id, None)

    async def delete(self, company_id: str, kind: ApiLimitKind) -> bool:
        removed = await self._redis.hdel(self.hash_key(company_id), kind.value)
        self._cache.pop(company_id, None)
        return removed > 0

    async def _read(self, company_id: str) -> dict[ApiLimitKind, Limit]:
        overrides: dict[ApiLimitKind, Limit] = {}
        stored = await self._redis.hgetall(self.hash_key(company_id))
        for raw_field, raw_value in stored.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            try:
                data = json.loads(value)
                overrides[ApiLimitKind(field)] = Limit(
                    rate=float(data["rate"]), burst=float(data["burst"])
                )
            except (ValueError, TypeError, KeyError):
                logger.warning(
                    "ignoring invalid API limit override %s[%s] = %r",
                    self.hash_key(company_id),
                    field,
                    value,
                )
        return overrides


@dataclass(frozen=True)
class EffectiveLimit:
    """The limit that applies to one company and kind, and whether it is an override."""

    kind: ApiLimitKind
    limit: Limit
    overridden: bool


@dataclass(frozen=True)
class ApiLimitDecision:
    """The outcome of one request's acquire.

    ``kind``, ``limit`` and ``remaining`` describe the bucket that refused, or when
    allowed, the one with fewer tokens left (the one the client will hit first).
    """

    allowed: bool
    kind: ApiLimitKind
    limit: Limit
    remaining: float
    retry_after: float


class ApiLimits:
    """The per-company API limits: defaults, overrides and the buckets.

    Buckets are keyed ``{key_prefix}:{company_id}:{kind}`` in ``limiter``. ``defaults``
    must give a limit for every kind. When ``store`` is unreachable (Redis down) the
    defaults apply, with a warning logged once per outage: requests keep flowing.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        store: LimitStore,
        defaults: Mapping[ApiLimitKind, Limit] = DEFAULT_API_LIMITS,
        *,
        key_prefix: str = "api",
    ) -> None:
        missing = [kind.value for kind in ApiLimitKind if kind not in defaults]
        if missing:
            raise ValueError(f"defaults lack a limit for {missing}")
        self.limiter = limiter
        self.store = store
        self.defaults = MappingProxyType(dict(defaults))
        self._key_prefix = key_prefix
        self._store_down = False

    def bucket_key(self, company_id: str, kind: ApiLimitKind) -> str:
        return f"{self._key_prefix}:{company_id}:{kind.value}"

    async def effective(self, company_id: str, kind: ApiLimitKind) -> EffectiveLimit:
        """The limit of ``kind`` for ``company_id``: its override, else the default."""
        try:
            override = await self.store.get(company_id, kind)
        except UNAVAILABLE_ERRORS as error:
            if not self._store_down:
                logger.warning("API limit overrides unavailable, using defaults: %r", error)
                self._store_down = True
            override = None
        else:
            if self._store_down:
                logger.info("API limit overrides available again")
                self._store_down = False
        if override is None:
            return EffectiveLimit(kind, self.defaults[kind], overridden=False)
        return EffectiveLimit(kind, override, overridden=True)

    async def acquire(self, company_id: str, kind: ApiLimitKind) -> ApiLimitDecision:
        """Take a token for one request of ``company_id`` to a ``kind`` endpoint.

        The kind's bucket is asked first and ``global`` only if it granted: requests over
        one kind's limit do not use up the budget of the company's other kinds. A request
        the global bucket then refuses has still spent its token of the kind's bucket;
        that errs on the strict side, and only while the company is over its global limit.
        """
        decisions: list[ApiLimitDecision] = []
        kinds = [kind] if kind is ApiLimitKind.GLOBAL else [kind, ApiLimitKind.GLOBAL]
        for current in kinds:
            limit = (await self.effective(company_id, current)).limit
            decision = await self.limiter.acquire(self.bucket_key(company_id, current), limit)
            outcome = ApiLimitDecision(
                allowed=decision.allowed,
                kind=current,
                limit=limit,
                remaining=decision.remaining,
                retry_after=decision.retry_after,
            )
            if not decision.allowed:
                return outcome
            decisions.append(outcome)
        return min(decisions, key=lambda outcome: outcome.remaining)


def install_api_limits(app: FastAPI, limits: ApiLimits) -> None:
    """Make :func:`rate_limited` and :func:`api_limits_router` of ``app`` use ``limits``."""
    app.state.api_limits = limits


async def api_limits_of(request: Request) -> ApiLimits:
    """The :class:`ApiLimits` of the app serving ``request`` (FastAPI dependency; async so
    that FastAPI runs it on the event loop, not through a worker thread per request)."""
    limits = getattr(request.app.state, "api_limits", None)
    if not isinstance(limits, ApiLimits):
        raise RuntimeError("install_api_limits(app, limits) was not called for this app")
    return limits


def rate_limit_headers(decision: ApiLimitDecision) -> dict[str, str]:
    """``RateLimit-Limit`` (burst), ``RateLimit-Remaining`` (whole requests left) and
    ``RateLimit-Reset`` (seconds until the bucket is full again) of ``decision``."""
    limit = decision.limit
    remaining = max(0.0, decision.remaining)
    return {
        "RateLimit-Limit": str(math.floor(limit.burst)),
        "RateLimit-Remaining": str(math.floor(remaining)),
        "RateLimit-Reset": str(math.ceil(max(0.0, limit.burst - remaining) / limit.rate)),
    }


def rate_limited(kind: ApiLimitKind) -> Callable[..., Awaitable[None]]:
    """A dependency that spends one request of the caller's company against ``kind`` (and
    ``global``): a 429 problem with ``Retry-After`` when refused, ``RateLimit-*`` headers
    either way (on success they reach the response unless the endpoint returns a
    ``Response`` object itself). Authenticates the caller (401 first)."""

    async def check_rate_limit(
        response: Response,
        principal: CurrentPrincipal,
        limits: Annotated[ApiLimits, Depends(api_limits_of)],
    ) -> None:
        decision = await limits.acquire(principal.company_id, kind)
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise TooManyRequests(
                f"this company is over its {decision.kind.value!r} API rate limit "
                f"({decision.limit.rate:g} requests/s, bursts of {decision.limit.burst:g})",
                retry_after=decision.retry_after,
                headers=headers,
                limit_kind=decision.kind.value,
            )
        response.headers.update(headers)

    return check_rate_limit


class ApiLimitIn(BaseModel):
    """A new limit for one kind of the caller's company."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, allow_inf_nan=False, description="Requests per second, sustained.")
    burst: float = Field(
        ge=1, allow_inf_nan=False, description="Requests allowed at once after being idle."
    )


class ApiLimitOut(BaseModel):
    """The limit in effect for one kind of the caller's company."""

    kind: ApiLimitKind
    rate: float
    burst: float
    source: Literal["default", "override"]

    @classmethod
    def of(cls, effective: EffectiveLimit) -> ApiLimitOut:
        return cls(
            kind=effective.kind,
            rate=effective.limit.rate,
            burst=effective.limit.burst,
            source="override" if effective.overridden else "default",
        )


Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
Limits = Annotated[ApiLimits, Depends(api_limits_of)]


def api_limits_router(prefix: str = "/admin/api-limits") -> APIRouter:
    """Endpoints for a company's admins to read and change their company's API limits.

    ``GET {prefix}`` (every kind), ``GET/PUT/DELETE {prefix}/{kind}``; ``DELETE`` returns
    to the default. Changes apply to every replica within the store's cache time. These
    endpoints are deliberately not rate limited themselves: an admin who set a limit too
    low must still be able to raise it.
    """
    router = APIRouter(
        prefix=prefix,
        tags=["api-limits"],
        responses=problem_responses(401, 403, 422),
    )

    @router.get("")
    async def list_api_limits(admin: Admin, limits: Limits) -> list[ApiLimitOut]:
        return [
            ApiLimitOut.of(await limits.effective(admin.company_id, kind)) for kind in ApiLimitKind
        ]

    @router.get("/{kind}")
    async def get_api_limit(kind: ApiLimitKind, admin: Admin, limits: Limits) -> ApiLimitOut:
        return ApiLimitOut.of(await limits.effective(admin.company_id, kind))

    @router.put("/{kind}")
    async def put_api_limit(
        kind: ApiLimitKind, body: ApiLimitIn, admin: Admin, limits: Limits
    ) -> ApiLimitOut:
        limit = Limit(rate=body.rate, burst=body.burst)
        await limits.store.set(admin.company_id, kind, limit)
        return ApiLimitOut.of(EffectiveLimit(kind, limit, overridden=True))

    @router.delete("/{kind}")
    async def delete_api_limit(kind: ApiLimitKind, admin: Admin, limits: Limits) -> ApiLimitOut:
        await limits.store.delete(admin.company_id, kind)
        return ApiLimitOut.of(EffectiveLimit(kind, limits.defaults[kind], overridden=False))

    return router
