"""Provider for the WhatsApp Business Cloud API: sends over Meta's Graph API with httpx.

One send is one ``POST /{api_version}/{phone_number_id}/messages`` with a bearer token.
Each request carries our ``message_id`` as ``biz_opaque_callback_data``, which Meta echoes
in every status webhook of that message, so receipts find their ledger row even before
the send's answer was recorded. A quoted reply carries ``context.message_id``.

Errors are classified by :mod:`whatsapp.adapters.cloud_errors`. Transport failures are
TRANSIENT, split by whether the request can have reached Meta: a connection that was never
made (connect error or timeout, no free pooled connection) is safe to retry; a request
that was sent but got no answer (read timeout, dropped connection) may have been accepted,
so it is reported with ``outcome_unknown`` and not retryable, and the pipeline marks the
message UNKNOWN rather than risk a second delivery. The Cloud API has no idempotency key
that would make such a retry safe.

The access token never appears in logs, exception texts or ``repr``: every text taken from
a response or an exception is masked before use, and exceptions from httpx (whose request
objects hold the ``Authorization`` header) are not chained.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

from whatsapp.adapters.cloud_errors import classify_response_error, parse_retry_after
from whatsapp.domain.messages import (
    Media,
    OutboundMessage,
    Template,
    Text,
    e164_from_digits,
)
from whatsapp.domain.provider import FailureKind, ProviderFailure, SendAccepted

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://graph.facebook.com"
DEFAULT_API_VERSION: Final = "v21.0"
#: Connecting must be quick (a dead network should fail fast and be retried); an answer
#: may take longer before we give up and call the outcome unknown.
DEFAULT_TIMEOUT: Final = httpx.Timeout(15.0, connect=5.0)

#: Replaces secrets in any text this module hands out.
MASK: Final = "***"

#: Longest piece of a non-Graph error body kept as detail (an HTML error page, say).
_MAX_RAW_DETAIL: Final = 200

#: Graph error messages start with their code: "(#131026) Message Undeliverable".
_CODE_PREFIX: Final = re.compile(r"^\(#\d+\)\s*")

#: Errors raised before any byte of the request left: retrying cannot duplicate.
_NOT_SENT_ERRORS: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


def build_send_body(message: OutboundMessage) -> dict[str, Any]:
    """The Graph API JSON body that sends ``message``.

    Text, template (body parameters as text parameters) and media (by ``link`` or ``id``,
    with caption and filename when set) as Meta documents them, ``to`` in E.164 form,
    ``biz_opaque_callback_data`` = our message id and, for a quoted reply,
    ``context.message_id``.
    """
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to_phone_e164,
        "biz_opaque_callback_data": message.message_id,
    }
    if message.reply_to is not None:
        body["context"] = {"message_id": message.reply_to}
    content = message.content
    if isinstance(content, Text):
        body["type"] = "text"
        body["text"] = {"preview_url": content.preview_url, "body": content.body}
    elif isinstance(content, Template):
        template: dict[str, Any] = {"name": content.name, "language": {"code": content.language}}
        if content.body_parameters:
            template["components"] = [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": value} for value in content.body_parameters
                    ],
                }
            ]
        body["type"] = "template"
        body["template"] = template
    else:
        body["type"] = content.kind.value
        body[content.kind.value] = _media_object(content)
    return body


def _media_object(media: Media) -> dict[str, str]:
    found: dict[str, str] = (
        {"link": media.link} if media.link is not None else {"id": media.media_id or ""}
    )
    if media.caption:
        found["caption"] = media.caption
    if media.filename:
        found["filename"] = media.filename
    return found


class CloudApiProvider:
    """Sends through one business phone number of the Cloud API (one session).

    ``client`` is shared and owned by the caller (connection pooling across sessions);
    ``timeout`` applies to each send. ``clock`` (Unix seconds) reads ``Retry-After`` dates.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        phone_number_id: str,
        access_token: str,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not phone_number_id.strip():
            raise ValueError("phone_number_id is required")
        if not access_token.strip():
            raise ValueError("access_token is required")
        self._client = client
        self._url = f"{base_url.rstrip('/')}/{api_version.strip('/')}/{phone_number_id}/messages"
        self._phone_number_id = phone_number_id
        self._access_token = access_token
        self._timeout = timeout
        self._clock = clock

    @property
    def messages_url(self) -> str:
        """Where sends are posted."""
        return self._url

    def __repr__(self) -> str:
        return (
            f"CloudApiProvider(url={self._url!r}, phone_number_id={self._phone_number_id!r}, "
            f"access_token={MASK!r})"
        )

    async def send(self, message: OutboundMessage) -> SendAccepted:
        """Post ``message`` once; see :meth:`whatsapp.domain.provider.Provider.send`."""
        try:
            response = await self._client.post(
                self._url,
                json=build_send_body(message),
                headers={"Authorization": f"Bearer {self._access_token}"},
                timeout=self._timeout,
            )
        except httpx.RequestError as error:
            raise self._transport_failure(message, error) from None
        if response.is_success:
            return self._accepted(message, response)
        raise self._response_failure(message, response)

    def _accepted(self, message: OutboundMessage, response: httpx.Response) -> SendAccepted:
        payload = _json_object(response) or {}
        messages = payload.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        provider_id = first.get("id") if isinstance(first, Mapping) else None
        if not isinstance(provider_id, str) or not provider_id:
            # A success status without a message id: it may well have been accepted.
            failure = ProviderFailure(
                FailureKind.TRANSIENT,
                f"http_{response.status_code}",
                "success answer without a message id",
                self._mask(response.text[:_MAX_RAW_DETAIL]),
                http_status=response.status_code,
                outcome_unknown=True,
            )
            self._log_failure(message, failure)
            raise failure
        return SendAccepted(provider_message_id=provider_id, recipient_id=_recipient_id(payload))

    def _response_failure(
        self, message: OutboundMessage, response: httpx.Response
    ) -> ProviderFailure:
        error = (_json_object(response) or {}).get("error")
        code: int | None = None
        title = response.reason_phrase
        detail = "" if isinstance(error, Mapping) else response.text[:_MAX_RAW_DETAIL]
        trace_id = ""
        if isinstance(error, Mapping):
            code = _int_or_none(error.get("code"))
            title = _CODE_PREFIX.sub("", str(error.get("message") or title))
            error_data = error.get("error_data")
            details = error_data.get("details") if isinstance(error_data, Mapping) else None
            detail = str(details or error.get("error_user_msg") or "")
            trace_id = str(error.get("fbtrace_id") or "")
        failure = ProviderFailure(
            classify_response_error(code, response.status_code),
            str(code) if code is not None else f"http_{response.status_code}",
            self._mask(title),
            self._mask(detail),
            retry_after=parse_retry_after(response.headers.get("Retry-After"), self._clock()),
            http_status=response.status_code,
        )
        self._log_failure(message, failure, fbtrace_id=trace_id)
        return failure

    def _transport_failure(
        self, message: OutboundMessage, error: httpx.RequestError
    ) -> ProviderFailure:
        not_sent = isinstance(error, _NOT_SENT_ERRORS)
        failure = ProviderFailure(
            FailureKind.TRANSIENT,
            type(error).__name__,
            "request not sent" if not_sent else "no answer to the request",
            self._mask(str(error)),
            outcome_unknown=not not_sent,
        )
        self._log_failure(message, failure)
        return failure

    def _log_failure(
        self, message: OutboundMessage, failure: ProviderFailure, *, fbtrace_id: str = ""
    ) -> None:
        log.warning(
            "cloud api send failed: %s",
            failure,
            extra={
                "message_id": message.message_id,
                "phone_number_id": self._phone_number_id,
                "failure_kind": failure.kind.value,
                "provider_code": failure.code,
                "http_status": failure.http_status,
                "retryable": failure.retryable,
                "outcome_unknown": failure.outcome_unknown,
                "fbtrace_id": fbtrace_id,
            },
        )

    def _mask(self, text: str) -> str:
        return text.replace(self._access_token, MASK)


def _json_object(response: httpx.Response) -> Mapping[str, Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload if isinstance(payload, Mapping) else None


def _recipient_id(payload: Mapping[str, Any]) -> str:
    contacts = payload.get("contacts")
    first = contacts[0] if isinstance(contacts, list) and contacts else None
    wa_id = first.get("wa_id") if isinstance(first, Mapping) else None
    if not isinstance(wa_id, str):
        return ""
    try:
        return e164_from_digits(wa_id)
    except ValueError:
        return ""


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
