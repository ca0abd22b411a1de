"""``/consent-keywords``: the inbound WhatsApp messages that opt a contact out or back in.

Opt-out and opt-in of one contact are under ``/contacts/{id}/opt-out`` and ``/opt-in``.
"""

from __future__ import annotations

from typing import Annotated

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal, Principal, Role, require_role
from esquadrao_common.errors import problem_responses
from fastapi import APIRouter, Depends, status

from contacts.domain.model import ContactValidationError
from contacts.domain.optout import ConsentKeywords
from contacts.entrypoints.api.dependencies import Context
from contacts.entrypoints.api.problems import validation_problem
from contacts.entrypoints.api.schemas import ConsentKeywordsIn, ConsentKeywordsOut
from contacts.service_layer import consent as handlers

#: Keywords decide who stops receiving campaigns: supervisors and admins change them.
Manager = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.SUPERVISOR))]


def _out(keywords: ConsentKeywords, own: bool) -> ConsentKeywordsOut:
    return ConsentKeywordsOut(
        opt_out_keywords=list(keywords.opt_out_keywords),
        opt_in_keywords=list(keywords.opt_in_keywords),
        source="company" if own else "default",
    )


def router() -> APIRouter:
    api = APIRouter(
        prefix="/consent-keywords",
        tags=["consent"],
        dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))],
        responses=problem_responses(401, 429),
    )

    @api.get("", summary="The opt-out and opt-in keywords in effect")
    async def get_keywords(principal: CurrentPrincipal, ctx: Context) -> ConsentKeywordsOut:
        """A message opts its sender out (or in) when its whole text is a keyword, ignoring
        case, accents, punctuation and emoji around it."""
        async with ctx.uow() as uow:
            keywords, own = await handlers.company_keywords(uow, principal.company_id)
        return _out(keywords, own)

    @api.put("", responses=problem_responses(403, 422), summary="Set the company's keywords")
    async def put_keywords(
        body: ConsentKeywordsIn, manager: Manager, ctx: Context
    ) -> ConsentKeywordsOut:
        """Replaces both lists. 422 for a keyword without letters or digits, longer than 40
        characters, in both lists, or more than 50 per list."""
        try:
            keywords = ConsentKeywords(opt_out=body.opt_out_keywords, opt_in=body.opt_in_keywords)
        except ContactValidationError as error:
            raise validation_problem(error) from None
        async with ctx.uow() as uow:
            await handlers.set_keywords(uow, manager.company_id, keywords, now=ctx.clock())
            await uow.commit()
        return _out(keywords, True)

    @api.delete(
        "",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(403),
        summary="Return to the default keywords",
    )
    async def reset_keywords(manager: Manager, ctx: Context) -> None:
        async with ctx.uow() as uow:
            await handlers.reset_keywords(uow, manager.company_id)
            await uow.commit()

    return api
