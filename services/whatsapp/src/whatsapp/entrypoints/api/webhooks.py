"""``/v1/webhooks/cloud/{session_id}``: where Meta delivers a Cloud API number's traffic.

Each ``cloud`` session has its own callback URL (register it in the app's WhatsApp
configuration, with the session's verify token). There is no bearer token: Meta proves
itself by signing every body with the session's app secret, and the subscription
handshake by echoing the verify token. Both secrets are read from the session's sealed
credentials for each request.

* ``GET`` — the subscription handshake: ``hub.mode=subscribe`` with the session's
  ``hub.verify_token`` is answered with ``hub.challenge`` as plain text; anything else 403.
* ``POST`` — a delivery. The signature (``X-Hub-Signature-256``) is checked on the raw
  bytes, before any parsing (re-serialized JSON has another signature: 401). Then the
  inbound messages are recorded (one ``MessageReceived`` per provider message id, however
  often Meta delivers it) and the receipts applied to the ledger (forward only), all in
  one transaction, and only then 200: a delivery that fails is retried by Meta, and
  applying it twice changes nothing.

Items about another number than the session's are ignored (logged, counted): a body signed
with one session's app secret speaks for that session only, and must not reach another
session, which may be another company's.

A signed body that is not a webhook payload (not JSON, or JSON without an ``entry``
list) is answered 200, logged and counted as ``malformed``, not 400: Meta retries every
non-2xx delivery for days, and bytes it signed that do not parse now will not parse on a
retry, so a 400 would only repeat the failure and put the subscription at risk, holding
up the number's good traffic behind it.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Final
from uuid import UUID

from esquadrao_common.errors import Forbidden, NotFound, ProblemError, problem_responses
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field

from whatsapp.adapters.cloud_webhooks import (
    SIGNATURE_HEADER,
    InvalidSignature,
    MalformedWebhook,
    SubscriptionRejected,
    WebhookBatch,
    parse_webhook,
    verify_signature,
    verify_subscription,
)
from whatsapp.adapters.credentials import CloudCredentials, CredentialsError
from whatsapp.domain.sessions import ProviderKind, Session
from whatsapp.entrypoints.api.dependencies import ApiContext, Context
from whatsapp.entrypoints.api.problems import InvalidWebhookSignature
from whatsapp.service_layer.messages import apply_statuses, record_inbound

log = logging.getLogger(__name__)

#: Largest body read: Meta's deliveries are a few kilobytes.
MAX_WEBHOOK_BYTES: Final = 1024 * 1024

REQUESTS = Counter(
    "esquadrao_whatsapp_webhook_requests",
    "Cloud API webhook requests, by outcome: deliveries processed, malformed or with an "
    "invalid_signature; handshakes subscribed or refused; unknown_session and "
    "credentials_unavailable for both.",
    ["outcome"],
)
IGNORED_ITEMS = Counter(
    "esquadrao_whatsapp_webhook_ignored_items",
    "Messages and statuses of signed deliveries left out, by why (other_number, unreadable).",
    ["reason"],
)


class CredentialsUnavailable(ProblemError):
    """503: the session's credentials cannot be opened here (a key missing from
    ``WHATSAPP_CREDENTIALS_KEY``): Meta retries, and succeeds once the key is back."""

    default_status = 503
    default_title = "Credentials Unavailable"
    slug = "credentials-unavailable"


class PayloadTooLarge(ProblemError):
    default_status = 413
    default_title = "Content Too Large"
    slug = "payload-too-large"


class WebhookOut(BaseModel):
    """What the delivery changed (Meta only looks at the status code)."""

    received: int = Field(description="Inbound messages recorded for the first time.")
    statuses: int = Field(description="Messages whose status moved forward.")
    ignored: int = Field(description="Items about another number, or unreadable.")


async def _cloud_session(ctx: ApiContext, session_id: UUID) -> tuple[Session, CloudCredentials]:
    """The live ``cloud`` session and its opened credentials: 404 when there is none,
    503 when its credentials cannot be opened."""
    async with ctx.uow() as uow:
        session = await uow.sessions.get(str(session_id))
        sealed = await uow.sessions.credentials(str(session_id)) if session else None
    if (
        session is None
        or session.deleted_at is not None
        or session.provider is not ProviderKind.CLOUD
    ):
        REQUESTS.labels("unknown_session").inc()
        raise NotFound(f"no cloud session {session_id}")
    try:
        if sealed is None:
            raise CredentialsError("the session has no credentials")
        return session, CloudCredentials.of(ctx.cipher.open(sealed))
    except CredentialsError as error:
        log.error("cloud session %s: %s", session.id, error)
        REQUESTS.labels("credentials_unavailable").inc()
        raise CredentialsUnavailable(
            f"the credentials of session {session.id} cannot be used"
        ) from None


async def _raw_body(request: Request) -> bytes:
    """The body exactly as received (what the signature covers), at most
    :data:`MAX_WEBHOOK_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"bodies of more than {MAX_WEBHOOK_BYTES} bytes are refused")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise PayloadTooLarge(f"bodies of more than {MAX_WEBHOOK_BYTES} bytes are refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _batch(raw: bytes, session: Session) -> WebhookBatch | None:
    """The parsed delivery, None when it is not a webhook payload (logged and counted)."""
    try:
        return parse_webhook(json.loads(raw))
    except (ValueError, MalformedWebhook) as error:
        # The body may hold customers' messages: its size goes to the log, not its text.
        log.warning(
            "signed webhook for session %s is not a payload (%d bytes): %s",
            session.id,
            len(raw),
            error,
        )
        REQUESTS.labels("malformed").inc()
        return None


def router() -> APIRouter:
    api = APIRouter(prefix="/v1/webhooks/cloud", tags=["webhooks"])

    @api.get(
        "/{session_id}",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "The challenge, echoed."},
            **problem_responses(403, 404, 422, 503),
        },
        summary="Cloud API webhook subscription handshake",
    )
    async def verify_webhook(
        session_id: UUID,
        ctx: Context,
        mode: Annotated[str | None, Query(alias="hub.mode")] = None,
        verify_token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
        challenge: Annotated[str | None, Query(alias="hub.challenge")] = None,
    ) -> PlainTextResponse:
        """Meta calls this when the callback URL is registered: answered with
        ``hub.challenge`` only for ``hub.mode=subscribe`` and the session's verify
        token; 403 otherwise."""
        _session, credentials = await _cloud_session(ctx, session_id)
        try:
            answer = verify_subscription(mode, verify_token, challenge, credentials.verify_token)
        except SubscriptionRejected as error:
            REQUESTS.labels("refused").inc()
            raise Forbidden(str(error)) from None
        REQUESTS.labels("subscribed").inc()
        return PlainTextResponse(answer)

    @api.post(
        "/{session_id}",
        responses=problem_responses(401, 404, 413, 422, 503),
        summary="Cloud API webhook delivery",
    )
    async def receive_webhook(
        session_id: UUID,
        request: Request,
        ctx: Context,
        signature: Annotated[
            str | None,
            Header(alias=SIGNATURE_HEADER, description="sha256=<HMAC of the body>."),
        ] = None,
    ) -> WebhookOut:
        """A delivery of inbound messages and receipts, signed with the session's app
        secret over the raw body: 401 without a valid signature. Everything in it is
        stored before the 200, in one transaction; redeliveries change nothing."""
        raw = await _raw_body(request)
        session, credentials = await _cloud_session(ctx, session_id)
        try:
            verify_signature(raw, signature, credentials.app_secret)
        except InvalidSignature as error:
            REQUESTS.labels("invalid_signature").inc()
            raise InvalidWebhookSignature(str(error)) from None
        batch = _batch(raw, session)
        if batch is None:
            return WebhookOut(received=0, statuses=0, ignored=0)
        number = session.provider_number_id
        inbound = [m for m in batch.inbound if m.provider_number_id == number]
        statuses = [s for s in batch.statuses if s.provider_number_id == number]
        other = len(batch.inbound) + len(batch.statuses) - len(inbound) - len(statuses)
        if other:
            log.warning(
                "webhook for session %s (number %s) carried %d items of other numbers: ignored",
                session.id,
                number,
                other,
            )
            IGNORED_ITEMS.labels("other_number").inc(other)
        if batch.unreadable:
            IGNORED_ITEMS.labels("unreadable").inc(len(batch.unreadable))
        now = ctx.clock()
        async with ctx.uow() as uow:
            received = 0
            for message in inbound:
                received += await record_inbound(uow, session, message, now)
            changed = await apply_statuses(uow, session.id, statuses, now)
            await uow.commit()
        REQUESTS.labels("processed").inc()
        return WebhookOut(
            received=received, statuses=changed, ignored=other + len(batch.unreadable)
        )

    return api
