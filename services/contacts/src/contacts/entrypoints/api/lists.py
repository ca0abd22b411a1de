"""``/contact-lists``: create, rename, delete lists; add and remove members (one or up to
1000 at a time); list members; counts.

Another company's list or contact is a 404 (or, in bulk bodies, reported under
``not_found``), exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal, Principal, Role, require_role
from esquadrao_common.errors import problem_responses
from esquadrao_common.pagination import Page, PageParams
from fastapi import APIRouter, Depends, Response, status

from contacts.domain.lists import clean_list_name
from contacts.domain.model import ContactIsDeleted, ContactValidationError
from contacts.entrypoints.api.dependencies import Context
from contacts.entrypoints.api.problems import validation_problem
from contacts.entrypoints.api.schemas import (
    ContactListDetailOut,
    ContactListIn,
    ContactListOut,
    ContactOut,
    MembersAddedOut,
    MembersIn,
    MembersRemovedOut,
)
from contacts.service_layer import lists as handlers
from contacts.service_layer.errors import NotFoundError

Paging = Annotated[PageParams, Depends()]
#: Deleting a list cannot be undone: supervisors and admins only.
Manager = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.SUPERVISOR))]


def _name(body: ContactListIn) -> str:
    try:
        return clean_list_name(body.name)
    except ContactValidationError as error:
        raise validation_problem(error) from None


def router() -> APIRouter:
    api = APIRouter(
        prefix="/contact-lists",
        tags=["contact lists"],
        dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))],
        responses=problem_responses(401, 429),
    )

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409, 422),
        summary="Create a list",
    )
    async def create_list(
        body: ContactListIn, principal: CurrentPrincipal, ctx: Context, response: Response
    ) -> ContactListOut:
        """409 with ``existing_id`` when the company has a list of that name."""
        name = _name(body)
        async with ctx.uow() as uow:
            contact_list = await handlers.create_list(
                uow, principal.company_id, name, now=ctx.clock()
            )
            await uow.commit()
        response.headers["Location"] = f"/contact-lists/{contact_list.id}"
        return ContactListOut.of(contact_list)

    @api.get("", responses=problem_responses(422), summary="List the lists")
    async def list_lists(
        principal: CurrentPrincipal, ctx: Context, page: Paging
    ) -> Page[ContactListOut]:
        """Oldest first."""
        async with ctx.uow() as uow:
            result = await handlers.list_lists(
                uow, principal.company_id, cursor=page.cursor, limit=page.limit
            )
        return Page(
            items=[ContactListOut.of(item) for item in result.items],
            next_cursor=result.next_cursor,
        )

    @api.get(
        "/{list_id}", responses=problem_responses(404, 422), summary="Get a list and its counts"
    )
    async def get_list(
        list_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> ContactListDetailOut:
        async with ctx.uow() as uow:
            contact_list, counts = await handlers.get_list(uow, principal.company_id, str(list_id))
        return ContactListDetailOut.detailed(contact_list, counts)

    @api.patch("/{list_id}", responses=problem_responses(404, 409, 422), summary="Rename a list")
    async def rename_list(
        list_id: UUID, body: ContactListIn, principal: CurrentPrincipal, ctx: Context
    ) -> ContactListOut:
        name = _name(body)
        async with ctx.uow() as uow:
            contact_list = await handlers.rename_list(
                uow, principal.company_id, str(list_id), name, now=ctx.clock()
            )
            await uow.commit()
        return ContactListOut.of(contact_list)

    @api.delete(
        "/{list_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(403, 404, 422),
        summary="Delete a list",
    )
    async def delete_list(list_id: UUID, manager: Manager, ctx: Context) -> None:
        """The contacts stay; only the list and its memberships go (reported as removed)."""
        async with ctx.uow() as uow:
            await handlers.delete_list(uow, manager.company_id, str(list_id), now=ctx.clock())
            await uow.commit()

    @api.get(
        "/{list_id}/members", responses=problem_responses(404, 422), summary="List the members"
    )
    async def list_members(
        list_id: UUID, principal: CurrentPrincipal, ctx: Context, page: Paging
    ) -> Page[ContactOut]:
        """Live members, in the order they were added."""
        async with ctx.uow() as uow:
            result = await handlers.list_members(
                uow, principal.company_id, str(list_id), cursor=page.cursor, limit=page.limit
            )
        return Page(items=[ContactOut.of(c) for c in result.items], next_cursor=result.next_cursor)

    @api.post("/{list_id}/members", responses=problem_responses(404, 422), summary="Add members")
    async def add_members(
        list_id: UUID, body: MembersIn, principal: CurrentPrincipal, ctx: Context
    ) -> MembersAddedOut:
        """Adds the company's live contacts among the ids; the others are reported."""
        async with ctx.uow() as uow:
            change = await handlers.add_members(
                uow, principal.company_id, str(list_id), body.ids(), now=ctx.clock()
            )
            await uow.commit()
        return MembersAddedOut(
            added=change.changed,
            already_members=change.unchanged,
            not_found=change.not_found,
            deleted=change.deleted,
        )

    @api.post(
        "/{list_id}/members/remove",
        responses=problem_responses(404, 422),
        summary="Remove members",
    )
    async def remove_members(
        list_id: UUID, body: MembersIn, principal: CurrentPrincipal, ctx: Context
    ) -> MembersRemovedOut:
        async with ctx.uow() as uow:
            change = await handlers.remove_members(
                uow, principal.company_id, str(list_id), body.ids(), now=ctx.clock()
            )
            await uow.commit()
        return MembersRemovedOut(
            removed=change.changed, not_members=change.unchanged, not_found=change.not_found
        )

    @api.put(
        "/{list_id}/members/{contact_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(404, 409, 422),
        summary="Add one member",
    )
    async def add_member(
        list_id: UUID, contact_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> None:
        """Idempotent; 404 for an unknown contact, 409 for a deleted one."""
        async with ctx.uow() as uow:
            change = await handlers.add_members(
                uow, principal.company_id, str(list_id), [str(contact_id)], now=ctx.clock()
            )
            if change.not_found:
                raise NotFoundError("contact", str(contact_id))
            if change.deleted:
                raise ContactIsDeleted(str(contact_id))
            await uow.commit()

    @api.delete(
        "/{list_id}/members/{contact_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(404, 422),
        summary="Remove one member",
    )
    async def remove_member(
        list_id: UUID, contact_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> None:
        """Idempotent; 404 for an unknown contact."""
        async with ctx.uow() as uow:
            change = await handlers.remove_members(
                uow, principal.company_id, str(list_id), [str(contact_id)], now=ctx.clock()
            )
            if change.not_found:
                raise NotFoundError("contact", str(contact_id))
            await uow.commit()

    return api
