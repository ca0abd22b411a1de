"""Handlers of consent: opt-out and opt-in by API call or by inbound WhatsApp keyword, and
the company's keywords.

Opting out suppresses campaign messages only (see :mod:`contacts.domain.optout`). It is
recorded on deleted contacts too, and a second opt-out keeps the first one's time and
reason, so every handler here is idempotent: repeating it changes nothing and emits
nothing.

An opt-out keyword from a phone the company has no contact with is still honoured: a
contact is created for that phone, already opted out (named after the WhatsApp profile
name when the provider gives one). Recording the wish on a contact means every later path
sees it: an import or API upsert of that phone merges into the suppressed contact and
never opts it back in. An opt-in keyword from an unknown phone does nothing: there is no
suppression to lift.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

from esquadrao.common.v1.envelope_pb2 import Envelope
from esquadrao.whatsapp.v1 import whatsapp_pb2 as wa

from contacts.domain import events
from contacts.domain.model import Contact, ContactDraft, ContactValidationError, clean_text
from contacts.domain.optout import ConsentIntent, ConsentKeywords, ConsentSource
from contacts.domain.phones import InvalidPhoneNumber, normalize_phone
from contacts.service_layer.contacts import new_id, stage
from contacts.service_layer.errors import NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

#: Keywords of companies that have not set their own.
DEFAULT_KEYWORDS: Final = ConsentKeywords()

#: Inbound message kinds whose text is the customer's answer: typed text, or the title of
#: a button or list reply. A media caption is not an answer to a campaign.
ANSWER_KINDS: Final = frozenset({wa.MESSAGE_KIND_TEXT, wa.MESSAGE_KIND_INTERACTIVE_REPLY})


def inbound_opt_out_reason(keyword: str) -> str:
    """The opt-out reason recorded for an inbound keyword, e.g. ``replied "SAIR" on
    WhatsApp``."""
    return f'replied "{keyword}" on WhatsApp'


async def _locked(uow: ContactsUnitOfWork, company_id: str, contact_id: str) -> Contact:
    contact = await uow.contacts.get(company_id, contact_id, lock=True)
    if contact is None:
        raise NotFoundError("contact", contact_id)
    return contact


async def opt_out_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    *,
    reason: str,
    now: datetime,
    source: ConsentSource = ConsentSource.API,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Contact:
    """Opt the contact out (``ContactOptedOut``); NotFoundError, or ContactValidationError
    when ``reason`` is too long."""
    contact = await _locked(uow, company_id, contact_id)
    await _opt_out(uow, contact, reason, now, source, correlation_id, causation_id)
    return contact


async def opt_in_contact(
    uow: ContactsUnitOfWork,
    company_id: str,
    contact_id: str,
    *,
    now: datetime,
    source: ConsentSource = ConsentSource.API,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Contact:
    """Lift the contact's opt-out (``ContactOptedIn``); NotFoundError."""
    contact = await _locked(uow, company_id, contact_id)
    await _opt_in(uow, contact, now, source, correlation_id, causation_id)
    return contact


async def _opt_out(
    uow: ContactsUnitOfWork,
    contact: Contact,
    reason: str,
    now: datetime,
    source: ConsentSource,
    correlation_id: str | None,
    causation_id: str | None,
) -> bool:
    if not contact.opt_out(now, reason):
        return False
    await uow.contacts.save([contact])
    stage(
        uow,
        events.contact_opted_out(
            contact, source, correlation_id=correlation_id, causation_id=causation_id
        ),
    )
    return True


async def _opt_in(
    uow: ContactsUnitOfWork,
    contact: Contact,
    now: datetime,
    source: ConsentSource,
    correlation_id: str | None,
    causation_id: str | None,
) -> bool:
    if not contact.opt_in(now):
        return False
    await uow.contacts.save([contact])
    stage(
        uow,
        events.contact_opted_in(
            contact, source, correlation_id=correlation_id, causation_id=causation_id
        ),
    )
    return True


