"""``/v1/messages``: ask for a send, and follow it in the send ledger.

``POST`` does not talk to WhatsApp: it stages a ``SendMessage`` command on the interactive
or bulk command topic (through the outbox, in the request's transaction), keyed by the
session id, or the pool id when the service picks the number. The worker that owns that
key takes it into the ledger, once per message id, and sends it at the session's pace. So
the API answers 202 as soon as the command is durable, and the message's fate is read
from ``GET /v1/messages/{message_id}`` or from ``MessageStatusChanged`` events.

A client that retries (a timeout, a crash) sends the same ``message_id`` again: once the
ledger has it, the answer is 200 with the message as it stands and nothing is staged.
A retry that lands before the worker took the first command in stages a second command
with the same id, which the ledger then ignores: never a second send.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from uuid import UUID

from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal
from esquadrao_common.errors import NotFound, problem_responses
from esquadrao_common.events import event_type_of, new_envelope
from esquadrao_common.pagination import Page, PageParams
from fastapi import APIRouter, Depends, Path, Query, Response, status

from whatsapp.adapters.orm import MESSAGE_ID_LENGTH
from whatsapp.domain.events import BULK_TOPIC, INTERACTIVE_TOPIC, PRODUCER
from whatsapp.domain.ledger import Priority
from whatsapp.entrypoints.api.dependencies import Context
from whatsapp.entrypoints.api.problems import MessageIdTaken
from whatsapp.entrypoints.api.schemas import (
    MessageAcceptedOut,
    MessageIn,
    MessageOut,
    StatusName,
    ledger_status,
)
from whatsapp.service_layer.sessions import SessionDeleted, SessionNotFound

Paging = Annotated[PageParams, Depends()]
MessageId = Annotated[str, Path(min_length=1, max_length=MESSAGE_ID_LENGTH)]


def router() -> APIRouter:
    api = APIRouter(
        prefix="/v1/messages",
        tags=["messages"],
        dependencies=[Depends(rate_limited(ApiLimitKind.WHATSAPP))],
        responses=problem_responses(401, 429),
    )

    @api.post(
        "",
        status_code=status.HTTP_202_ACCEPTED,
        # Two bodies by status: documented below, serialized as returned.
        response_model=None,
        responses={
            202: {"description": "Queued for the session's worker.", "model": MessageAcceptedOut},
            200: {
                "description": "The message id is known: the message as it stands; nothing "
                "was queued.",
                "model": MessageOut,
            },
            **problem_responses(404, 409, 422),
        },
        summary="Send a message",
    )
    async def send_message(
        body: MessageIn, principal: CurrentPrincipal, ctx: Context, response: Response
    ) -> MessageAcceptedOut | MessageOut:
        """Queue a text, template or media message to ``to`` from ``session_id`` (404 when
        the company has no such session, 409 when it is deleted) or from a healthy session
        of ``pool_id`` (404 when no live session is in the pool). ``bulk`` priority is for
        campaigns: ``interactive`` messages of a session always go first.

        202 once queued; 200 with the message when its ``message_id`` is already in the
        ledger (a retry); 409 when that id is another company's."""
        company_id = principal.company_id
        message_id = str(body.message_id or uuid.uuid4())
        now = ctx.clock()
        command = body.command(message_id, now)
        response.headers["Location"] = f"/v1/messages/{message_id}"
        async with ctx.uow() as uow:
            existing = await uow.ledger.get(message_id)
            if existing is not None:
                if existing.company_id != company_id:
                    raise MessageIdTaken(message_id)
                response.status_code = status.HTTP_200_OK
                return MessageOut.of(existing)
            if command.session_id:
                session = await uow.sessions.get(command.session_id, company_id=company_id)
                if session is None:
                    raise SessionNotFound(command.session_id)
                if session.deleted_at is not None:
                    raise SessionDeleted(command.session_id)
            elif not await uow.sessions.pool_members(company_id, command.pool_id):
                raise NotFound(f"pool {command.pool_id} has no sessions")
            record = commands_pb2.WhatsappCommand(send_message=command)
            record.envelope.CopyFrom(
                new_envelope(event_type_of(record), company_id, PRODUCER, occurred_at=now)
            )
            topic = BULK_TOPIC if body.priority_level is Priority.BULK else INTERACTIVE_TOPIC
            uow.stage(topic, command.session_id or command.pool_id, record)
            await uow.commit()
        return MessageAcceptedOut(message_id=message_id)

    @api.get("", responses=problem_responses(422), summary="List messages")
    async def list_messages(
        principal: CurrentPrincipal,
        ctx: Context,
        page: Paging,
        session_id: Annotated[UUID | None, Query(description="Sent from this session.")] = None,
        message_status: Annotated[
            StatusName | None, Query(alias="status", description="In this status.")
        ] = None,
    ) -> Page[MessageOut]:
        """The company's messages in the order they were queued, with cursor pagination."""
        async with ctx.uow() as uow:
            result = await uow.ledger.page(
                principal.company_id,
                session_id=None if session_id is None else str(session_id),
                status=None if message_status is None else ledger_status(message_status),
                cursor=page.cursor,
                limit=page.limit,
            )
        return Page(items=[MessageOut.of(e) for e in result.items], next_cursor=result.next_cursor)

    @api.get("/{message_id}", responses=problem_responses(404, 422), summary="Get a message")
    async def get_message(
        message_id: MessageId, principal: CurrentPrincipal, ctx: Context
    ) -> MessageOut:
        """The message's ledger entry: status, provider id, attempts, error, timestamps.
        404 until the worker took the command in (shortly after the 202)."""
        async with ctx.uow() as uow:
            entry = await uow.ledger.get(message_id, company_id=principal.company_id)
        if entry is None:
            raise NotFound(f"message {message_id} does not exist")
        return MessageOut.of(entry)

    return api
