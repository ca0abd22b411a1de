"""The one place where the contacts service is wired: real dependencies in, program out.

``program`` is what ``python -m contacts api|worker|migrate|all`` runs. The API serves the
contacts, lists, custom fields, consent and import/export routers (plus the company's API
limits); the workers are the outbox relay (added by the platform), the ``contacts``
consumer group and the import job worker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from esquadrao_common.api_limits import api_limits_router
from esquadrao_common.service import Platform, ServiceProgram, Worker, create_api
from fastapi import FastAPI

from contacts.config import SERVICE_NAME, ContactsSettings
from contacts.entrypoints.api import consent, contacts, fields, lists
from contacts.entrypoints.api.dependencies import ApiContext, install_context
from contacts.entrypoints.api.imports import imports_router
from contacts.entrypoints.api.problems import install_contacts_problems
from contacts.entrypoints.consumers import whatsapp_consumer
from contacts.entrypoints.import_worker import import_worker
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"

DESCRIPTION = """\
Contacts of each company (E.164 phones, custom fields, tags), contact lists, opt-out
(suppression) and its inbound keywords. Every change is published on
`contacts.events.v1`. Errors are `application/problem+json`; lists page with cursors.
"""


def utc_now() -> datetime:
    """The clock of changes: timezone-aware UTC."""
    return datetime.now(UTC)


def contacts_settings(platform: Platform) -> ContactsSettings:
    settings = platform.settings
    if not isinstance(settings, ContactsSettings):
        raise TypeError(f"the contacts service needs ContactsSettings, not {type(settings)}")
    return settings


def build_api(platform: Platform) -> FastAPI:
    """The contacts REST API on ``platform``'s connections."""
    settings = contacts_settings(platform)
    app = create_api(
        platform,
        title="Esquadrão contacts",
        description=DESCRIPTION,
        routers=[
            contacts.router(),
            lists.router(),
            fields.router(),
            consent.router(),
            imports_router(),
            api_limits_router(),
        ],
    )
    install_contacts_problems(app)
    install_context(
        app,
        ApiContext(
            uow=lambda: ContactsUnitOfWork(platform.database), clock=utc_now, settings=settings
        ),
    )
    return app


def build_workers(platform: Platform) -> list[Worker]:
    """The service's own workers (the platform adds the outbox relay)."""
    settings = contacts_settings(platform)
    return [
        whatsapp_consumer(platform, settings, clock=utc_now),
        import_worker(platform, settings),
    ]


program = ServiceProgram(
    name=SERVICE_NAME,
    settings=ContactsSettings,
    build_api=build_api,
    build_workers=build_workers,
    migrations=MIGRATIONS,
)
