"""Handlers of contact lists and their members.

Membership changes lock the list's row, so concurrent changes of one list are serialized:
``member_count`` stays exact and the list's ``ContactListMembershipChanged`` events (keyed
by list id) are written in commit order. Each event names at most
:data:`~contacts.domain.lists.MAX_MEMBERSHIP_BATCH` contacts; a larger change (deleting a
big list) is reported in several events.

Only live contacts can be added; ids the company has no contact with (another company's
included) are reported as not found, deleted contacts as deleted, and neither is added.
Removing works for any member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from contacts.adapters.repositories import ContactPage, ListCounts, ListPage
from contacts.domain import events
from contacts.domain.lists import MAX_MEMBERSHIP_BATCH, ContactList, list_name_key
from contacts.service_layer.contacts import new_id, stage
from contacts.service_layer.errors import DuplicateListName, NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork


async def _get(
    uow: ContactsUnitOfWork, company_id: str, list_id: str, *, lock: bool = False
) -> ContactList:
    contact_list = await uow.lists.get(company_id, list_id, lock=lock)
    if contact_list is None:
        raise NotFoundError("contact list", list_id)
    return contact_list


async def _duplicate_of(uow: ContactsUnitOfWork, company_id: str, name: str) -> DuplicateListName:
    existing = await uow.lists.get_by_name_key(company_id, list_name_key(name))
    if existing is None:
        raise RuntimeError(f"the contact list named {name!r} vanished")
    return DuplicateListName(name, existing.id)


async def create_list(
    uow: ContactsUnitOfWork, company_id: str, name: str, *, now: datetime
) -> ContactList:
    """A new empty list named ``name`` (cleaned by
    :func:`~contacts.domain.lists.clean_list_name`); DuplicateListName when the company
    has a list of that name."""
    contact_list = ContactList.create(list_id=new_id(), company_id=company_id, name=name, now=now)
    if not await uow.lists.insert(contact_list):
        raise await _duplicate_of(uow, company_id, name)
    return contact_list


async def get_list(
    uow: ContactsUnitOfWork, company_id: str, list_id: str
) -> tuple[ContactList, ListCounts]:
    """The list and its member counts; NotFoundError."""
    contact_list = await _get(uow, company_id, list_id)
    return contact_list, await uow.lists.counts(contact_list)


async def rename_list(
    uow: ContactsUnitOfWork, company_id: str, list_id: str, name: str, *, now: datetime
) -> ContactList:
    """Rename the list; NotFoundError, or DuplicateListName when another list has the name."""
    contact_list = await _get(uow, company_id, list_id, lock=True)
    other = await uow.lists.get_by_name_key(company_id, list_name_key(name))
    if other is not None and other.id != contact_list.id:
        raise DuplicateListName(name, other.id)
    if contact_list.rename(name, now):
        await uow.lists.save(contact_list)
    return contact_list


async def delete_list(
    uow: ContactsUnitOfWork,
    company_id: str,
    list_id: str,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> None:
    """Delete the list; its members are reported removed. NotFoundError."""
    contact_list = await _get(uow, company_id, list_id, lock=True)
    removed = await uow.lists.member_ids(contact_list)
    await uow.lists.delete(contact_list)
    _stage_membership(uow, contact_list, [], removed, now, correlation_id)


async def list_lists(
    uow: ContactsUnitOfWork, company_id: str, *, cursor: str | None, limit: int
) -> ListPage:
    """One page of the company's lists, oldest first."""
    return await uow.lists.page(company_id, cursor=cursor, limit=limit)


@dataclass(frozen=True)
class MembershipChange:
    """The outcome of adding or removing members: ``changed`` were added (or removed),
    ``unchanged`` already were (or were not) members; ``not_found`` are ids the company has
    no contact with; ``deleted`` are deleted contacts, which cannot be added."""

    changed: list[str]
    unchanged: list[str]
    not_found: list[str]
    deleted: list[str]


async def add_members(
    uow: ContactsUnitOfWork,
    company_id: str,
    list_id: str,
    contact_ids: Sequence[str],
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> MembershipChange:
    """Add the company's live contacts among ``contact_ids`` to the list."""
    contact_list = await _get(uow, company_id, list_id, lock=True)
    wanted = list(dict.fromkeys(contact_ids))
    states = await uow.contacts.states(company_id, wanted)
    live = [contact_id for contact_id in wanted if states.get(contact_id) is False]
    added = await uow.lists.add_members(contact_list, live, now)
    _stage_membership(uow, contact_list, added, [], now, correlation_id)
    added_set = set(added)
    return MembershipChange(
        changed=added,
        unchanged=[contact_id for contact_id in live if contact_id not in added_set],
        not_found=[contact_id for contact_id in wanted if contact_id not in states],
        deleted=[contact_id for contact_id in wanted if states.get(contact_id) is True],
    )


async def remove_members(
    uow: ContactsUnitOfWork,
    company_id: str,
    list_id: str,
    contact_ids: Sequence[str],
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> MembershipChange:
    """Remove ``contact_ids`` from the list (deleted contacts too)."""
    contact_list = await _get(uow, company_id, list_id, lock=True)
    wanted = list(dict.fromkeys(contact_ids))
    states = await uow.contacts.states(company_id, wanted)
    known = [contact_id for contact_id in wanted if contact_id in states]
    removed = await uow.lists.remove_members(contact_list, known)
    _stage_membership(uow, contact_list, [], removed, now, correlation_id)
    removed_set = set(removed)
    return MembershipChange(
        changed=removed,
        unchanged=[contact_id for contact_id in known if contact_id not in removed_set],
        not_found=[contact_id for contact_id in wanted if contact_id not in states],
        deleted=[],
    )


async def list_members(
    uow: ContactsUnitOfWork,
    company_id: str,
    list_id: str,
    *,
    cursor: str | None,
    limit: int,
) -> ContactPage:
    """One page of the list's live members, in the order they joined; NotFoundError."""
    contact_list = await _get(uow, company_id, list_id)
    return await uow.lists.members_page(contact_list, cursor=cursor, limit=limit)


async def lists_of_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    *,
    cursor: str | None,
    limit: int,
) -> ListPage:
    """One page of the lists the contact belongs to; NotFoundError for an unknown contact."""
    if await uow.contacts.get(company_id, contact_id) is None:
        raise NotFoundError("contact", contact_id)
    return await uow.lists.lists_of_contact(company_id, contact_id, cursor=cursor, limit=limit)


def _stage_membership(
    uow: ContactsUnitOfWork,
    contact_list: ContactList,
    added: Sequence[str],
    removed: Sequence[str],
    now: datetime,
    correlation_id: str | None,
) -> None:
    """Stage the change as ``ContactListMembershipChanged`` events of at most
    ``MAX_MEMBERSHIP_BATCH`` ids each (additions first)."""
    size = MAX_MEMBERSHIP_BATCH
    batches: list[tuple[Sequence[str], Sequence[str]]]
    batches = [(added[i : i + size], ()) for i in range(0, len(added), size)]
    batches += [((), removed[i : i + size]) for i in range(0, len(removed), size)]
    for added_ids, removed_ids in batches:
        stage(
            uow,
            events.contact_list_membership_changed(
                company_id=contact_list.company_id,
                list_id=contact_list.id,
                added_contact_ids=added_ids,
                removed_contact_ids=removed_ids,
                occurred_at=now,
                correlation_id=correlation_id,
            ),
        )
