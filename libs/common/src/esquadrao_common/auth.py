"""Authentication and tenancy: JWT bearer tokens, the :class:`Principal`, role checks.

Every REST request carries ``Authorization: Bearer <jwt>`` with the claims ``sub`` (the
user), ``company_id`` (the tenant the request acts for), ``role`` (a :class:`Role`),
``iss`` and ``aud`` (both ``esquadrao`` unless configured otherwise), ``iat`` and ``exp``.
Tokens are signed with HS256 (a shared secret) or RS256 (a private key; services hold only
the public key). A token that fails any check is a 401 problem whose detail says which.

Wiring: ``install_auth(app, JwtConfig(...))`` once, then endpoints take
``principal: CurrentPrincipal`` (or depend on ``require_role(Role.ADMIN)``). The principal
is also left on ``request.state.principal`` for middleware and logging. Everything an
endpoint reads or writes is scoped to ``principal.company_id`` (see :func:`scoped`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import jwt
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Delete, FromClause, Select, Update

from esquadrao_common.errors import Forbidden, Unauthorized
from esquadrao_common.settings import JwtAlgorithm, ServiceSettings

ISSUER = "esquadrao"
AUDIENCE = "esquadrao"
#: Claims every token must carry (non-null).
REQUIRED_CLAIMS = ("sub", "company_id", "role", "iss", "aud", "iat", "exp")


class Role(StrEnum):
    """What a user may do within their company; checked with :func:`require_role`."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


@dataclass(frozen=True)
class JwtConfig:
    """How tokens are verified: with ``secret`` (HS256) or ``public_key`` (RS256, PEM).

    Only ``algorithm`` is accepted, so a token cannot choose how it is checked (an RS256
    public key is never used as an HS256 secret). ``leeway`` seconds of clock skew are
    tolerated on ``exp`` and ``iat``.
    """

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = None
    algorithm: JwtAlgorithm = "HS256"
    issuer: str = ISSUER
    audience: str = AUDIENCE
    leeway: float = 30.0

    def __post_init__(self) -> None:
        if self.algorithm == "HS256" and not self.secret:
            raise ValueError("HS256 needs a secret")
        if self.algorithm == "RS256" and not self.public_key:
            raise ValueError("RS256 needs a public key")

    @property
    def verification_key(self) -> str:
        key = self.secret if self.algorithm == "HS256" else self.public_key
        assert key is not None
        return key

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> JwtConfig:
        """The verification settings of a service (``JWT_ALGORITHM``, ``JWT_SECRET``,
        ``JWT_PUBLIC_KEY``), already validated by :class:`ServiceSettings`."""
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        return cls(
            secret=secret, public_key=settings.jwt_public_key, algorithm=settings.jwt_algorithm
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``user_id`` (``sub``) acting for ``company_id`` as ``role``, and
    every claim of the token they presented."""

    user_id: str
    company_id: str
    role: Role
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles


def mint_token(
    *,
    company_id: str,
    user: str,
    role: Role,
    ttl_seconds: int,
    secret: str | None = None,
    private_key: str | None = None,
    now: int | None = None,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
) -> str:
    """A token for ``user`` of ``company_id`` valid ``ttl_seconds`` from ``now`` (default:
    the current time), signed HS256 with ``secret`` or RS256 with ``private_key`` (PEM);
    exactly one of them."""
    issued_at = int(time.time()) if now is None else now
    claims = {
        "sub": user,
        "company_id": company_id,
        "role": role.value,
        "iss": issuer,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    if secret is not None and private_key is None:
        return jwt.encode(claims, secret, algorithm="HS256")
    if private_key is not None and secret is None:
        return jwt.encode(claims, private_key, algorithm="RS256")
    raise ValueError("give exactly one of secret (HS256) and private_key (RS256)")


def _rejection(error: jwt.InvalidTokenError, config: JwtConfig) -> str:
    """Why ``error`` rejected a token, in words a client developer can act on."""
    match error:
        case jwt.ExpiredSignatureError():
            return "token has expired"
        case jwt.ImmatureSignatureError():
            return "token is not valid yet (iat or nbf in the future)"
        case jwt.InvalidSignatureError():
            return "token signature is invalid"
        case jwt.InvalidAlgorithmError():
            return f"token is not signed with {config.algorithm}"
        case jwt.InvalidAudienceError():
            return f"token audience is not {config.audience!r}"
        case jwt.InvalidIssuerError():
            return f"token issuer is not {config.issuer!r}"
        case jwt.MissingRequiredClaimError(claim=claim):
            return f"token has no {claim} claim"
        case jwt.DecodeError():
            return "token is malformed"
        case _:
            return f"token is invalid: {error}"


def verify_token(token: str, config: JwtConfig) -> Principal:
    """The principal ``token`` authenticates; :class:`Unauthorized` (401) if the token is
    malformed, badly signed, expired, for another issuer or audience, lacks a required
    claim or names an unknown role."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            config.verification_key,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.InvalidTokenError as error:
        raise Unauthorized(_rejection(error, config)) from None
    company_id = claims["company_id"]
    if not isinstance(company_id, str) or not company_id:
        raise Unauthorized("token company_id claim must be a non-empty string")
    try:
        role = Role(claims["role"])
    except ValueError:
        raise Unauthorized(f"token role {claims['role']!r} is not a known role") from None
    return Principal(user_id=str(claims["sub"]), company_id=company_id, role=role, claims=claims)


def install_auth(app: FastAPI, config: JwtConfig) -> None:
    """Make :func:`current_principal` verify tokens of ``app`` with ``config``."""
    app.state.jwt_config = config


_bearer = HTTPBearer(auto_error=False, description="A JWT: `Authorization: Bearer <token>`.")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of this request (FastAPI dependency); 401 without a valid bearer token.

    Also sets ``request.state.principal`` (for middleware) and binds ``company_id`` and
    ``user_id`` to the structlog context (for every log line of the request). The app
    must have gone through :func:`install_auth`.
    """
    config = getattr(request.app.state, "jwt_config", None)
    if not isinstance(config, JwtConfig):
        raise RuntimeError("install_auth(app, config) was not called for this app")
    if credentials is None:
        raise Unauthorized(
            "missing bearer token (Authorization: Bearer <jwt>)", invalid_token=False
        )
    principal = verify_token(credentials.credentials, config)
    request.state.principal = principal
    structlog.contextvars.bind_contextvars(
        company_id=principal.company_id, user_id=principal.user_id
    )
    return principal


#: An endpoint parameter annotated with this receives the authenticated caller.
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through only callers with one of ``roles`` (403 problem
    otherwise) and returns their principal:
    ``admin: Annotated[Principal, Depends(require_role(Role.ADMIN))]``."""
    if not roles:
        raise ValueError("require_role needs at least one role")
    allowed = ", ".join(role.value for role in roles)

    async def check_role(principal: CurrentPrincipal) -> Principal:
        if not principal.has_role(*roles):
            raise Forbidden(f"role {principal.role.value!r} may not do this; needs {allowed}")
        return principal

    return check_role


Scopable = TypeVar("Scopable", Select[Any], Update, Delete)


def scoped(statement: Scopable, source: FromClause | type[Any], principal: Principal) -> Scopable:
    """``statement`` limited to the rows of ``principal``'s company:
    ``WHERE source.company_id = principal.company_id``. ``source`` is a table (or other
    FROM clause) or an ORM model with a ``company_id`` column."""
    column = source.c.company_id if isinstance(source, FromClause) else source.company_id
    return statement.where(column == principal.company_id)
