"""``/v1/sessions``: a company's WhatsApp numbers — configuration, operation and health.

Every endpoint acts for the token's company only: another company's session is a 404,
exactly like one that does not exist. Reading is open to every role; changing a session
(and seeing its pairing code, which links a phone to it) takes a supervisor or an admin.

Operational endpoints (start, stop, reconnect, breaker reset) answer 202: the request is
queued for the worker that drives the session (see :mod:`whatsapp.service_layer.sessions`),
whose effect shows in ``GET /v1/sessions/{id}/status`` and on ``whatsapp.events.v1``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Protocol
from uuid import UUID

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal, Principal, Role, require_role
from esquadrao_common.errors import problem_responses
from esquadrao_common.pagination import Page, PageParams
from fastapi import APIRouter, Body, Depends, Query, Response, status

from whatsapp.adapters.repositories import SessionFilter
from whatsapp.domain.sessions import ProviderKind, SessionState
from whatsapp.entrypoints.api.dependencies import ApiContext, Context
from whatsapp.entrypoints.api.schemas import (
    ControlIn,
    ControlOut,
    PairingOut,
    SessionIn,
    SessionMetricsOut,
    SessionOut,
    SessionPatchIn,
    SessionStatusOut,
)
from whatsapp.service_layer import sessions as handlers
from whatsapp.service_layer.sessions import ControlRequested
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

#: Sessions hold a company's numbers and their credentials: supervisors and admins
#: change them.
Manager = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.SUPERVISOR))]
Paging = Annotated[PageParams, Depends()]
#: The optional body of an operational request.
Note = Annotated[ControlIn | None, Body()]


class ControlHandler(Protocol):
    """A control handler of :mod:`whatsapp.service_layer.sessions` (``start_session``...)."""

    async def __call__(
        self,
        uow: WhatsappUnitOfWork,
        company_id: str,
        session_id: str,
        *,
        now: datetime,
        requested_by: str,
    ) -> ControlRequested: ...


def _requester(principal: Principal, note: ControlIn | None) -> str:
    """Who asked, and why when they said: the ``reason`` of the state history."""
    who = f"{principal.role.value} {principal.user_id}"
    return f"{who}: {note.reason}" if note is not None and note.reason else who


def router() -> APIRouter:
    api = APIRouter(
        prefix="/v1/sessions",
        tags=["sessions"],
        dependencies=[Depends(rate_limited(ApiLimitKind.WHATSAPP))],
        responses=problem_responses(401, 429),
    )

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(403, 409, 422),
        summary="Add a WhatsApp number",
    )
    async def create_session(
        body: SessionIn, principal: Manager, ctx: Context, response: Response
    ) -> SessionOut:
        """The session is stored stopped, or started at once with ``start: true``.
        Credentials are stored encrypted and never returned (``has_credentials``).

        A ``cloud`` session's ``phone_number_id`` must not be another live session's:
        409 (with ``existing_id`` when that session is the company's own)."""
        draft = body.draft()
        async with ctx.uow() as uow:
            view = await handlers.create_session(
                uow,
                ctx.cipher,
                principal.company_id,
                draft,
                now=ctx.clock(),
                default_profile=ctx.settings.whatsapp_default_profile,
                requested_by=_requester(principal, None),
            )
            await uow.commit()
        response.headers["Location"] = f"/v1/sessions/{view.session.id}"
        return SessionOut.of(view)

    @api.get("", responses=problem_responses(422), summary="List sessions")
    async def list_sessions(
        principal: CurrentPrincipal,
        ctx: Context,
        page: Paging,
        state: Annotated[SessionState | None, Query(description="In this state.")] = None,
        pool_id: Annotated[str | None, Query(max_length=100, description="In this pool.")] = None,
        provider: Annotated[ProviderKind | None, Query(description="Of this provider.")] = None,
        deleted: Annotated[
            bool, Query(description="List deleted sessions instead of live ones.")
        ] = False,
    ) -> Page[SessionOut]:
        """Oldest first, with cursor pagination."""
        criteria = SessionFilter(state=state, pool_id=pool_id, provider=provider, deleted=deleted)
        async with ctx.uow() as uow:
            result = await handlers.list_sessions(
                uow, principal.company_id, criteria, cursor=page.cursor, limit=page.limit
            )
        return Page(items=[SessionOut.of(v) for v in result.items], next_cursor=result.next_cursor)

    @api.get("/{session_id}", responses=problem_responses(404, 422), summary="Get a session")
    async def get_session(
        session_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> SessionOut:
        """Deleted sessions are returned too, with ``deleted_at`` set."""
        async with ctx.uow() as uow:
            view = await handlers.get_session(uow, principal.company_id, str(session_id))
        return SessionOut.of(view)

    @api.patch(
        "/{session_id}",
        responses=problem_responses(403, 404, 409, 422),
        summary="Change a session",
    )
    async def update_session(
        session_id: UUID, body: SessionPatchIn, principal: Manager, ctx: Context
    ) -> SessionOut:
        """New ``credentials`` replace the old ones whole and make a running session
        reconnect with them. 409 for a deleted session (type ``session-deleted``: restore
        it first) or a Cloud API number another live session has."""
        async with ctx.uow() as uow:
            current = await handlers.get_session(uow, principal.company_id, str(session_id))
            view = await handlers.update_session(
                uow,
                ctx.cipher,
                principal.company_id,
                str(session_id),
                body.changes(current.session.provider),
                now=ctx.clock(),
                default_profile=ctx.settings.whatsapp_default_profile,
                requested_by=_requester(principal, None),
            )
            await uow.commit()
        return SessionOut.of(view)

    @api.delete(
        "/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(403, 404, 422),
        summary="Delete a session (soft)",
    )
    async def delete_session(session_id: UUID, principal: Manager, ctx: Context) -> None:
        """The session stops (its worker disconnects it) and is kept, marked deleted,
        with its messages; it can be restored. Deleting it again is a no-op."""
        async with ctx.uow() as uow:
            await handlers.delete_session(
                uow,
                principal.company_id,
                str(session_id),
                now=ctx.clock(),
                requested_by=_requester(principal, None),
            )
            await uow.commit()

    @api.post(
        "/{session_id}/restore",
        responses=problem_responses(403, 404, 409, 422),
        summary="Restore a deleted session",
    )
    async def restore_session(session_id: UUID, principal: Manager, ctx: Context) -> SessionOut:
        """The session comes back stopped; start it to connect. 409 when a live session
        took its Cloud API number meanwhile. Restoring a live session is a no-op."""
        async with ctx.uow() as uow:
            view = await handlers.restore_session(
                uow, principal.company_id, str(session_id), now=ctx.clock()
            )
            await uow.commit()
        return SessionOut.of(view)

    @api.post(
        "/{session_id}/start",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(403, 404, 409, 422),
        summary="Start a session",
    )
    async def start_session(
        session_id: UUID, principal: Manager, ctx: Context, body: Note = None
    ) -> ControlOut:
        """The session should run: its worker connects it (a sim session without a saved
        login pairs: see ``/pairing``); a failed or banned one is restarted. 409 for a
        deleted session."""
        return await _control(handlers.start_session, session_id, principal, ctx, body)

    @api.post(
        "/{session_id}/stop",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(403, 404, 409, 422),
        summary="Stop a session",
    )
    async def stop_session(
        session_id: UUID, principal: Manager, ctx: Context, body: Note = None
    ) -> ControlOut:
        """The session should not run: its worker disconnects it. Its queued messages
        wait until it starts again, or expire. 409 for a deleted session."""
        return await _control(handlers.stop_session, session_id, principal, ctx, body)

    @api.post(
        "/{session_id}/reconnect",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(403, 404, 409, 422),
        summary="Reconnect a session now",
    )
    async def reconnect_session(
        session_id: UUID, principal: Manager, ctx: Context, body: Note = None
    ) -> ControlOut:
        """Drop the connection and connect again at once, resetting the reconnection
        backoff. 409 when the session is stopped (type ``session-stopped``: start it) or
        deleted."""
        return await _control(handlers.reconnect_session, session_id, principal, ctx, body)

    @api.post(
        "/{session_id}/breaker/reset",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(403, 404, 409, 422),
        summary="Reset a session's circuit breaker",
    )
    async def reset_breaker(
        session_id: UUID, principal: Manager, ctx: Context, body: Note = None
    ) -> ControlOut:
        """Close the breaker once the number was checked (it opens after failures in a
        row, or at once on a quality or ban signal). 409 for a deleted session."""
        return await _control(handlers.reset_breaker, session_id, principal, ctx, body)

    @api.get(
        "/{session_id}/status",
        responses=problem_responses(404, 422),
        summary="A session's connection and breaker state",
    )
    async def session_status(
        session_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> SessionStatusOut:
        """As the worker driving it last stored it."""
        async with ctx.uow() as uow:
            view = await handlers.get_session(uow, principal.company_id, str(session_id))
        return SessionStatusOut.of(view)

    @api.get(
        "/{session_id}/pairing",
        responses=problem_responses(403, 404, 422),
        summary="The code that links a phone to a sim session",
    )
    async def session_pairing(session_id: UUID, principal: Manager, ctx: Context) -> PairingOut:
        """Only while the session is ``pairing``: 404 (type ``not-pairing``) otherwise.
        The code changes as it expires: poll until the session is ``connected``."""
        async with ctx.uow() as uow:
            pairing = await handlers.session_pairing(uow, principal.company_id, str(session_id))
        return PairingOut.model_validate(pairing)

    @api.get(
        "/{session_id}/metrics",
        responses=problem_responses(404, 422),
        summary="A session's figures and message counts",
    )
    async def session_metrics(
        session_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> SessionMetricsOut:
        """The worker's figures as last flushed (every few seconds while it drives the
        session), and the session's messages by status."""
        async with ctx.uow() as uow:
            metrics = await handlers.session_metrics(uow, principal.company_id, str(session_id))
        return SessionMetricsOut.of(metrics)

    return api


async def _control(
    handler: ControlHandler,
    session_id: UUID,
    principal: Principal,
    ctx: ApiContext,
    note: ControlIn | None,
) -> ControlOut:
    """Run a control handler in its own transaction; what was queued."""
    async with ctx.uow() as uow:
        requested = await handler(
            uow,
            principal.company_id,
            str(session_id),
            now=ctx.clock(),
            requested_by=_requester(principal, note),
        )
        await uow.commit()
    return ControlOut(
        session_id=requested.session_id,
        action=requested.action.label,
        command_id=requested.command_id,
    )
