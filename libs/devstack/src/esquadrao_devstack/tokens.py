"""Development JWTs, signed like the ones services accept.

Tokens are minted by :func:`esquadrao_common.auth.mint_token` (re-exported here with
:class:`~esquadrao_common.auth.Role`). Claims: ``sub`` (the user), ``company_id`` (the
tenant every request is scoped to), ``role``, ``iss`` and ``aud`` (both ``esquadrao``),
``iat`` and ``exp``.
"""

from __future__ import annotations

from esquadrao_common.auth import AUDIENCE, ISSUER, Role, mint_token
from esquadrao_common.settings import DEV_JWT_SECRET

__all__ = ["ALGORITHM", "AUDIENCE", "DEFAULT_SECRET", "ISSUER", "Role", "mint_token"]

#: Development tokens are HS256, signed with ``JWT_SECRET``, by default the secret services
#: verify with in development.
ALGORITHM = "HS256"
DEFAULT_SECRET = DEV_JWT_SECRET
