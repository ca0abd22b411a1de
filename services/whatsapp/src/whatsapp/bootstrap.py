"""The one place where the whatsapp service is wired: real dependencies in, program out.

``program`` is what ``python -m whatsapp api|worker|migrate|all`` runs. The API serves
sessions, messages and the Cloud API webhooks (plus the company's API limits); the
workers are the outbox relay (added by the platform) and the service's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from esquadrao_common.api_limits import api_limits_router
from esquadrao_common.service import Platform, ServiceProgram, Worker, create_api
from fastapi import FastAPI

from whatsapp.adapters.credentials import CredentialCipher
from whatsapp.config import SERVICE_NAME, WhatsappSettings
from whatsapp.entrypoints.api import messages, sessions, webhooks
from whatsapp.entrypoints.api.dependencies import ApiContext, install_context
from whatsapp.entrypoints.api.problems import install_whatsapp_problems
from whatsapp.entrypoints.worker import send_worker
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"

DESCRIPTION = """\
A company's WhatsApp numbers (sessions: Cloud API or simulator), their operation and
health, and the messages sent through them. Sends are queued as commands and taken into a
ledger keyed by message id, so a message is never sent twice; follow them here or on
`whatsapp.events.v1`. Errors are `application/problem+json`; lists page with cursors.
"""


def utc_now() -> datetime:
    """The clock of changes: timezone-aware UTC."""
    return datetime.now(UTC)


def whatsapp_settings(platform: Platform) -> WhatsappSettings:
    settings = platform.settings
    if not isinstance(settings, WhatsappSettings):
        raise TypeError(f"the whatsapp service needs WhatsappSettings, not {type(settings)}")
    return settings


def build_api(platform: Platform) -> FastAPI:
    """The whatsapp REST API on ``platform``'s connections.

    The credentials cipher is built here, so a malformed ``WHATSAPP_CREDENTIALS_KEY``
    stops the process at start rather than failing requests.
    """
    settings = whatsapp_settings(platform)
    app = create_api(
        platform,
        title="Esquadrão whatsapp",
        description=DESCRIPTION,
        routers=[
            sessions.router(),
            messages.router(),
            webhooks.router(),
            api_limits_router(prefix="/v1/admin/api-limits"),
        ],
    )
    install_whatsapp_problems(app)
    install_context(
        app,
        ApiContext(
            uow=lambda: WhatsappUnitOfWork(platform.database),
            clock=utc_now,
            settings=settings,
            cipher=CredentialCipher.from_settings(settings),
        ),
    )
    return app


def build_workers(platform: Platform) -> list[Worker]:
    """The service's own workers (the platform adds the outbox relay): the send worker,
    which drives the sessions of the command partitions it owns."""
    return [send_worker(platform, whatsapp_settings(platform), clock=utc_now)]


program = ServiceProgram(
    name=SERVICE_NAME,
    settings=WhatsappSettings,
    build_api=build_api,
    build_workers=build_workers,
    migrations=MIGRATIONS,
)
