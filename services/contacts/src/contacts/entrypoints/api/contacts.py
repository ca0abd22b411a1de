"""``/contacts``: create, upsert, read, change, delete, restore, list and search contacts,
and their consent (opt-out, opt-in) and lists.

Every endpoint acts for the token's company only: another company's contact is a 404,
exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import CurrentPrincipal
from esquadrao_common.errors import ValidationProblem, problem_responses
from esquadrao_common.pagination import Page, PageParams
from fastapi import APIRouter, Body, Depends, Query, Response, status

from contacts.adapters.repositories import ContactFilter
from contacts.domain.model import (
    ContactValidationError,
    CustomFieldDefinition,
    coerce_custom_value,
    definitions_by_key,
)
from contacts.entrypoints.api.dependencies import Context
from contacts.entrypoints.api.problems import field_errors, validation_problem
from contacts.entrypoints.api.schemas import (
    BulkItemOut,
    BulkUpsertIn,
    BulkUpsertOut,
    ContactIn,
    ContactListOut,
    ContactOut,
    ContactPatchIn,
    FieldErrorOut,
    OptOutIn,
)
from contacts.service_layer import consent, lists
from contacts.service_layer import contacts as handlers
from contacts.service_layer.contacts import UpsertOutcome
from contacts.service_layer.errors import DraftRejected

#: First-class text fields a listing can filter on with ``field=<name>:<value>``.
TEXT_FILTER_FIELDS = ("condominio", "endereco", "cargo")

Paging = Annotated[PageParams, Depends()]


def field_filters(
    raw: list[str], definitions: list[CustomFieldDefinition]
) -> tuple[dict[str, str], dict[str, str]]:
    """``field`` query values (``key:value``) as (custom field values, text field values).

    Custom values are canonicalized as the field's type says (``sim`` is ``true``, a
    choice in any case is the option as defined), so they compare with stored ones.
    ValidationProblem on ``query.field`` for a malformed filter or an unknown field.
    """
    by_key = definitions_by_key(definitions)
    custom: dict[str, str] = {}
    text: dict[str, str] = {}
    for item in raw:
        key, separator, value = item.partition(":")
        key = key.strip()
        if not separator or not key:
            raise ValidationProblem.for_field("query.field", f"{item!r} is not <field>:<value>")
        if key in TEXT_FILTER_FIELDS:
            text[key] = value.strip()
            continue
        try:
            canonical = coerce_custom_value(by_key, key, value)
        except ContactValidationError as error:
            raise ValidationProblem.for_field("query.field", error.message) from None
        if canonical is None:
            raise ValidationProblem.for_field("query.field", f"no value given for field {key!r}")
        custom[key] = canonical
    return custom, text


def router() -> APIRouter:
    api = APIRouter(
        prefix="/contacts",
        tags=["contacts"],
        dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))],
        responses=problem_responses(401, 429),
    )

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {
                "description": "Upsert: an existing contact was merged (or unchanged).",
                "model": ContactOut,
            },
            **problem_responses(409, 422),
        },
        summary="Create a contact (or upsert it)",
    )
    async def create_contact(
        body: ContactIn,
        principal: CurrentPrincipal,
        ctx: Context,
        response: Response,
        upsert: Annotated[
            bool,
            Query(
                description="Merge into the contact with this phone instead of answering 409 "
                "(restoring it if deleted): 201 when created, 200 otherwise."
            ),
        ] = False,
    ) -> ContactOut:
        """Without ``upsert``, a phone the company already has (deleted contacts included)
        is a 409 whose ``existing_id`` is that contact's id."""
        async with ctx.uow() as uow:
            definitions = definitions_by_key(
                await handlers.load_definitions(uow, principal.company_id)
            )
            try:
                draft = body.draft(definitions, ctx.settings.default_region)
            except ContactValidationError as error:
                raise validation_problem(error) from None
            if upsert:
                try:
                    contact, outcome = await handlers.upsert_contact(
                        uow, principal.company_id, draft, now=ctx.clock()
                    )
                except DraftRejected as error:
                    raise validation_problem(error) from None
                if outcome is not UpsertOutcome.CREATED:
                    response.status_code = status.HTTP_200_OK
            else:
                contact = await handlers.create_contact(
                    uow, principal.company_id, draft, now=ctx.clock()
                )
            await uow.commit()
        response.headers["Location"] = f"/contacts/{contact.id}"
        return ContactOut.of(contact)

    @api.post("/bulk", responses=problem_responses(422), summary="Upsert up to 500 contacts")
    async def bulk_upsert(
        body: BulkUpsertIn, principal: CurrentPrincipal, ctx: Context
    ) -> BulkUpsertOut:
        """Each contact is created, or merged into the one with its phone (restoring it if
        deleted); invalid ones are rejected with their field errors and the others applied,
        all in one transaction."""
        items: dict[int, BulkItemOut] = {}
        async with ctx.uow() as uow:
            definitions = definitions_by_key(
                await handlers.load_definitions(uow, principal.company_id)
            )
            drafts = {}
            for index, contact_in in enumerate(body.contacts):
                try:
                    drafts[index] = contact_in.draft(definitions, ctx.settings.default_region)
                except ContactValidationError as error:
                    items[index] = _rejected(index, error)
            while drafts:
                indexes = list(drafts)
                try:
                    results = await handlers.upsert_drafts(
                        uow, principal.company_id, list(drafts.values()), now=ctx.clock()
                    )
                except DraftRejected as error:
                    index = indexes[error.index]
                    items[index] = _rejected(index, error)
                    del drafts[index]
                    continue
                for index, result in zip(indexes, results, strict=True):
                    items[index] = BulkItemOut(
                        index=index, outcome=result.outcome, id=result.contact_id
                    )
                break
            await uow.commit()
        ordered = [items[index] for index in sorted(items)]
        outcomes = [item.outcome for item in ordered]
        return BulkUpsertOut(
            items=ordered,
            created=outcomes.count(UpsertOutcome.CREATED),
            updated=outcomes.count(UpsertOutcome.UPDATED),
            unchanged=outcomes.count(UpsertOutcome.UNCHANGED),
            rejected=outcomes.count("rejected"),
        )

    @api.get("", responses=problem_responses(422), summary="List and search contacts")
    async def list_contacts(
        principal: CurrentPrincipal,
        ctx: Context,
        page: Paging,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=100,
                description="Prefix of the name (case and accents ignored) or, when made of "
                "digits, of the phone (with or without country code).",
            ),
        ] = None,
        tag: Annotated[str | None, Query(description="Has this tag (case ignored).")] = None,
        list_id: Annotated[UUID | None, Query(description="Is a member of this list.")] = None,
        opted_out: Annotated[bool | None, Query(description="Opted out, or not.")] = None,
        deleted: Annotated[
            bool, Query(description="List deleted contacts instead of live ones.")
        ] = False,
        field: Annotated[
            list[str] | None,
            Query(
                description="`<field>:<value>`, repeatable: a custom field's value (compared "
                "as its type says) or `condominio`, `endereco`, `cargo` (case ignored)."
            ),
        ] = None,
    ) -> Page[ContactOut]:
        """Oldest first, with cursor pagination that is stable while contacts are added."""
        async with ctx.uow() as uow:
            definitions = (
                await handlers.load_definitions(uow, principal.company_id) if field else []
            )
            custom, text = field_filters(field or [], definitions)
            search = handlers.contact_search(q, ctx.settings.default_region) if q else None
            criteria = ContactFilter(
                name_prefix=search.name_prefix if search else None,
                phone_prefixes=search.phone_prefixes if search else (),
                tag=tag,
                list_id=None if list_id is None else str(list_id),
                opted_out=opted_out,
                deleted=deleted,
                field_values=custom,
                text_fields=text,
            )
            result = await handlers.list_contacts(
                uow, principal.company_id, criteria, cursor=page.cursor, limit=page.limit
            )
        return Page(items=[ContactOut.of(c) for c in result.items], next_cursor=result.next_cursor)

    @api.get("/{contact_id}", responses=problem_responses(404, 422), summary="Get a contact")
    async def get_contact(
        contact_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> ContactOut:
        """Deleted contacts are returned too, with ``deleted_at`` set."""
        async with ctx.uow() as uow:
            contact = await handlers.get_contact(uow, principal.company_id, str(contact_id))
        return ContactOut.of(contact)

    @api.patch(
        "/{contact_id}", responses=problem_responses(404, 409, 422), summary="Change a contact"
    )
    async def update_contact(
        contact_id: UUID, body: ContactPatchIn, principal: CurrentPrincipal, ctx: Context
    ) -> ContactOut:
        """409 when the new phone is another contact's (``existing_id``), or the contact is
        deleted (type ``contact-deleted``: restore it first)."""
        async with ctx.uow() as uow:
            definitions = definitions_by_key(
                await handlers.load_definitions(uow, principal.company_id)
            )
            try:
                patch = body.patch(definitions, ctx.settings.default_region)
            except ContactValidationError as error:
                raise validation_problem(error) from None
            contact = await handlers.update_contact(
                uow, principal.company_id, str(contact_id), patch, now=ctx.clock()
            )
            await uow.commit()
        return ContactOut.of(contact)

    @api.delete(
        "/{contact_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(404, 422),
        summary="Delete a contact (soft)",
    )
    async def delete_contact(contact_id: UUID, principal: CurrentPrincipal, ctx: Context) -> None:
        """The contact is kept, marked deleted, and can be restored; deleting it again is
        a no-op."""
        async with ctx.uow() as uow:
            await handlers.delete_contact(
                uow, principal.company_id, str(contact_id), now=ctx.clock()
            )
            await uow.commit()

    @api.post(
        "/{contact_id}/restore", responses=problem_responses(404, 422), summary="Restore a contact"
    )
    async def restore_contact(
        contact_id: UUID, principal: CurrentPrincipal, ctx: Context
    ) -> ContactOut:
        """Restoring a live contact is a no-op. The opt-out state is kept."""
        async with ctx.uow() as uow:
            contact = await handlers.restore_contact(
                uow, principal.company_id, str(contact_id), now=ctx.clock()
            )
            await uow.commit()
        return ContactOut.of(contact)

    @api.post(
        "/{contact_id}/opt-out", responses=problem_responses(404, 422), summary="Opt a contact out"
    )
    async def opt_out(
        contact_id: UUID,
        principal: CurrentPrincipal,
        ctx: Context,
        body: Annotated[OptOutIn | None, Body()] = None,
    ) -> ContactOut:
        """The contact stops receiving campaign messages. Opting out an opted-out contact
        keeps the first time and reason. Deleted contacts can be opted out."""
        reason = "" if body is None else body.reason
        async with ctx.uow() as uow:
            contact = await consent.opt_out_contact(
                uow, principal.company_id, str(contact_id), reason=reason, now=ctx.clock()
            )
            await uow.commit()
        return ContactOut.of(contact)

    @api.post(
        "/{contact_id}/opt-in", responses=problem_responses(404, 422), summary="Opt a contact in"
    )
    async def opt_in(contact_id: UUID, principal: CurrentPrincipal, ctx: Context) -> ContactOut:
        """The contact may receive campaign messages again; a no-op unless opted out."""
        async with ctx.uow() as uow:
            contact = await consent.opt_in_contact(
                uow, principal.company_id, str(contact_id), now=ctx.clock()
            )
            await uow.commit()
        return ContactOut.of(contact)

    @api.get(
        "/{contact_id}/lists",
        responses=problem_responses(404, 422),
        summary="Lists a contact belongs to",
    )
    async def contact_lists(
        contact_id: UUID, principal: CurrentPrincipal, ctx: Context, page: Paging
    ) -> Page[ContactListOut]:
        """In the order the contact joined them."""
        async with ctx.uow() as uow:
            result = await lists.lists_of_contact(
                uow, principal.company_id, str(contact_id), cursor=page.cursor, limit=page.limit
            )
        return Page(
            items=[ContactListOut.of(item) for item in result.items],
            next_cursor=result.next_cursor,
        )

    return api


def _rejected(index: int, error: ContactValidationError) -> BulkItemOut:
    return BulkItemOut(
        index=index,
        outcome="rejected",
        errors=[
            FieldErrorOut.model_validate(problem)
            for problem in field_errors(error, f"body.contacts.{index}")
        ],
    )
