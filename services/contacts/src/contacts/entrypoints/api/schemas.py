"""Request and response bodies of the contacts API.

Request models check only the JSON shape; values are validated and normalized by the
domain (``ContactDraft.build``, ``ContactPatch.build``, ``CustomFieldDefinition``), whose
issues come back as a 422 naming each field (``body.phone``, ``body.custom_fields.bloco``).
Unknown members are refused, so a misspelt field is an error rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contacts.adapters.repositories import ListCounts
from contacts.domain.lists import MAX_MEMBERSHIP_BATCH, ContactList
from contacts.domain.model import (
    Contact,
    ContactDraft,
    ContactPatch,
    CustomFieldDefinition,
    FieldType,
    RawValue,
)
from contacts.service_layer.contacts import UpsertOutcome

#: A custom field value as JSON gives it; ``null`` (in a change) removes the value.
CustomValue: TypeAlias = str | bool | int | float | None

#: Most contacts one bulk upsert request carries.
MAX_BULK_CONTACTS = 500


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactIn(_Input):
    """A contact to create (or, with ``upsert``, to create or merge into the one with its
    phone)."""

    phone: str = Field(
        description="Any usual spelling; stored in E.164 (numbers without a country code "
        "are read in the service's default region, BR).",
        examples=["(11) 98765-4321", "+55 11 8765-4321"],
    )
    name: str | None = None
    email: str | None = None
    tags: list[str] | None = None
    condominio: str | None = None
    endereco: str | None = None
    cargo: str | None = None
    custom_fields: dict[str, CustomValue] = Field(
        default_factory=dict, description="Values of the company's custom fields, by key."
    )
    opted_out: bool = Field(
        default=False,
        description="True opts the contact out (source api); false never opts one back in.",
    )
    opt_out_reason: str = ""

    def draft(self, definitions: Mapping[str, CustomFieldDefinition], region: str) -> ContactDraft:
        """The validated draft; ContactValidationError listing every invalid field."""
        return ContactDraft.build(
            definitions=definitions,
            phone=self.phone,
            name=self.name,
            email=self.email,
            tags=self.tags,
            condominio=self.condominio,
            endereco=self.endereco,
            cargo=self.cargo,
            custom_fields=self.custom_fields,
            opted_out=self.opted_out,
            opt_out_reason=self.opt_out_reason,
            default_region=region,
        )


class ContactPatchIn(_Input):
    """Changes to a contact: members left out stay as they are; ``null`` or ``""`` clears a
    text field, ``tags`` replaces the whole list, ``custom_fields`` changes only the keys
    it names (``null`` removes one)."""

    phone: str | None = None
    name: str | None = None
    email: str | None = None
    tags: list[str] | None = None
    condominio: str | None = None
    endereco: str | None = None
    cargo: str | None = None
    custom_fields: dict[str, CustomValue] = Field(default_factory=dict)

    def _given(self, name: str) -> RawValue:
        """A text member's value: None when left out, ``""`` when given as null."""
        value: str | None = getattr(self, name)
        if value is None and name in self.model_fields_set:
            return ""
        return value

    def patch(self, definitions: Mapping[str, CustomFieldDefinition], region: str) -> ContactPatch:
        """The validated patch; ContactValidationError listing every invalid field (a
        ``null`` phone is one: a contact keeps a phone)."""
        tags = self.tags
        if tags is None and "tags" in self.model_fields_set:
            tags = []
        return ContactPatch.build(
            definitions=definitions,
            phone=self._given("phone"),
            name=self._given("name"),
            email=self._given("email"),
            tags=tags,
            condominio=self._given("condominio"),
            endereco=self._given("endereco"),
            cargo=self._given("cargo"),
            custom_fields=self.custom_fields,
            default_region=region,
        )


