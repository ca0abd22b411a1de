"""Cloud API error codes and what they mean for the send pipeline.

Meta recommends building error handling on the numeric ``error.code`` (not on subcodes,
titles or HTTP statuses), and reports the same codes both synchronously (the Graph API
answer to a send) and asynchronously (``errors[]`` of a "failed" status webhook, or of the
webhook value itself). Both adapters classify through this one table, so a 131048 costs
the session its breaker whichever way it arrives. The table is documented in
``docs/whatsapp-cloud-api.md``; keep the two in step.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

from whatsapp.domain.provider import FailureKind

_CODES_BY_KIND: Final[dict[FailureKind, frozenset[int]]] = {
    # 4: app call rate, 80007: business account call rate, 130429: message throughput.
    FailureKind.THROTTLED: frozenset({4, 80007, 130429}),
    FailureKind.PAIR_RATE_LIMITED: frozenset({131056}),
    # 131048: spam rate limit; 131049: Meta chose not to deliver, to keep engagement
    # healthy; 368: temporarily blocked for policy violations.
    FailureKind.QUALITY: frozenset({131048, 131049, 368}),
    # 131026: undeliverable; 131050: the user stopped marketing messages; 130472: the
    # user's number is part of an experiment; 130497: the account may not message users
    # in that country.
    FailureKind.UNDELIVERABLE: frozenset({131026, 131050, 130472, 130497}),
    # 0: auth exception; 3, 10, 200-299: permissions; 190: access token expired or
    # invalid; 131005: access denied; 131031: account locked; 131037: display name not
    # approved; 131042: payment issue; 131045: phone number registration error.
    FailureKind.AUTH: frozenset(
        {0, 3, 10, 190, 131005, 131031, 131037, 131042, 131045, *range(200, 300)}
    ),
    FailureKind.INVALID_REQUEST: frozenset(
        {
            33,  # the business phone number id is not valid (deleted)
            100,  # invalid parameter
            131008,  # required parameter missing
            131009,  # parameter value not valid
            131021,  # recipient is the sender
            131051,  # unsupported message type
            131052,  # media download error
            131053,  # media upload error
            132000,  # template parameter count mismatch
            132001,  # template does not exist (in that language)
            132005,  # template hydrated text too long
            132007,  # template format character policy violated
            132012,  # template parameter format mismatch
            132015,  # template paused
            132016,  # template disabled
        }
    ),
    FailureKind.REENGAGEMENT_REQUIRED: frozenset({131047}),
    # 1: unknown (possibly server error), 2: service temporarily down or overloaded,
    # 131000: something went wrong, 131016: service unavailable, 131057: maintenance.
    FailureKind.TRANSIENT: frozenset({1, 2, 131000, 131016, 131057}),
}

#: Each documented Cloud API error code and its kind.
KIND_BY_CODE: Final[dict[int, FailureKind]] = {
    code: kind for kind, codes in _CODES_BY_KIND.items() for code in codes
}


def classify_response_error(code: int | None, http_status: int) -> FailureKind:
    """The kind of a Graph API error answer to a request.

    HTTP 401 is always AUTH: whatever the body says, the token was refused. Otherwise the
    error code decides; an unknown or missing code falls back on the HTTP status: 403 is
    AUTH, 429 THROTTLED, 5xx TRANSIENT, any other status INVALID_REQUEST.
    """
    if http_status == 401:
        return FailureKind.AUTH
    if code is not None and code in KIND_BY_CODE:
        return KIND_BY_CODE[code]
    if http_status == 403:
        return FailureKind.AUTH
    if http_status == 429:
        return FailureKind.THROTTLED
    if http_status >= 500:
        return FailureKind.TRANSIENT
    return FailureKind.INVALID_REQUEST


def classify_delivery_error(code: int | None) -> FailureKind:
    """The kind of an error a webhook reports for a message the API had accepted.

    The request was valid, so an unknown code means the message could not be delivered
    (UNDELIVERABLE), not that we sent something wrong.
    """
    if code is not None and code in KIND_BY_CODE:
        return KIND_BY_CODE[code]
    return FailureKind.UNDELIVERABLE


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date.

    ``now_epoch`` is the current time (Unix seconds) for the date form. Answers None when
    the header is absent or unreadable, and never less than 0 (a date in the past means
    "now").
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": a UTC time from a source that did not say so
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now_epoch)
