"""Per-company API limits: the rate_limited dependency and the admin endpoints, with fakes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis.exceptions
from esquadrao_common.api_limits import (
    DEFAULT_API_LIMITS,
    ApiLimitDecision,
    ApiLimitKind,
    ApiLimits,
    api_limits_router,
    install_api_limits,
    rate_limit_headers,
    rate_limited,
)
from esquadrao_common.auth import JwtConfig, Role, install_auth, mint_token
from esquadrao_common.errors import install_problem_handlers
from esquadrao_common.resilience.ratelimit import Decision, Limit
from fastapi import Depends, FastAPI

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret-of-at-least-32-bytes!"


@dataclass
class FakeLimiter:
    """Buckets that never refill: each key grants ``burst`` requests, then refuses."""

    taken: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, Limit]] = field(default_factory=list)

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        self.calls.append((key, limit))
        left = limit.burst - self.taken.get(key, 0.0)
        if left >= cost:
            self.taken[key] = self.taken.get(key, 0.0) + cost
            return Decision(allowed=True, remaining=left - cost, retry_after=0.0)
        return Decision(allowed=False, remaining=left, retry_after=(cost - left) / limit.rate)


@dataclass
class FakeStore:
    overrides: dict[tuple[str, ApiLimitKind], Limit] = field(default_factory=dict)
    down: bool = False

    async def get(self, company_id: str, kind: ApiLimitKind) -> Limit | None:
        if self.down:
            raise redis.exceptions.ConnectionError("connection refused")
        return self.overrides.get((company_id, kind))

    async def set(self, company_id: str, kind: ApiLimitKind, limit: Limit) -> None:
        self.overrides[company_id, kind] = limit

    async def delete(self, company_id: str, kind: ApiLimitKind) -> bool:
        return self.overrides.pop((company_id, kind), None) is not None


DEFAULTS = {
    ApiLimitKind.WHATSAPP: Limit(rate=1, burst=2),
    ApiLimitKind.CONTACT: Limit(rate=2, burst=3),
    ApiLimitKind.CAMPAIGN: Limit(rate=0.25, burst=1),
    ApiLimitKind.GLOBAL: Limit(rate=10, burst=5),
}


@dataclass
class Harness:
    client: httpx.AsyncClient
    limiter: FakeLimiter
    store: FakeStore

    async def call(
        self,
        path: str,
        *,
        company: str = "acme",
        role: Role = Role.AGENT,
        method: str = "GET",
        json: object = None,
    ) -> httpx.Response:
        token = mint_token(
            company_id=company, user="ana", role=role, ttl_seconds=600, secret=SECRET
        )
        headers = {"Authorization": f"Bearer {token}"}
        return await self.client.request(method, path, headers=headers, json=json)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    limiter, store = FakeLimiter(), FakeStore()
    app = FastAPI()
    install_problem_handlers(app)
    install_auth(app, JwtConfig(secret=SECRET))
    install_api_limits(app, ApiLimits(limiter, store, DEFAULTS))
    for kind in ApiLimitKind:

        @app.get(f"/{kind.value}", dependencies=[Depends(rate_limited(kind))])
        async def endpoint() -> dict[str, bool]:
            return {"ok": True}

    app.include_router(api_limits_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Harness(client, limiter, store)


async def test_requests_within_the_limit_pass_with_rate_limit_headers(harness: Harness) -> None:
    response = await harness.call("/contact")

    assert response.status_code == 200
    # contact: 2 of 3 left; global: 4 of 5 left; the tighter one is reported.
    assert response.headers["ratelimit-limit"] == "3"
    assert response.headers["ratelimit-remaining"] == "2"
    assert response.headers["ratelimit-reset"] == "1"  # 1 token at 2/s: 0.5s, rounded up


async def test_a_kind_request_draws_from_its_bucket_and_the_global_one(harness: Harness) -> None:
    await harness.call("/contact", company="acme")
    await harness.call("/global", company="acme")

    assert harness.limiter.calls == [
        ("api:acme:contact", DEFAULTS[ApiLimitKind.CONTACT]),
        ("api:acme:global", DEFAULTS[ApiLimitKind.GLOBAL]),
        ("api:acme:global", DEFAULTS[ApiLimitKind.GLOBAL]),
    ]


async def test_over_the_kind_limit_is_a_429_with_an_integer_retry_after(
    harness: Harness,
) -> None:
    statuses = [(await harness.call("/campaign")).status_code for _ in range(2)]
    refused = await harness.call("/campaign")

    assert statuses == [200, 429]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "4"  # 1 token at 0.25/s
    body = refused.json()
    assert body["type"] == "https://esquadrao.dev/problems/rate-limited"
    assert body["retry_after"] == 4
    assert body["limit_kind"] == "campaign"
    assert refused.headers["ratelimit-remaining"] == "0"


async def test_a_refusal_by_the_kind_spends_nothing_of_the_global_budget(
    harness: Harness,
) -> None:
    for _ in range(5):
        await harness.call("/campaign")  # 1 allowed, 4 refused by the campaign bucket

    assert harness.limiter.taken["api:acme:global"] == 1
    assert (await harness.call("/whatsapp")).status_code == 200


async def test_the_global_limit_caps_all_kinds_together(harness: Harness) -> None:
    paths = ["/whatsapp", "/whatsapp", "/contact", "/contact", "/contact"]
    statuses = [(await harness.call(path)).status_code for path in paths]
    refused = await harness.call("/campaign")  # its own bucket is still full

    assert statuses == [200] * 5
    assert refused.status_code == 429
    assert refused.json()["limit_kind"] == "global"
    assert refused.headers["retry-after"] == "1"


async def test_companies_have_separate_buckets(harness: Harness) -> None:
    for _ in range(2):
        await harness.call("/campaign", company="acme")

    assert (await harness.call("/campaign", company="acme")).status_code == 429
    assert (await harness.call("/campaign", company="globex")).status_code == 200


async def test_an_override_replaces_the_default_for_that_company_only(harness: Harness) -> None:
    harness.store.overrides["acme", ApiLimitKind.CAMPAIGN] = Limit(rate=1, burst=3)

    acme = [(await harness.call("/campaign", company="acme")).status_code for _ in range(4)]
    globex = [(await harness.call("/campaign", company="globex")).status_code for _ in range(2)]

    assert acme == [200, 200, 200, 429]
    assert globex == [200, 429]


async def test_an_unauthenticated_request_is_a_401_and_takes_no_token(harness: Harness) -> None:
    response = await harness.client.get("/contact")

    assert response.status_code == 401
    assert harness.limiter.calls == []


async def test_while_the_store_is_down_defaults_apply_and_one_warning_is_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.store.overrides["acme", ApiLimitKind.CAMPAIGN] = Limit(rate=1, burst=3)
    harness.store.down = True

    with caplog.at_level(logging.WARNING, logger="esquadrao_common.api_limits"):
        statuses = [(await harness.call("/campaign")).status_code for _ in range(3)]

    assert statuses == [200, 429, 429]  # the default burst of 1, not the override's 3
    warnings = [r for r in caplog.records if r.name == "esquadrao_common.api_limits"]
    assert len(warnings) == 1
    assert "defaults" in warnings[0].getMessage()


async def test_admins_read_every_kind_with_its_source(harness: Harness) -> None:
    harness.store.overrides["acme", ApiLimitKind.WHATSAPP] = Limit(rate=7, burst=9)

    response = await harness.call("/admin/api-limits", role=Role.ADMIN)

    assert response.status_code == 200
    assert {item["kind"]: item for item in response.json()} == {
        "whatsapp": {"kind": "whatsapp", "rate": 7.0, "burst": 9.0, "source": "override"},
        "contact": {"kind": "contact", "rate": 2.0, "burst": 3.0, "source": "default"},
        "campaign": {"kind": "campaign", "rate": 0.25, "burst": 1.0, "source": "default"},
        "global": {"kind": "global", "rate": 10.0, "burst": 5.0, "source": "default"},
    }


async def test_admins_set_and_reset_their_own_companys_limit(harness: Harness) -> None:
    put = await harness.call(
        "/admin/api-limits/contact",
        role=Role.ADMIN,
        method="PUT",
        json={"rate": 12.5, "burst": 30},
    )
    read = await harness.call("/admin/api-limits/contact", role=Role.ADMIN)

    assert put.status_code == 200
    assert put.json() == {"kind": "contact", "rate": 12.5, "burst": 30.0, "source": "override"}
    assert read.json() == put.json()
    assert harness.store.overrides == {("acme", ApiLimitKind.CONTACT): Limit(12.5, 30)}

    deleted = await harness.call("/admin/api-limits/contact", role=Role.ADMIN, method="DELETE")

    assert deleted.status_code == 200
    assert deleted.json() == {"kind": "contact", "rate": 2.0, "burst": 3.0, "source": "default"}
    assert harness.store.overrides == {}


async def test_the_limits_endpoints_are_for_admins_only(harness: Harness) -> None:
    for role in (Role.SUPERVISOR, Role.AGENT):
        read = await harness.call("/admin/api-limits/contact", role=role)
        write = await harness.call(
            "/admin/api-limits/contact", role=role, method="PUT", json={"rate": 1, "burst": 1}
        )
        assert (read.status_code, write.status_code) == (403, 403)
    assert harness.store.overrides == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate": 0, "burst": 10}, "body.rate"),
        ({"rate": -1, "burst": 10}, "body.rate"),
        ({"rate": 5, "burst": 0.5}, "body.burst"),
        ({"rate": 5}, "body.burst"),
        ({"rate": 5, "burst": 10, "cost": 2}, "body.cost"),
    ],
)
async def test_an_invalid_limit_is_a_422_naming_the_field(
    harness: Harness, body: dict[str, float], field: str
) -> None:
    response = await harness.call(
        "/admin/api-limits/whatsapp", role=Role.ADMIN, method="PUT", json=body
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert harness.store.overrides == {}


async def test_an_unknown_kind_is_a_422_on_the_path(harness: Harness) -> None:
    response = await harness.call("/admin/api-limits/sms", role=Role.ADMIN)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["path.kind"]


def test_defaults_must_cover_every_kind() -> None:
    partial = {ApiLimitKind.GLOBAL: Limit(rate=1, burst=1)}

    with pytest.raises(ValueError, match="whatsapp"):
        ApiLimits(FakeLimiter(), FakeStore(), partial)
    assert set(DEFAULT_API_LIMITS) == set(ApiLimitKind)


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (10.0, {"RateLimit-Limit": "10", "RateLimit-Remaining": "10", "RateLimit-Reset": "0"}),
        (3.7, {"RateLimit-Limit": "10", "RateLimit-Remaining": "3", "RateLimit-Reset": "4"}),
        (0.0, {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "5"}),
    ],
)
def test_rate_limit_headers(remaining: float, expected: dict[str, str]) -> None:
    decision = ApiLimitDecision(
        allowed=True,
        kind=ApiLimitKind.GLOBAL,
        limit=Limit(rate=2, burst=10),
        remaining=remaining,
        retry_after=0.0,
    )

    assert rate_limit_headers(decision) == expected
