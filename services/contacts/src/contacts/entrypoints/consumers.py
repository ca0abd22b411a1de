"""The ``contacts`` consumer group: inbound WhatsApp messages that are consent keywords.

It reads ``whatsapp.events.v1`` through the platform's consumer runtime, which makes it
effectively once: the record's ``event_id`` is claimed in the inbox in the same transaction
as the opt-out, so a redelivered record changes nothing. Events of other types (and of
types added after this schema version, whose payload is unknown here) are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from esquadrao.whatsapp.v1.whatsapp_pb2 import WhatsappEvent
from esquadrao_common.events import decode_event
from esquadrao_common.kafka.catalog import Catalog
from esquadrao_common.kafka.consumer import ConsumerRuntime, Handler, IncomingRecord
from esquadrao_common.service import Platform

from contacts.config import ContactsSettings
from contacts.service_layer.consent import InboundConsent, apply_inbound_message
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

log = logging.getLogger(__name__)

#: The consumer group, as the topic catalog names it.
GROUP = "contacts"


def whatsapp_events_handler(
    *, clock: Callable[[], datetime], default_region: str
) -> Handler[ContactsUnitOfWork]:
    """The handler of ``whatsapp.events.v1`` records: ``MessageReceived`` goes to
    :func:`~contacts.service_layer.consent.apply_inbound_message`; anything else is
    skipped. It does not commit (the runtime does)."""

    async def handle_whatsapp_event(record: IncomingRecord, uow: ContactsUnitOfWork) -> None:
        event = decode_event(WhatsappEvent, record.value)
        if event.WhichOneof("payload") != "message_received":
            return
        outcome = await apply_inbound_message(
            uow,
            event.envelope,
            event.message_received,
            now=clock(),
            default_region=default_region,
        )
        if outcome is not InboundConsent.NOT_A_KEYWORD:
            log.info(
                "inbound keyword of event %s: %s",
                record.event_id,
                outcome.value,
                extra={"company_id": event.envelope.company_id},
            )

    return handle_whatsapp_event


def whatsapp_consumer(
    platform: Platform, settings: ContactsSettings, *, clock: Callable[[], datetime]
) -> ConsumerRuntime[ContactsUnitOfWork]:
    """The runtime of the ``contacts`` group on ``platform``'s database and producer."""
    return ConsumerRuntime(
        bootstrap=settings.kafka_bootstrap,
        group=Catalog.load().group(GROUP),
        handler=whatsapp_events_handler(clock=clock, default_region=settings.default_region),
        uow_factory=lambda: ContactsUnitOfWork(platform.database),
        publisher=platform.publisher,
        client_id=f"{settings.service_name}-{GROUP}",
    )
