"""``/contact-fields``: the company's custom field definitions (key, label, type, options),
which contact bodies, filters, imports and message templates use."""

from __future__ import annotations

from typing import Annotated

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal, Principal, Role, require_role
from esquadrao_common.errors import problem_responses
from fastapi import APIRouter, Depends, Path, Response, status

from contacts.domain.model import ContactValidationError, CustomFieldDefinition
from contacts.entrypoints.api.dependencies import Context
from contacts.entrypoints.api.problems import validation_problem
from contacts.entrypoints.api.schemas import FieldDefinitionIn, FieldDefinitionOut
from contacts.service_layer import fields as handlers

#: Definitions shape every contact of the company: supervisors and admins change them.
Manager = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.SUPERVISOR))]
FieldKey = Annotated[str, Path(max_length=40, description="The field's key, e.g. `bloco`.")]


def router() -> APIRouter:
    api = APIRouter(
        prefix="/contact-fields",
        tags=["custom fields"],
        dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))],
        responses=problem_responses(401, 429),
    )

    @api.get("", summary="List the custom fields")
    async def list_fields(principal: CurrentPrincipal, ctx: Context) -> list[FieldDefinitionOut]:
        """Every definition of the company, by key (a company has a handful)."""
        async with ctx.uow() as uow:
            definitions = await handlers.list_definitions(uow, principal.company_id)
        return [FieldDefinitionOut.of(definition) for definition in definitions]

    @api.get("/{key}", responses=problem_responses(404), summary="Get a custom field")
    async def get_field(
        key: FieldKey, principal: CurrentPrincipal, ctx: Context
    ) -> FieldDefinitionOut:
        async with ctx.uow() as uow:
            definition = await handlers.get_definition(uow, principal.company_id, key)
        return FieldDefinitionOut.of(definition)

    @api.put(
        "/{key}",
        responses={
            201: {"description": "Created.", "model": FieldDefinitionOut},
            **problem_responses(403, 409, 422),
        },
        summary="Define or change a custom field",
    )
    async def put_field(
        key: FieldKey,
        body: FieldDefinitionIn,
        manager: Manager,
        ctx: Context,
        response: Response,
    ) -> FieldDefinitionOut:
        """201 when created, 200 when changed. The label and options may change; the type
        may not (409): values already stored were checked against it."""
        try:
            definition = CustomFieldDefinition(
                key=key, label=body.label, type=body.type, options=tuple(body.options)
            )
        except ContactValidationError as error:
            raise validation_problem(error) from None
        async with ctx.uow() as uow:
            created = await handlers.put_definition(
                uow, manager.company_id, definition, now=ctx.clock()
            )
            await uow.commit()
        if created:
            response.status_code = status.HTTP_201_CREATED
        return FieldDefinitionOut.of(definition)

    @api.delete(
        "/{key}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(403, 404, 409),
        summary="Remove a custom field",
    )
    async def delete_field(key: FieldKey, manager: Manager, ctx: Context) -> None:
        """409 while contacts (deleted ones too) hold a value for the field."""
        async with ctx.uow() as uow:
            await handlers.delete_definition(uow, manager.company_id, key)
            await uow.commit()

    return api
