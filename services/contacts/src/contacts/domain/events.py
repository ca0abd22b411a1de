"""Contacts events: the ``ContactEvent`` records of ``contacts.events.v1``, built from state.

Each builder returns a complete wrapper (envelope and payload) ready to be written to the
outbox in the same transaction as the change it reports, together with its key
(:func:`event_key`). Builders take the entity *after* the change, so the event carries the
new ``version`` that read models compare, and they refuse a contact whose state does not
show the change (a ``ContactDeleted`` for a live contact, say): an event must never claim
what the state does not hold.

``occurred_at`` is the time of the change as the entity recorded it (``created_at``,
``updated_at``, ``deleted_at``, ``opted_out_at``), so replays and retries build identical
events apart from their ``event_id``. ``correlation_id`` and ``causation_id`` continue a
causal chain (an import job, the inbound message behind an opt-out) as
:func:`esquadrao_common.events.new_envelope` describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from esquadrao.contacts.v1 import contacts_pb2 as pb
from esquadrao_common.events import event_type_of, new_envelope, payload_name
from google.protobuf.timestamp_pb2 import Timestamp

from contacts.domain.model import Contact
from contacts.domain.optout import ConsentSource

#: The producer name in the envelope of every contacts event.
PRODUCER: Final = "contacts"
#: The topic all contacts events are published on.
TOPIC: Final = "contacts.events.v1"

_CONSENT_SOURCES: Final = {
    ConsentSource.API: pb.CONSENT_SOURCE_API,
    ConsentSource.INBOUND_KEYWORD: pb.CONSENT_SOURCE_INBOUND_KEYWORD,
    ConsentSource.IMPORT: pb.CONSENT_SOURCE_IMPORT,
}


def _timestamp(moment: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def contact_to_proto(contact: Contact) -> pb.Contact:
    """The event form of a contact's full state.

    Optional timestamps (``opted_out_at``, ``deleted_at``) are left unset when None; tags
    keep their order; custom fields are the canonical text values.
    """
    message = pb.Contact(
        id=contact.id,
        company_id=contact.company_id,
        phone_e164=contact.phone_e164,
        name=contact.name,
        email=contact.email,
        tags=contact.tags,
        condominio=contact.condominio,
        endereco=contact.endereco,
        cargo=contact.cargo,
        custom_fields=dict(contact.custom_fields),
        opted_out=contact.opted_out,
        opt_out_reason=contact.opt_out_reason,
        created_at=_timestamp(contact.created_at),
        updated_at=_timestamp(contact.updated_at),
        version=contact.version,
    )
    if contact.opted_out_at is not None:
        message.opted_out_at.CopyFrom(_timestamp(contact.opted_out_at))
    if contact.deleted_at is not None:
        message.deleted_at.CopyFrom(_timestamp(contact.deleted_at))
    return message


def _sealed(
    event: pb.ContactEvent,
    company_id: str,
    occurred_at: datetime,
    correlation_id: str | None,
    causation_id: str | None,
) -> pb.ContactEvent:
    """``event`` with its envelope, whose ``event_type`` names the payload it carries."""
    event.envelope.CopyFrom(
        new_envelope(
            event_type_of(event),
            company_id,
            PRODUCER,
            correlation_id=correlation_id,
            causation_id=causation_id,
            occurred_at=occurred_at,
        )
    )
    return event


def contact_created(
    contact: Contact, *, correlation_id: str | None = None, causation_id: str | None = None
) -> pb.ContactEvent:
    """``ContactCreated`` carrying the new contact; occurred at ``created_at``."""
    event = pb.ContactEvent(contact_created=pb.ContactCreated(contact=contact_to_proto(contact)))
    return _sealed(event, contact.company_id, contact.created_at, correlation_id, causation_id)


def contact_updated(
    contact: Contact,
    changed_fields: Sequence[str],
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> pb.ContactEvent:
    """``ContactUpdated`` carrying the state after a patch and the fields it changed.

    ``changed_fields`` is what :meth:`Contact.apply_patch` returned; an empty one is a
    ValueError, since a change that changed nothing must not be published.
    """
    if not changed_fields:
        raise ValueError("a ContactUpdated needs the changed fields: nothing changed")
    event = pb.ContactEvent(
        contact_updated=pb.ContactUpdated(
            contact=contact_to_proto(contact), changed_fields=changed_fields
        )
    )
    return _sealed(event, contact.company_id, contact.updated_at, correlation_id, causation_id)


def contact_deleted(
    contact: Contact, *, correlation_id: str | None = None, causation_id: str | None = None
) -> pb.ContactEvent:
    """``ContactDeleted`` of a deleted contact; ValueError if the contact is not deleted."""
    if contact.deleted_at is None:
        raise ValueError(f"contact {contact.id} is not deleted")
    event = pb.ContactEvent(
        contact_deleted=pb.ContactDeleted(
            contact_id=contact.id,
            deleted_at=_timestamp(contact.deleted_at),
            version=contact.version,
        )
    )
    return _sealed(event, contact.company_id, contact.deleted_at, correlation_id, causation_id)


def contact_restored(
    contact: Contact, *, correlation_id: str | None = None, causation_id: str | None = None
) -> pb.ContactEvent:
    """``ContactRestored`` carrying the restored state; ValueError if still deleted."""
    if contact.is_deleted:
        raise ValueError(f"contact {contact.id} is still deleted")
    event = pb.ContactEvent(contact_restored=pb.ContactRestored(contact=contact_to_proto(contact)))
    return _sealed(event, contact.company_id, contact.updated_at, correlation_id, causation_id)


def contact_opted_out(
    contact: Contact,
    source: ConsentSource,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> pb.ContactEvent:
    """``ContactOptedOut`` with the phone to suppress; ValueError if not opted out."""
    if not contact.opted_out or contact.opted_out_at is None:
        raise ValueError(f"contact {contact.id} is not opted out")
    event = pb.ContactEvent(
        contact_opted_out=pb.ContactOptedOut(
            contact_id=contact.id,
            phone_e164=contact.phone_e164,
            reason=contact.opt_out_reason,
            source=_CONSENT_SOURCES[source],
            opted_out_at=_timestamp(contact.opted_out_at),
            version=contact.version,
        )
    )
    return _sealed(event, contact.company_id, contact.opted_out_at, correlation_id, causation_id)


def contact_opted_in(
    contact: Contact,
    source: ConsentSource,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> pb.ContactEvent:
    """``ContactOptedIn``, opted in at ``updated_at`` (the time :meth:`Contact.opt_in`
    recorded); ValueError if the contact is opted out."""
    if contact.opted_out:
        raise ValueError(f"contact {contact.id} is opted out")
    event = pb.ContactEvent(
        contact_opted_in=pb.ContactOptedIn(
            contact_id=contact.id,
            phone_e164=contact.phone_e164,
            source=_CONSENT_SOURCES[source],
            opted_in_at=_timestamp(contact.updated_at),
            version=contact.version,
        )
    )
    return _sealed(event, contact.company_id, contact.updated_at, correlation_id, causation_id)


def contact_list_membership_changed(
    *,
    company_id: str,
    list_id: str,
    added_contact_ids: Iterable[str] = (),
    removed_contact_ids: Iterable[str] = (),
    occurred_at: datetime,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> pb.ContactEvent:
    """``ContactListMembershipChanged`` of one list (keyed by list id).

    ValueError when nothing was added or removed, or one id is both added and removed.
    """
    added, removed = list(added_contact_ids), list(removed_contact_ids)
    if not added and not removed:
        raise ValueError("a membership change adds or removes at least one contact")
    both = set(added) & set(removed)
    if both:
        raise ValueError(f"contacts both added and removed: {sorted(both)}")
    event = pb.ContactEvent(
        contact_list_membership_changed=pb.ContactListMembershipChanged(
            list_id=list_id, added_contact_ids=added, removed_contact_ids=removed
        )
    )
    return _sealed(event, company_id, occurred_at, correlation_id, causation_id)


def contact_import_completed(
    *,
    company_id: str,
    job_id: str,
    processed: int,
    created: int,
    updated: int,
    skipped: int,
    errors: int,
    occurred_at: datetime,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> pb.ContactEvent:
    """``ContactImportCompleted`` with the job's counts (keyed by job id).

    Every row read is exactly one of created, updated, skipped or rejected, so the counts
    must add up to ``processed``; ValueError otherwise, or on a negative count.
    """
    counts = {"created": created, "updated": updated, "skipped": skipped, "errors": errors}
    negative = [name for name, count in counts.items() if count < 0]
    if negative or processed < 0:
        raise ValueError(f"import counts cannot be negative: {negative or ['processed']}")
    if sum(counts.values()) != processed:
        raise ValueError(
            f"created + updated + skipped + errors = {sum(counts.values())}, "
            f"but {processed} rows were processed"
        )
    event = pb.ContactEvent(
        contact_import_completed=pb.ContactImportCompleted(
            job_id=job_id, processed=processed, **counts
        )
    )
    return _sealed(event, company_id, occurred_at, correlation_id, causation_id)


def event_key(event: pb.ContactEvent) -> str:
    """The record key of a contacts event: the id whose order matters.

    The contact id for events about one contact, the list id for membership changes, the
    job id for a completed import (as each message's comment in the contract states).
    """
    name = payload_name(event)
    payload = getattr(event, name)
    if name == "contact_list_membership_changed":
        return str(payload.list_id)
    if name == "contact_import_completed":
        return str(payload.job_id)
    if name in ("contact_created", "contact_updated", "contact_restored"):
        return str(payload.contact.id)
    return str(payload.contact_id)