class ContactOut(BaseModel):
    """A contact's full state, as its events carry it."""

    id: str
    phone_e164: str
    name: str
    email: str
    tags: list[str]
    condominio: str
    endereco: str
    cargo: str
    custom_fields: dict[str, str]
    opted_out: bool
    opted_out_at: datetime | None
    opt_out_reason: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = Field(description="Set while the contact is deleted.")
    version: int = Field(description="Starts at 1 and grows by one with every change.")

    @classmethod
    def of(cls, contact: Contact) -> ContactOut:
        return cls(
            id=contact.id,
            phone_e164=contact.phone_e164,
            name=contact.name,
            email=contact.email,
            tags=list(contact.tags),
            condominio=contact.condominio,
            endereco=contact.endereco,
            cargo=contact.cargo,
            custom_fields=dict(contact.custom_fields),
            opted_out=contact.opted_out,
            opted_out_at=contact.opted_out_at,
            opt_out_reason=contact.opt_out_reason,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
            deleted_at=contact.deleted_at,
            version=contact.version,
        )


class BulkUpsertIn(_Input):
    """Contacts to create or merge (upsert semantics, see docs/contacts.md)."""

    contacts: list[ContactIn] = Field(min_length=1, max_length=MAX_BULK_CONTACTS)


class FieldErrorOut(BaseModel):
    field: str
    message: str
    type: str


class BulkItemOut(BaseModel):
    """What became of ``contacts[index]``: its contact and outcome, or why it was rejected
    (``errors`` name fields under ``body.contacts.<index>``)."""

    index: int
    outcome: UpsertOutcome | Literal["rejected"]
    id: str | None = None
    errors: list[FieldErrorOut] = Field(default_factory=list)


class BulkUpsertOut(BaseModel):
    """One item per contact of the request, in order, and the counts of each outcome."""

    items: list[BulkItemOut]
    created: int
    updated: int
    unchanged: int
    rejected: int


class OptOutIn(_Input):
    reason: str = Field(default="", description="Why, in the contact's or agent's words.")


class ContactListIn(_Input):
    name: str = Field(description="Unique in the company, case and accents ignored.")


class ContactListOut(BaseModel):
    id: str
    name: str
    member_count: int = Field(description="Members, deleted contacts included.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, contact_list: ContactList) -> ContactListOut:
        return cls(
            id=contact_list.id,
            name=contact_list.name,
            member_count=contact_list.member_count,
            created_at=contact_list.created_at,
            updated_at=contact_list.updated_at,
        )


class ListCountsOut(BaseModel):
    members: int = Field(description="Live (not deleted) members.")
    opted_out: int = Field(description="Live members who opted out.")
    deleted: int = Field(description="Members whose contact is deleted.")


class ContactListDetailOut(ContactListOut):
    counts: ListCountsOut

    @classmethod
    def detailed(cls, contact_list: ContactList, counts: ListCounts) -> ContactListDetailOut:
        return cls(
            **ContactListOut.of(contact_list).model_dump(),
            counts=ListCountsOut(
                members=counts.members, opted_out=counts.opted_out, deleted=counts.deleted
            ),
        )


class MembersIn(_Input):
    contact_ids: list[UUID] = Field(min_length=1, max_length=MAX_MEMBERSHIP_BATCH)

    def ids(self) -> list[str]:
        return [str(contact_id) for contact_id in self.contact_ids]


class MembersAddedOut(BaseModel):
    added: list[str]
    already_members: list[str]
    not_found: list[str] = Field(description="Ids the company has no contact with.")
    deleted: list[str] = Field(description="Deleted contacts, which are not added.")


class MembersRemovedOut(BaseModel):
    removed: list[str]
    not_members: list[str]
    not_found: list[str] = Field(description="Ids the company has no contact with.")


class FieldDefinitionIn(_Input):
    label: str
    type: FieldType
    options: list[str] = Field(default_factory=list, description="Choice fields only.")


class FieldDefinitionOut(BaseModel):
    key: str
    label: str
    type: FieldType
    options: list[str]

    @classmethod
    def of(cls, definition: CustomFieldDefinition) -> FieldDefinitionOut:
        return cls(
            key=definition.key,
            label=definition.label,
            type=definition.type,
            options=list(definition.options),
        )


class ConsentKeywordsIn(_Input):
    opt_out_keywords: list[str] = Field(
        description="Messages that opt the sender out; empty turns keyword opt-out off."
    )
    opt_in_keywords: list[str] = Field(
        description="Messages that opt the sender back in; empty turns keyword opt-in off."
    )


class ConsentKeywordsOut(BaseModel):
    opt_out_keywords: list[str]
    opt_in_keywords: list[str]
    source: Literal["default", "company"] = Field(
        description="Whether these are the defaults or the company's own."
    )
