"""Handlers of contacts: create, upsert (one or a batch), read, change, delete, restore, list.

Every handler works in the caller's :class:`ContactsUnitOfWork` and does not commit it.
Every change of a contact writes its event to the outbox (``uow.stage``) in the same
transaction, built from the state after the change, so it carries the new ``version``.

Upsert semantics (imports, the bulk endpoint, ``POST /contacts?upsert=true``): a draft
whose phone the company has no contact with creates one; otherwise the draft is merged
into that contact as :meth:`ContactDraft.merge_patch` says (given values overwrite, blank
ones are kept, tags are added, custom fields are set key by key), and a draft saying
``opted_out`` opts the contact out (it never opts one back in). A *deleted* contact with
the phone is restored first (``ContactRestored``), then merged: re-importing a person
means they are a contact again, and the restore keeps their history and their opt-out.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

import phonenumbers
from esquadrao.contacts.v1 import contacts_pb2 as pb
from sqlalchemy.exc import IntegrityError

from contacts.adapters.repositories import ContactFilter, ContactPage
from contacts.domain import events
from contacts.domain.model import (
    Contact,
    ContactDraft,
    ContactPatch,
    ContactValidationError,
    CustomFieldDefinition,
    fold,
)
from contacts.domain.optout import ConsentSource
from contacts.domain.phones import InvalidPhoneNumber, normalize_phone
from contacts.service_layer.errors import DraftRejected, DuplicatePhone, NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

#: Searches made only of these characters (and holding a digit) are phone searches.
_PHONE_SEARCH: Final = re.compile(r"\+?[\d\s().-]+")
_NON_DIGIT: Final = re.compile(r"\D")


class UpsertOutcome(StrEnum):
    """What an upsert did with one draft."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class UpsertResult:
    """The contact a draft created or matched, and what became of it."""

    contact_id: str
    outcome: UpsertOutcome


def new_id() -> str:
    return str(uuid.uuid4())


def stage(uow: ContactsUnitOfWork, event: pb.ContactEvent) -> None:
    """Write ``event`` to the outbox when ``uow`` commits, keyed as its contract says."""
    uow.stage(events.TOPIC, events.event_key(event), event)


async def load_definitions(uow: ContactsUnitOfWork, company_id: str) -> list[CustomFieldDefinition]:
    """The company's custom field definitions, by key (what drafts and patches need)."""
    return await uow.fields.all(company_id)


async def get_contact(uow: ContactsUnitOfWork, company_id: str, contact_id: str) -> Contact:
    """The contact, deleted or not; NotFoundError when the company has none with this id."""
    contact = await uow.contacts.get(company_id, contact_id)
    if contact is None:
        raise NotFoundError("contact", contact_id)
    return contact


async def _locked(uow: ContactsUnitOfWork, company_id: str, contact_id: str) -> Contact:
    contact = await uow.contacts.get(company_id, contact_id, lock=True)
    if contact is None:
        raise NotFoundError("contact", contact_id)
    return contact


async def create_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    draft: ContactDraft,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> Contact:
    """Create a contact; DuplicatePhone (with the existing contact's id) when the company
    has a contact with this phone, deleted ones included."""
    contact = Contact.create(contact_id=new_id(), company_id=company_id, draft=draft, now=now)
    if contact.id not in await uow.contacts.insert_new([contact]):
        # The insert waited for the contact it conflicts with to commit: it is visible now.
        existing = await uow.contacts.get_by_phone(company_id, draft.phone_e164)
        if existing is None:
            raise RuntimeError(f"the contact with phone {draft.phone_e164} vanished")
        raise DuplicatePhone(draft.phone_e164, existing.id, existing_deleted=existing.is_deleted)
    stage(uow, events.contact_created(contact, correlation_id=correlation_id))
    return contact


