"""Repositories: the contacts service's domain objects loaded from and stored in Postgres.

Every method takes the company it acts for and filters on it, so no caller can reach
another company's rows by id. Methods that load an object to change it take ``lock=True``
(``SELECT ... FOR UPDATE``): the caller changes the object and saves it in the same
transaction, so concurrent changes of one contact are serialized, its versions never
collide, and its events are written to the outbox in commit order.

Repositories neither commit nor stage events; the unit of work and the service layer do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from esquadrao_common.pagination import keyset_page
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contacts.adapters.orm import (
    consent_keywords,
    contact_list_members,
    contact_lists,
    contacts,
    custom_field_definitions,
)
from contacts.domain.lists import ContactList
from contacts.domain.model import Contact, CustomFieldDefinition, fold
from contacts.domain.optout import ConsentKeywords

#: The contact columns a change may touch (everything but id, company and creation time).
_MUTABLE_COLUMNS: Final = tuple(
    column.name
    for column in contacts.columns
    if column.name not in ("id", "company_id", "created_at")
)


def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _escape_like(text: str) -> str:
    """``text`` as a literal LIKE prefix (``%``, ``_`` and ``\\`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contact_values(contact: Contact) -> dict[str, Any]:
    """The row of ``contact``, search columns included."""
    return {
        "id": contact.id,
        "company_id": contact.company_id,
        "phone_e164": contact.phone_e164,
        "name": contact.name,
        "email": contact.email,
        "tags": list(contact.tags),
        "condominio": contact.condominio,
        "endereco": contact.endereco,
        "cargo": contact.cargo,
        "custom_fields": dict(contact.custom_fields),
        "opted_out": contact.opted_out,
        "opted_out_at": contact.opted_out_at,
        "opt_out_reason": contact.opt_out_reason,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        "deleted_at": contact.deleted_at,
        "version": contact.version,
        "name_key": fold(contact.name),
        "tag_keys": [fold(tag) for tag in contact.tags],
    }


def contact_of(row: Mapping[Any, Any]) -> Contact:
    """The contact a ``contacts`` row holds."""
    return Contact(
        id=str(row["id"]),
        company_id=row["company_id"],
        phone_e164=row["phone_e164"],
        name=row["name"],
        email=row["email"],
        tags=tuple(row["tags"]),
        condominio=row["condominio"],
        endereco=row["endereco"],
        cargo=row["cargo"],
        custom_fields=dict(row["custom_fields"]),
        opted_out=row["opted_out"],
        opted_out_at=row["opted_out_at"],
        opt_out_reason=row["opt_out_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        version=row["version"],
    )


def _contacts_of_items(items: Iterable[Any]) -> list[Contact]:
    """Contacts of :func:`keyset_page` items selected as ``select(contacts)``."""
    names = contacts.columns.keys()
    return [contact_of(dict(zip(names, item, strict=True))) for item in items]


@dataclass(frozen=True)
class ContactFilter:
    """Which contacts a listing shows; every criterion given must hold.

    ``name_prefix`` is compared with the folded name; ``phone_prefixes`` are E.164 prefixes
    (``+5511987``), any of which may match; ``tag`` is compared folded; ``field_values``
    are exact values of custom fields (canonical text); ``text_fields`` are first-class
    text fields (``condominio``, ``endereco``, ``cargo``) compared case-insensitively.
    ``deleted`` False shows live contacts only, True deleted ones only.
    """

    name_prefix: str | None = None
    phone_prefixes: tuple[str, ...] = ()
    tag: str | None = None
    list_id: str | None = None
    opted_out: bool | None = None
    deleted: bool = False
    field_values: Mapping[str, str] = field(default_factory=dict)
    text_fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactPage:
    items: list[Contact]
    next_cursor: str | None


class ContactRepository:
    """The ``contacts`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _one(self, statement: Select[Any], lock: bool) -> Contact | None:
        if lock:
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).mappings().first()
        return None if row is None else contact_of(row)

    async def get(self, company_id: str, contact_id: str, *, lock: bool = False) -> Contact | None:
        """The contact (deleted or not), or None when the company has none with this id."""
        if not _valid_uuid(contact_id):
            return None
        statement = select(contacts).where(
            contacts.c.company_id == company_id, contacts.c.id == contact_id
        )
        return await self._one(statement, lock)

    async def get_by_phone(
        self, company_id: str, phone_e164: str, *, lock: bool = False
    ) -> Contact | None:
        statement = select(contacts).where(
            contacts.c.company_id == company_id, contacts.c.phone_e164 == phone_e164
        )
        return await self._one(statement, lock)

    async def lock_by_phones(self, company_id: str, phones: Iterable[str]) -> dict[str, Contact]:
        """The company's contacts (deleted ones too) with these phones, locked, by phone.

        Rows are locked in phone order, so two transactions locking overlapping sets of
        phones wait for each other instead of deadlocking.
        """
        wanted = sorted(set(phones))
        if not wanted:
            return {}
        # One array parameter (= ANY), not one parameter per phone: the statement's text is
        # the same for every batch, so it is prepared once per connection.
        statement = (
            select(contacts)
            .where(
                contacts.c.company_id == company_id,
                contacts.c.phone_e164 == any_(bindparam("phones", wanted, type_=ARRAY(Text))),
            )
            .order_by(contacts.c.phone_e164)
            .with_for_update()
        )
        rows = (await self._session.execute(statement)).mappings().all()
        return {row["phone_e164"]: contact_of(row) for row in rows}

    async def insert_new(self, new: Sequence[Contact]) -> set[str]:
        """Insert contacts whose phone the company has no contact with; the ids inserted.

        A contact whose phone another transaction has meanwhile inserted is left out (``ON
        CONFLICT DO NOTHING``, after waiting for that transaction to end): the caller finds
        its id missing from the result and treats the phone as existing.
        """
        if not new:
            return set()
        ordered = sorted(new, key=lambda contact: contact.phone_e164)
        # One statement executed for many rows: SQLAlchemy compiles it once and sends the
        # rows as multi-row VALUES batches ("insertmanyvalues"), RETURNING included.
        statement = (
            insert(contacts)
            .on_conflict_do_nothing(index_elements=["company_id", "phone_e164"])
            .returning(contacts.c.id)
        )
        rows = [contact_values(contact) for contact in ordered]
        result = await self._session.execute(statement, rows)
        return {str(value) for value in result.scalars()}

    async def save(self, changed: Sequence[Contact]) -> None:
        """Write the current state of contacts loaded from this table (one statement)."""
        if not changed:
            return
        statement = (
            update(contacts)
            .where(contacts.c.id == bindparam("contact_id"))
            .values({name: bindparam(name) for name in _MUTABLE_COLUMNS})
        )
        rows = []
        for contact in changed:
            values = contact_values(contact)
            rows.append(
                {"contact_id": contact.id, **{name: values[name] for name in _MUTABLE_COLUMNS}}
            )
        await self._session.execute(statement, rows)

    async def page(
        self, company_id: str, criteria: ContactFilter, *, cursor: str | None, limit: int
    ) -> ContactPage:
        """One page of the company's contacts matching ``criteria``, oldest first."""
        statement = select(contacts).where(
            contacts.c.company_id == company_id, *self._conditions(criteria)
        )
        page = await keyset_page(
            self._session,
            statement,
            order_by=(contacts.c.created_at, contacts.c.id),
            cursor=cursor,
            limit=limit,
        )
        return ContactPage(_contacts_of_items(page.items), page.next_cursor)

    @staticmethod
    def _conditions(criteria: ContactFilter) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [
            contacts.c.deleted_at.is_not(None)
            if criteria.deleted
            else contacts.c.deleted_at.is_(None)
        ]
        if criteria.name_prefix is not None:
            pattern = _escape_like(criteria.name_prefix) + "%"
            conditions.append(contacts.c.name_key.like(pattern, escape="\\"))
        if criteria.phone_prefixes:
            conditions.append(
                or_(
                    *(
                        contacts.c.phone_e164.like(_escape_like(prefix) + "%", escape="\\")
                        for prefix in criteria.phone_prefixes
                    )
                )
            )
        if criteria.tag is not None:
            conditions.append(contacts.c.tag_keys.contains([fold(criteria.tag)]))
        if criteria.list_id is not None:
            conditions.append(
                exists().where(
                    contact_list_members.c.list_id == criteria.list_id,
                    contact_list_members.c.contact_id == contacts.c.id,
                )
                if _valid_uuid(criteria.list_id)
                else false()
            )
        if criteria.opted_out is not None:
            conditions.append(contacts.c.opted_out.is_(true() if criteria.opted_out else false()))
        if criteria.field_values:
            conditions.append(contacts.c.custom_fields.contains(dict(criteria.field_values)))
        for name, value in criteria.text_fields.items():
            conditions.append(func.lower(contacts.c[name]) == func.lower(literal(value)))
        return conditions

    async def states(self, company_id: str, contact_ids: Iterable[str]) -> dict[str, bool]:
        """Which of ``contact_ids`` the company has: id → whether the contact is deleted."""
        wanted = sorted({value for value in contact_ids if _valid_uuid(value)})
        if not wanted:
            return {}
        statement = select(contacts.c.id, contacts.c.deleted_at).where(
            contacts.c.company_id == company_id, contacts.c.id.in_(wanted)
        )
        rows = (await self._session.execute(statement)).all()
        return {str(row.id): row.deleted_at is not None for row in rows}

    async def count_with_field(self, company_id: str, key: str) -> int:
        """How many of the company's contacts (deleted ones too) hold custom field ``key``."""
        statement = select(func.count()).where(
            contacts.c.company_id == company_id, contacts.c.custom_fields.has_key(key)
        )
        return int((await self._session.execute(statement)).scalar_one())


