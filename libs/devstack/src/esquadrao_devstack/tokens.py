"""Development JWTs, signed like the ones services accept (HS256, shared secret).

Claims: ``sub`` (the user), ``company_id`` (the tenant every request is scoped to),
``role``, ``iss`` and ``aud`` (both ``esquadrao``), ``iat`` and ``exp``.
"""

from __future__ import annotations

import time
from enum import StrEnum

import jwt

ISSUER = "esquadrao"
AUDIENCE = "esquadrao"
ALGORITHM = "HS256"
DEFAULT_SECRET = "dev-secret"


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


def mint_token(
    *,
    company_id: str,
    user: str,
    role: Role,
    secret: str,
    ttl_seconds: int,
    now: int | None = None,
) -> str:
    """A signed token for ``user`` of ``company_id`` valid for ``ttl_seconds`` from ``now``."""
    issued_at = int(time.time()) if now is None else now
    claims = {
        "sub": user,
        "company_id": company_id,
        "role": role.value,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