class _Batch:
    """The work of one upsert call: contacts by phone, those to save, events in order."""

    def __init__(self, now: datetime, source: ConsentSource, correlation_id: str | None) -> None:
        self.now = now
        self.source = source
        self.correlation_id = correlation_id
        self.by_phone: dict[str, Contact] = {}
        self.dirty: dict[str, Contact] = {}
        self.events: list[pb.ContactEvent] = []

    def merge(self, index: int, draft: ContactDraft, contact: Contact) -> UpsertOutcome:
        """Apply ``draft`` to the existing ``contact`` (restoring it if deleted)."""
        try:
            patch = draft.merge_patch(contact)
        except ContactValidationError as error:
            raise DraftRejected(index, error) from error
        changed = False
        if contact.restore(self.now):
            self.events.append(events.contact_restored(contact, correlation_id=self.correlation_id))
            changed = True
        changed_fields = contact.apply_patch(patch, self.now)
        if changed_fields:
            self.events.append(
                events.contact_updated(contact, changed_fields, correlation_id=self.correlation_id)
            )
            changed = True
        if draft.opted_out and contact.opt_out(self.now, draft.opt_out_reason):
            self.events.append(
                events.contact_opted_out(contact, self.source, correlation_id=self.correlation_id)
            )
            changed = True
        if not changed:
            return UpsertOutcome.UNCHANGED
        self.dirty[contact.id] = contact
        return UpsertOutcome.UPDATED


async def _upsert(
    uow: ContactsUnitOfWork,
    company_id: str,
    drafts: Sequence[ContactDraft],
    *,
    now: datetime,
    source: ConsentSource,
    correlation_id: str | None,
) -> list[tuple[Contact, UpsertOutcome]]:
    batch = _Batch(now, source, correlation_id)
    results: list[tuple[Contact, UpsertOutcome]] = []
    async with uow.savepoint():
        batch.by_phone = await uow.contacts.lock_by_phones(
            company_id, (draft.phone_e164 for draft in drafts)
        )
        # The first draft of each unknown phone creates its contact; a phone another
        # transaction inserted meanwhile is locked and merged like any existing one.
        firsts: dict[str, Contact] = {}
        for draft in drafts:
            if draft.phone_e164 not in batch.by_phone and draft.phone_e164 not in firsts:
                firsts[draft.phone_e164] = Contact.create(
                    contact_id=new_id(), company_id=company_id, draft=draft, now=now
                )
        inserted = await uow.contacts.insert_new(list(firsts.values()))
        raced = {phone for phone, contact in firsts.items() if contact.id not in inserted}
        batch.by_phone.update(await uow.contacts.lock_by_phones(company_id, raced))
        fresh = {phone: firsts[phone] for phone in firsts if phone not in raced}
        batch.by_phone.update(fresh)

        for index, draft in enumerate(drafts):
            phone = draft.phone_e164
            created = fresh.pop(phone, None)
            if created is not None:
                batch.events.append(events.contact_created(created, correlation_id=correlation_id))
                results.append((created, UpsertOutcome.CREATED))
                continue
            contact = batch.by_phone[phone]
            results.append((contact, batch.merge(index, draft, contact)))
        await uow.contacts.save(list(batch.dirty.values()))
    for event in batch.events:
        stage(uow, event)
    return results


async def upsert_drafts(
    uow: ContactsUnitOfWork,
    company_id: str,
    drafts: Sequence[ContactDraft],
    *,
    now: datetime,
    source: ConsentSource = ConsentSource.API,
    correlation_id: str | None = None,
) -> list[UpsertResult]:
    """Create or merge each draft (see the module's upsert semantics); one result per draft,
    in order.

    Made for batches of hundreds: one locking SELECT of the drafts' phones, one multi-row
    INSERT of the new contacts (``ON CONFLICT DO NOTHING``: a phone inserted by a
    concurrent transaction is locked and merged instead), one UPDATE statement for the
    changed ones. Several drafts with one phone apply in order to the same contact (the
    first may create it, the next ones merge into it).

    All or nothing: when draft number ``i`` cannot apply (its tags added to the contact's
    would be too many), :class:`DraftRejected` (``index == i``) is raised and nothing of
    the batch is written or staged, so the caller may drop that draft and call again in
    the same unit of work. Events (``ContactCreated``, ``ContactRestored``,
    ``ContactUpdated``, ``ContactOptedOut`` with ``source``) are staged in draft order with
    ``correlation_id``. The caller commits.
    """
    results = await _upsert(
        uow, company_id, drafts, now=now, source=source, correlation_id=correlation_id
    )
    return [UpsertResult(contact.id, outcome) for contact, outcome in results]