async def company_keywords(
    uow: ContactsUnitOfWork, company_id: str
) -> tuple[ConsentKeywords, bool]:
    """The company's keywords, and whether they are its own (False: the defaults)."""
    own = await uow.keywords.get(company_id)
    return (DEFAULT_KEYWORDS, False) if own is None else (own, True)


async def set_keywords(
    uow: ContactsUnitOfWork, company_id: str, keywords: ConsentKeywords, *, now: datetime
) -> None:
    """Make ``keywords`` (validated by their constructor) the company's own."""
    await uow.keywords.put(company_id, keywords, now)


async def reset_keywords(uow: ContactsUnitOfWork, company_id: str) -> None:
    """Return the company to the default keywords."""
    await uow.keywords.delete(company_id)


class InboundConsent(StrEnum):
    """What an inbound message did to consent."""

    #: Not an answer kind, or its text is not one of the company's keywords.
    NOT_A_KEYWORD = "not_a_keyword"
    #: The sender's phone is not a number a contact can have.
    INVALID_PHONE = "invalid_phone"
    #: An opt-in keyword from a phone with no contact: nothing to lift.
    UNKNOWN_SENDER = "unknown_sender"
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    #: An opt-out keyword from a phone with no contact: a contact was created, opted out.
    CREATED_OPTED_OUT = "created_opted_out"
    #: A keyword asking for the state the contact is already in.
    UNCHANGED = "unchanged"


async def apply_inbound_message(
    uow: ContactsUnitOfWork,
    envelope: Envelope,
    message: wa.MessageReceived,
    *,
    now: datetime,
    default_region: str,
) -> InboundConsent:
    """Opt the sender out or in when ``message`` is one of its company's keywords.

    The company is the envelope's; the sender's phone is canonicalized first (providers
    report Brazilian mobiles without the 9th digit). Events carry source
    ``INBOUND_KEYWORD``, the inbound event's correlation id and, as causation, its event
    id. Does not commit.
    """
    if message.kind not in ANSWER_KINDS:
        return InboundConsent.NOT_A_KEYWORD
    company_id = envelope.company_id
    keywords, _own = await company_keywords(uow, company_id)
    match = keywords.match(message.text)
    if match is None:
        return InboundConsent.NOT_A_KEYWORD
    try:
        phone = normalize_phone(message.from_phone_e164, default_region)
    except InvalidPhoneNumber:
        return InboundConsent.INVALID_PHONE
    chain = {"correlation_id": envelope.correlation_id, "causation_id": envelope.event_id}
    source = ConsentSource.INBOUND_KEYWORD
    reason = inbound_opt_out_reason(match.keyword)

    contact = await uow.contacts.get_by_phone(company_id, phone, lock=True)
    if contact is None:
        if match.intent is ConsentIntent.OPT_IN:
            return InboundConsent.UNKNOWN_SENDER
        suppressed = Contact.create(
            contact_id=new_id(),
            company_id=company_id,
            draft=ContactDraft(
                phone_e164=phone,
                name=_profile_name(message.profile_name),
                opted_out=True,
                opt_out_reason=reason,
            ),
            now=now,
        )
        if suppressed.id in await uow.contacts.insert_new([suppressed]):
            stage(uow, events.contact_created(suppressed, **chain))
            return InboundConsent.CREATED_OPTED_OUT
        # Created by a concurrent transaction, which the insert waited for.
        contact = await uow.contacts.get_by_phone(company_id, phone, lock=True)
        if contact is None:
            raise RuntimeError(f"the contact with phone {phone} vanished")

    if match.intent is ConsentIntent.OPT_OUT:
        changed = await _opt_out(uow, contact, reason, now, source, **chain)
        return InboundConsent.OPTED_OUT if changed else InboundConsent.UNCHANGED
    changed = await _opt_in(uow, contact, now, source, **chain)
    return InboundConsent.OPTED_IN if changed else InboundConsent.UNCHANGED


def _profile_name(profile_name: str) -> str | None:
    """The WhatsApp profile name as a contact name, or None when blank or unusable."""
    try:
        return clean_text("name", profile_name) or None
    except ContactValidationError:
        return None
