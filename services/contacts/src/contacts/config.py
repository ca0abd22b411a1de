"""Settings of the contacts service, and its registration with the local stack."""

from __future__ import annotations

from dataclasses import dataclass

from esquadrao_common.settings import ServiceSettings
from pydantic import Field

SERVICE_NAME = "contacts"
HTTP_PORT = 8001


class ContactsSettings(ServiceSettings):
    """Environment of a contacts process (see ``ServiceSettings`` for the shared part)."""

    service_name: str = SERVICE_NAME
    http_port: int = Field(default=HTTP_PORT, ge=1, le=65535)
    #: Region assumed for phone numbers written without a country code (ISO 3166 alpha-2).
    default_region: str = Field(default="BR", min_length=2, max_length=2)
    #: Rows upserted per transaction by import jobs.
    import_batch_size: int = Field(default=500, ge=1, le=10_000)
    #: Largest accepted upload, in bytes.
    import_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)


@dataclass(frozen=True)
class ServiceRegistration:
    """What the local stack needs to run this service (entry point ``esquadrao.services``)."""

    name: str
    http_port: int


SERVICE = ServiceRegistration(name=SERVICE_NAME, http_port=HTTP_PORT)
