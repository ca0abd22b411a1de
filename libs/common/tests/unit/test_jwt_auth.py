"""Bearer JWT verification, the principal on each request, role checks and tenant scoping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from esquadrao_common.auth import (
    CurrentPrincipal,
    JwtConfig,
    Principal,
    Role,
    install_auth,
    mint_token,
    require_role,
    scoped,
    verify_token,
)
from esquadrao_common.errors import Unauthorized, install_problem_handlers
from esquadrao_common.settings import ServiceSettings
from fastapi import Depends, FastAPI, Request
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret-of-at-least-32-bytes!"


def rsa_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


PRIVATE_KEY, PUBLIC_KEY = rsa_key_pair()
HS256 = JwtConfig(secret=SECRET)
RS256 = JwtConfig(public_key=PUBLIC_KEY, algorithm="RS256")


def token(role: Role = Role.AGENT, **overrides: Any) -> str:
    return mint_token(
        company_id=overrides.pop("company_id", "acme"),
        user=overrides.pop("user", "ana"),
        role=role,
        ttl_seconds=overrides.pop("ttl_seconds", 3600),
        secret=overrides.pop("secret", SECRET),
        **overrides,
    )


def hand_made(claims: dict[str, Any]) -> str:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "ana", "company_id": "acme", "role": "agent"}
    base |= {"iss": "esquadrao", "aud": "esquadrao", "iat": now, "exp": now + 600}
    return jwt.encode({k: v for k, v in (base | claims).items() if v is not None}, SECRET)


def make_app(config: JwtConfig) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_auth(app, config)

    @app.get("/me")
    async def me(principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return {
            "user_id": principal.user_id,
            "company_id": principal.company_id,
            "role": principal.role,
            "state_company_id": request.state.principal.company_id,
            "log_context": structlog.contextvars.get_contextvars(),
        }

    @app.delete("/company-settings")
    async def admins_only(
        admin: Annotated[Principal, Depends(require_role(Role.ADMIN))],
    ) -> dict[str, str]:
        return {"by": admin.user_id}

    @app.get("/reports", dependencies=[Depends(require_role(Role.ADMIN, Role.SUPERVISOR))])
    async def reports() -> dict[str, bool]:
        return {"ok": True}

    return app


async def client_for(config: JwtConfig) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    structlog.contextvars.clear_contextvars()
    async for client in client_for(HS256):
        yield client
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def rs256_client() -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(RS256):
        yield client


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_a_valid_hs256_token_yields_the_principal(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers=bearer(token(Role.SUPERVISOR, user="bia")))

    assert response.status_code == 200
    body = response.json()
    assert (body["user_id"], body["company_id"], body["role"]) == ("bia", "acme", "supervisor")
    assert body["state_company_id"] == "acme"
    assert body["log_context"] == {"company_id": "acme", "user_id": "bia"}


async def test_a_valid_rs256_token_yields_the_principal(rs256_client: httpx.AsyncClient) -> None:
    signed = mint_token(
        company_id="globex", user="caio", role=Role.ADMIN, ttl_seconds=60, private_key=PRIVATE_KEY
    )

    response = await rs256_client.get("/me", headers=bearer(signed))

    assert response.status_code == 200
    assert response.json()["company_id"] == "globex"
    assert jwt.get_unverified_header(signed)["alg"] == "RS256"


async def test_no_token_is_a_401_with_a_bare_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://esquadrao.dev/problems/unauthorized"
    assert "missing bearer token" in response.json()["detail"]


async def test_another_scheme_counts_as_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers={"Authorization": "Basic YW5hOnNlY3JldA=="})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("presented", "detail"),
    [
        (token(now=int(time.time()) - 7200, ttl_seconds=3600), "token has expired"),
        (token(secret="another-secret-of-at-least-32-bytes!!"), "token signature is invalid"),
        (token(audience="someone-else"), "token audience is not 'esquadrao'"),
        (token(issuer="someone-else"), "token issuer is not 'esquadrao'"),
        (hand_made({"company_id": None}), "token has no company_id claim"),
        (hand_made({"role": None}), "token has no role claim"),
        (hand_made({"exp": None}), "token has no exp claim"),
        (hand_made({"company_id": ""}), "token company_id claim must be a non-empty string"),
        (hand_made({"company_id": 42}), "token company_id claim must be a non-empty string"),
        (hand_made({"role": "root"}), "token role 'root' is not a known role"),
        ("not.a.jwt", "token is malformed"),
        (
            mint_token(
                company_id="acme",
                user="ana",
                role=Role.ADMIN,
                ttl_seconds=60,
                private_key=PRIVATE_KEY,
            ),
            "token is not signed with HS256",
        ),
    ],
    ids=[
        "expired",
        "wrong-signature",
        "wrong-audience",
        "wrong-issuer",
        "missing-company",
        "missing-role",
        "missing-exp",
        "empty-company",
        "non-string-company",
        "unknown-role",
        "malformed",
        "other-algorithm",
    ],
)
async def test_a_rejected_token_is_a_401_saying_why(
    client: httpx.AsyncClient, presented: str, detail: str
) -> None:
    response = await client.get("/me", headers=bearer(presented))

    assert response.status_code == 401
    assert response.json()["detail"] == detail
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"')
    assert detail.replace('"', "'") in challenge


def test_clock_skew_within_the_leeway_is_tolerated() -> None:
    recently_expired = token(now=int(time.time()) - 3610, ttl_seconds=3600)

    assert verify_token(recently_expired, HS256).company_id == "acme"
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(recently_expired, JwtConfig(secret=SECRET, leeway=0))


def test_only_the_configured_algorithm_is_accepted() -> None:
    # A token may not choose how it is verified: HS256 is refused where RS256 is configured.
    with pytest.raises(Unauthorized, match="not signed with RS256"):
        verify_token(hand_made({}), RS256)


async def test_require_role_refuses_other_roles_with_a_403(client: httpx.AsyncClient) -> None:
    refused = await client.delete("/company-settings", headers=bearer(token(Role.AGENT)))
    allowed = await client.delete("/company-settings", headers=bearer(token(Role.ADMIN)))

    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "https://esquadrao.dev/problems/forbidden"
    assert "'agent'" in refused.json()["detail"]
    assert allowed.status_code == 200
    assert allowed.json() == {"by": "ana"}


async def test_require_role_accepts_any_of_its_roles(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.get("/reports", headers=bearer(token(role)))).status_code for role in Role
    ]

    assert dict(zip(Role, statuses, strict=True)) == {
        Role.ADMIN: 200,
        Role.SUPERVISOR: 200,
        Role.AGENT: 403,
    }


async def test_require_role_checks_authentication_first(client: httpx.AsyncClient) -> None:
    assert (await client.get("/reports")).status_code == 401


def test_mint_token_needs_exactly_one_key() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        mint_token(company_id="c", user="u", role=Role.AGENT, ttl_seconds=60)
    with pytest.raises(ValueError, match="exactly one"):
        mint_token(
            company_id="c",
            user="u",
            role=Role.AGENT,
            ttl_seconds=60,
            secret=SECRET,
            private_key=PRIVATE_KEY,
        )


def test_the_config_needs_the_key_of_its_algorithm_and_hides_the_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        JwtConfig()
    with pytest.raises(ValueError, match="public key"):
        JwtConfig(secret=SECRET, algorithm="RS256")
    assert SECRET not in repr(HS256)


def settings(**env: Any) -> ServiceSettings:
    return ServiceSettings(
        service_name="test",
        http_port=8000,
        database_url="postgresql://localhost/test",
        kafka_bootstrap="localhost:9092",
        redis_url="redis://localhost:6379/0",
        **env,
    )


def test_the_config_follows_the_service_settings() -> None:
    rs = JwtConfig.from_settings(settings(jwt_public_key=PUBLIC_KEY))
    hs = JwtConfig.from_settings(settings(jwt_secret=SECRET))

    assert (rs.algorithm, rs.public_key, rs.secret) == ("RS256", PUBLIC_KEY.strip(), None)
    assert (hs.algorithm, hs.secret) == ("HS256", SECRET)


metadata = MetaData()
contacts = Table("contacts", metadata, Column("id", Integer), Column("company_id", String))


class Base(DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[str]


def compiled(statement: Any) -> tuple[str, list[Any]]:
    result = statement.compile(dialect=asyncpg.dialect())
    return " ".join(str(result).split()), [result.params[name] for name in result.positiontup]


def test_scoped_restricts_a_table_query_to_the_callers_company() -> None:
    principal = Principal(user_id="ana", company_id="acme", role=Role.AGENT)

    text, values = compiled(scoped(select(contacts.c.id), contacts, principal))

    assert text.endswith("WHERE contacts.company_id = $1::VARCHAR")
    assert values == ["acme"]


def test_scoped_restricts_a_model_query_to_the_callers_company() -> None:
    principal = Principal(user_id="ana", company_id="globex", role=Role.ADMIN)
    statement = select(Campaign).where(Campaign.id == 3)

    text, values = compiled(scoped(statement, Campaign, principal))

    assert "WHERE campaigns.id = $1::INTEGER AND campaigns.company_id = $2::VARCHAR" in text
    assert values == [3, "globex"]