async def upsert_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    draft: ContactDraft,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> tuple[Contact, UpsertOutcome]:
    """Create or merge one draft; the contact's state afterwards and what happened.

    DraftRejected (index 0) as :func:`upsert_drafts`.
    """
    ((contact, outcome),) = await _upsert(
        uow,
        company_id,
        [draft],
        now=now,
        source=ConsentSource.API,
        correlation_id=correlation_id,
    )
    return contact, outcome


async def update_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    patch: ContactPatch,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> Contact:
    """Apply a partial change; ``ContactUpdated`` when something changed.

    NotFoundError, ContactIsDeleted (restore first), or DuplicatePhone when the new phone
    is another contact's.
    """
    contact = await _locked(uow, company_id, contact_id)
    if patch.phone_e164 is not None and patch.phone_e164 != contact.phone_e164:
        other = await uow.contacts.get_by_phone(company_id, patch.phone_e164)
        if other is not None:
            raise DuplicatePhone(patch.phone_e164, other.id, existing_deleted=other.is_deleted)
    changed_fields = contact.apply_patch(patch, now)
    if not changed_fields:
        return contact
    try:
        async with uow.savepoint():
            await uow.contacts.save([contact])
    except IntegrityError:
        # Another transaction gave the phone to a contact since the check above.
        other = await uow.contacts.get_by_phone(company_id, contact.phone_e164)
        if other is None:
            raise
        raise DuplicatePhone(
            contact.phone_e164, other.id, existing_deleted=other.is_deleted
        ) from None
    stage(uow, events.contact_updated(contact, changed_fields, correlation_id=correlation_id))
    return contact


async def delete_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> Contact:
    """Soft-delete the contact (``ContactDeleted``); deleting a deleted one changes nothing."""
    contact = await _locked(uow, company_id, contact_id)
    if contact.delete(now):
        await uow.contacts.save([contact])
        stage(uow, events.contact_deleted(contact, correlation_id=correlation_id))
    return contact


async def restore_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> Contact:
    """Undo a delete (``ContactRestored``); restoring a live contact changes nothing."""
    contact = await _locked(uow, company_id, contact_id)
    if contact.restore(now):
        await uow.contacts.save([contact])
        stage(uow, events.contact_restored(contact, correlation_id=correlation_id))
    return contact


@dataclass(frozen=True)
class ContactSearch:
    """What a search text matches: a folded name prefix, or phone prefixes."""

    name_prefix: str | None = None
    phone_prefixes: tuple[str, ...] = ()


def contact_search(text: str, default_region: str) -> ContactSearch:
    """How a search box's text is matched.

    Text made of digits and phone punctuation (``+``, spaces, ``()``, ``-``, ``.``) is a
    phone prefix: with a ``+`` it is an international prefix (``+55 11 98`` matches
    ``+551198...``); without, it matches numbers starting with those digits after the
    ``+`` (``5511987``) or after the default region's country code (``11 987``, a leading
    trunk ``0`` dropped). A complete number also matches its canonical form, so a legacy
    8-digit mobile finds the contact stored with the 9th digit. Any other text is a prefix
    of the name, case and accents ignored (``joao`` finds ``João Silva``).
    """
    stripped = text.strip()
    if not (_PHONE_SEARCH.fullmatch(stripped) and any(char.isdigit() for char in stripped)):
        return ContactSearch(name_prefix=fold(stripped))
    digits = _NON_DIGIT.sub("", stripped)
    prefixes = [f"+{digits}"]
    if not stripped.startswith("+"):
        country_code = phonenumbers.country_code_for_region(default_region)
        prefixes.append(f"+{country_code}{digits.lstrip('0')}")
    with contextlib.suppress(InvalidPhoneNumber):
        prefixes.append(normalize_phone(stripped, default_region))
    return ContactSearch(phone_prefixes=tuple(dict.fromkeys(prefixes)))


async def list_contacts(
    uow: ContactsUnitOfWork,
    company_id: str,
    criteria: ContactFilter,
    *,
    cursor: str | None,
    limit: int,
) -> ContactPage:
    """One page of the company's contacts matching ``criteria``, oldest first."""
    return await uow.contacts.page(company_id, criteria, cursor=cursor, limit=limit)