def _list_of(row: Mapping[Any, Any]) -> ContactList:
    return ContactList(
        id=str(row["id"]),
        company_id=row["company_id"],
        name=row["name"],
        member_count=row["member_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass(frozen=True)
class ListPage:
    items: list[ContactList]
    next_cursor: str | None


@dataclass(frozen=True)
class ListCounts:
    """Live members of a list, and how many of them are opted out; deleted members."""

    members: int
    opted_out: int
    deleted: int


class ContactListRepository:
    """The ``contact_lists`` and ``contact_list_members`` tables."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, company_id: str, list_id: str, *, lock: bool = False) -> ContactList | None:
        if not _valid_uuid(list_id):
            return None
        statement = select(contact_lists).where(
            contact_lists.c.company_id == company_id, contact_lists.c.id == list_id
        )
        if lock:
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).mappings().first()
        return None if row is None else _list_of(row)

    async def get_by_name_key(self, company_id: str, name_key: str) -> ContactList | None:
        statement = select(contact_lists).where(
            contact_lists.c.company_id == company_id, contact_lists.c.name_key == name_key
        )
        row = (await self._session.execute(statement)).mappings().first()
        return None if row is None else _list_of(row)

    async def insert(self, contact_list: ContactList) -> bool:
        """Insert a new list; False when the company has a list with its name already."""
        statement = (
            insert(contact_lists)
            .values(
                id=contact_list.id,
                company_id=contact_list.company_id,
                name=contact_list.name,
                name_key=contact_list.name_key,
                member_count=contact_list.member_count,
                created_at=contact_list.created_at,
                updated_at=contact_list.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["company_id", "name_key"])
            .returning(contact_lists.c.id)
        )
        return (await self._session.execute(statement)).first() is not None

    async def save(self, contact_list: ContactList) -> None:
        """Write a loaded list's name and update time (counts change with membership)."""
        await self._session.execute(
            update(contact_lists)
            .where(contact_lists.c.id == contact_list.id)
            .values(
                name=contact_list.name,
                name_key=contact_list.name_key,
                updated_at=contact_list.updated_at,
            )
        )

    async def delete(self, contact_list: ContactList) -> None:
        """Delete the list and its memberships."""
        await self._session.execute(
            delete(contact_lists).where(contact_lists.c.id == contact_list.id)
        )

    async def page(self, company_id: str, *, cursor: str | None, limit: int) -> ListPage:
        statement = select(contact_lists).where(contact_lists.c.company_id == company_id)
        page = await keyset_page(
            self._session,
            statement,
            order_by=(contact_lists.c.created_at, contact_lists.c.id),
            cursor=cursor,
            limit=limit,
        )
        names = contact_lists.columns.keys()
        items = [_list_of(dict(zip(names, item, strict=True))) for item in page.items]
        return ListPage(items, page.next_cursor)

    async def add_members(
        self, contact_list: ContactList, contact_ids: Sequence[str], now: datetime
    ) -> list[str]:
        """Make ``contact_ids`` (the company's, checked by the caller) members; the ids that
        were not members yet, in the order given. Updates the list's ``member_count``."""
        if not contact_ids:
            return []
        statement = (
            insert(contact_list_members)
            .values(
                [
                    {
                        "list_id": contact_list.id,
                        "contact_id": contact_id,
                        "company_id": contact_list.company_id,
                        "added_at": now,
                    }
                    for contact_id in contact_ids
                ]
            )
            .on_conflict_do_nothing()
            .returning(contact_list_members.c.contact_id)
        )
        added = {str(value) for value in await self._session.scalars(statement)}
        await self._change_count(contact_list, len(added))
        return [contact_id for contact_id in contact_ids if contact_id in added]

    async def remove_members(
        self, contact_list: ContactList, contact_ids: Sequence[str]
    ) -> list[str]:
        """Remove ``contact_ids`` from the list; the ids that were members, in the order
        given. Updates the list's ``member_count``."""
        wanted = [value for value in contact_ids if _valid_uuid(value)]
        if not wanted:
            return []
        statement = (
            delete(contact_list_members)
            .where(
                contact_list_members.c.list_id == contact_list.id,
                contact_list_members.c.contact_id.in_(wanted),
            )
            .returning(contact_list_members.c.contact_id)
        )
        removed = {str(value) for value in await self._session.scalars(statement)}
        await self._change_count(contact_list, -len(removed))
        return [contact_id for contact_id in wanted if contact_id in removed]

    async def _change_count(self, contact_list: ContactList, delta: int) -> None:
        if not delta:
            return
        statement = (
            update(contact_lists)
            .where(contact_lists.c.id == contact_list.id)
            .values(member_count=contact_lists.c.member_count + delta)
            .returning(contact_lists.c.member_count)
        )
        contact_list.member_count = int((await self._session.execute(statement)).scalar_one())

    async def member_ids(self, contact_list: ContactList) -> list[str]:
        """Every member's id (deleted contacts' too), in the order they were added."""
        statement = (
            select(contact_list_members.c.contact_id)
            .where(contact_list_members.c.list_id == contact_list.id)
            .order_by(contact_list_members.c.added_at, contact_list_members.c.contact_id)
        )
        return [str(value) for value in await self._session.scalars(statement)]

    async def members_page(
        self, contact_list: ContactList, *, cursor: str | None, limit: int
    ) -> ContactPage:
        """One page of the list's live members, in the order they were added."""
        statement = (
            select(contacts)
            .join(contact_list_members, contact_list_members.c.contact_id == contacts.c.id)
            .where(
                contact_list_members.c.list_id == contact_list.id,
                contacts.c.company_id == contact_list.company_id,
                contacts.c.deleted_at.is_(None),
            )
        )
        page = await keyset_page(
            self._session,
            statement,
            order_by=(contact_list_members.c.added_at, contact_list_members.c.contact_id),
            cursor=cursor,
            limit=limit,
        )
        return ContactPage(_contacts_of_items(page.items), page.next_cursor)

    async def lists_of_contact(
        self, company_id: str, contact_id: str, *, cursor: str | None, limit: int
    ) -> ListPage:
        """One page of the lists ``contact_id`` is a member of, in the order it joined."""
        statement = (
            select(contact_lists)
            .join(contact_list_members, contact_list_members.c.list_id == contact_lists.c.id)
            .where(
                contact_lists.c.company_id == company_id,
                contact_list_members.c.contact_id == contact_id,
            )
        )
        page = await keyset_page(
            self._session,
            statement,
            order_by=(contact_list_members.c.added_at, contact_list_members.c.list_id),
            cursor=cursor,
            limit=limit,
        )
        names = contact_lists.columns.keys()
        items = [_list_of(dict(zip(names, item, strict=True))) for item in page.items]
        return ListPage(items, page.next_cursor)

    async def counts(self, contact_list: ContactList) -> ListCounts:
        statement = (
            select(
                func.count().filter(contacts.c.deleted_at.is_(None)),
                func.count().filter(
                    and_(contacts.c.deleted_at.is_(None), contacts.c.opted_out.is_(true()))
                ),
                func.count().filter(contacts.c.deleted_at.is_not(None)),
            )
            .select_from(contact_list_members)
            .join(contacts, contacts.c.id == contact_list_members.c.contact_id)
            .where(contact_list_members.c.list_id == contact_list.id)
        )
        members, opted_out, deleted = (await self._session.execute(statement)).one()
        return ListCounts(members=members, opted_out=opted_out, deleted=deleted)


def _definition_of(row: Mapping[Any, Any]) -> CustomFieldDefinition:
    return CustomFieldDefinition(
        key=row["key"], label=row["label"], type=row["type"], options=tuple(row["options"])
    )


class FieldDefinitionRepository:
    """The ``custom_field_definitions`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def all(self, company_id: str) -> list[CustomFieldDefinition]:
        """The company's definitions, by key."""
        statement = (
            select(custom_field_definitions)
            .where(custom_field_definitions.c.company_id == company_id)
            .order_by(custom_field_definitions.c.key)
        )
        rows = (await self._session.execute(statement)).mappings().all()
        return [_definition_of(row) for row in rows]

    async def get(
        self, company_id: str, key: str, *, lock: bool = False
    ) -> CustomFieldDefinition | None:
        statement = select(custom_field_definitions).where(
            custom_field_definitions.c.company_id == company_id,
            custom_field_definitions.c.key == key,
        )
        if lock:
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).mappings().first()
        return None if row is None else _definition_of(row)

    async def put(self, company_id: str, definition: CustomFieldDefinition, now: datetime) -> None:
        """Create the definition of its key, or replace its label, type and options."""
        statement = insert(custom_field_definitions).values(
            company_id=company_id,
            key=definition.key,
            label=definition.label,
            type=definition.type.value,
            options=list(definition.options),
            created_at=now,
            updated_at=now,
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["company_id", "key"],
                set_={
                    "label": statement.excluded.label,
                    "type": statement.excluded.type,
                    "options": statement.excluded.options,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )

    async def delete(self, company_id: str, key: str) -> bool:
        statement = (
            delete(custom_field_definitions)
            .where(
                custom_field_definitions.c.company_id == company_id,
                custom_field_definitions.c.key == key,
            )
            .returning(custom_field_definitions.c.key)
        )
        return (await self._session.execute(statement)).first() is not None


class ConsentKeywordRepository:
    """The ``consent_keywords`` table: companies' own keywords (others use the defaults)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, company_id: str) -> ConsentKeywords | None:
        """The company's own keywords, or None when it uses the defaults."""
        statement = select(consent_keywords).where(consent_keywords.c.company_id == company_id)
        row = (await self._session.execute(statement)).mappings().first()
        if row is None:
            return None
        return ConsentKeywords(opt_out=row["opt_out"], opt_in=row["opt_in"])

    async def put(self, company_id: str, keywords: ConsentKeywords, now: datetime) -> None:
        statement = insert(consent_keywords).values(
            company_id=company_id,
            opt_out=list(keywords.opt_out_keywords),
            opt_in=list(keywords.opt_in_keywords),
            updated_at=now,
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["company_id"],
                set_={
                    "opt_out": statement.excluded.opt_out,
                    "opt_in": statement.excluded.opt_in,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )

    async def delete(self, company_id: str) -> bool:
        statement = (
            delete(consent_keywords)
            .where(consent_keywords.c.company_id == company_id)
            .returning(consent_keywords.c.company_id)
        )
        return (await self._session.execute(statement)).first() is not None
