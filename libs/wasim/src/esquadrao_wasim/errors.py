"""The WhatsApp errors the simulator produces, with Meta's codes, titles and HTTP statuses.

The same codes serve both surfaces: the Cloud API answers them in Graph's error shape
(:func:`graph_error_body`), the session protocol in ``error`` frames and in the ``errors``
of ``failed`` statuses. Titles and details follow Meta's error-code reference; clients are
meant to branch on ``code`` only, as Meta recommends.

HTTP statuses are the ones Meta's reference lists: 400 for the throttling and
message-level codes (130429, 131048, 131056, 131026, 131047 and 100), 401 for 190, 500
for 131000. Graph never answers 429 for these codes, so neither does the simulator.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WhatsappError:
    """One error kind: its Meta code, title, default details and HTTP status."""

    code: int
    title: str
    details: str
    http_status: int

    def as_dict(self, details: str | None = None) -> dict[str, Any]:
        """The error as the session protocol and status webhooks carry it."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": details or self.details},
        }


INVALID_PARAMETER = WhatsappError(
    100, "Invalid parameter", "The request included an unsupported or invalid parameter.", 400
)
ACCESS_TOKEN = WhatsappError(
    190,
    "Invalid OAuth access token",
    "The access token is missing, malformed or not the one of this phone number.",
    401,
)
RATE_LIMIT = WhatsappError(
    130429,
    "Rate limit hit",
    "Message failed to send because there were too many messages sent from this phone "
    "number in a short period of time.",
    400,
)
SOMETHING_WENT_WRONG = WhatsappError(
    131000, "Something went wrong", "Message failed to send due to an unknown error.", 500
)
UNDELIVERABLE = WhatsappError(
    131026,
    "Message undeliverable",
    "Unable to deliver message: the recipient is not a WhatsApp user, has not accepted the "
    "terms of service, or uses an old WhatsApp version.",
    400,
)
REENGAGEMENT = WhatsappError(
    131047,
    "Re-engagement message",
    "Message failed to send because more than 24 hours have passed since the customer "
    "last replied to this number.",
    400,
)
SPAM_RATE_LIMIT = WhatsappError(
    131048,
    "Spam rate limit hit",
    "Message failed to send because there are restrictions on how many messages can be "
    "sent from this phone number. This may be because too many previous messages were "
    "blocked or flagged as spam.",
    400,
)
PAIR_RATE_LIMIT = WhatsappError(
    131056,
    "(Business Account, Consumer Account) pair rate limit hit",
    "Message failed to send because there were too many messages sent from this phone "
    "number to the same phone number in a short period of time.",
    400,
)
#: Session protocol only: a ``send`` on a connection that is not (or no longer) connected.
NOT_CONNECTED = WhatsappError(
    9001,
    "Session not connected",
    "The session is not connected: wait for the connected frame before sending.",
    409,
)

#: Errors whose failure the recipient side decides (not the request itself): with
#: ``error_delivery = "webhook"`` they are accepted first and fail in a status callback,
#: as Meta reports them.
MESSAGE_LEVEL_ERRORS = frozenset({UNDELIVERABLE.code, REENGAGEMENT.code, SPAM_RATE_LIMIT.code})


def fbtrace_id() -> str:
    """A Graph-like trace id, as every Graph error carries one."""
    return secrets.token_urlsafe(15)


def graph_error_body(
    error: WhatsappError, details: str | None = None, *, subcode: int | None = None
) -> dict[str, Any]:
    """The Graph API error document for ``error`` (``details`` replaces the default).

    ``error_subcode`` is deprecated by Meta and left out, except where Graph still sends
    one (33: the object of the path does not exist).
    """
    body: dict[str, Any] = {
        "message": f"(#{error.code}) {error.title}",
        "type": "OAuthException",
        "code": error.code,
        "error_data": {"messaging_product": "whatsapp", "details": details or error.details},
    }
    if subcode is not None:
        body["error_subcode"] = subcode
    body["fbtrace_id"] = fbtrace_id()
    return {"error": body}
