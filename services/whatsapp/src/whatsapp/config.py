"""Settings of the whatsapp service, and its registration with the local stack.

The reconnection, breaker and health-check settings keep the environment names operators
already use (``WHATSAPP_RECONNECTION_BASE_DELAY=2000`` and friends, in milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from esquadrao_common.settings import ServiceSettings
from pydantic import Field, SecretStr, model_validator

SERVICE_NAME = "whatsapp"
HTTP_PORT = 8003

#: Fernet key for session credentials in development only; production refuses it.
DEV_CREDENTIALS_KEY = "ZXNxdWFkcmFvLWRldmVsb3BtZW50LWNyZWRlbnRpYWw="


class WhatsappSettings(ServiceSettings):
    """Environment of a whatsapp process (see ``ServiceSettings`` for the shared part)."""

    service_name: str = SERVICE_NAME
    http_port: int = Field(default=HTTP_PORT, ge=1, le=65535)

    #: Fernet key(s) encrypting session credentials at rest; comma-separated, newest
    #: first, so keys can be rotated (old ones still decrypt).
    whatsapp_credentials_key: SecretStr = SecretStr(DEV_CREDENTIALS_KEY)
    #: The WhatsApp simulator, for sessions of provider ``sim``.
    whatsapp_simulator_url: str = "http://127.0.0.1:8790"
    #: Graph API base for ``cloud`` sessions (the simulator's URL locally).
    whatsapp_graph_url: str = "https://graph.facebook.com"
    whatsapp_graph_version: str = "v21.0"

    whatsapp_reconnection_max_retries: int = Field(default=10, ge=1)
    whatsapp_reconnection_base_delay: int = Field(default=2_000, ge=1, description="ms")
    whatsapp_reconnection_max_delay: int = Field(default=300_000, ge=1, description="ms")
    whatsapp_circuit_breaker_threshold: int = Field(default=5, ge=1)
    whatsapp_circuit_breaker_timeout: int = Field(default=600_000, ge=1, description="ms")
    whatsapp_health_check_interval: int = Field(default=30_000, ge=100, description="ms")

    #: Ledger entries one session claims per round (the most a crash can leave unknown).
    whatsapp_send_batch: int = Field(default=32, ge=1, le=1_000)
    #: Retryable refusals of one message before it is failed.
    whatsapp_send_max_attempts: int = Field(default=8, ge=1)
    #: Queued bulk entries of the worker's sessions above which bulk partitions pause.
    whatsapp_bulk_backlog_limit: int = Field(default=20_000, ge=1)
    #: Limits for every session (``lifted`` for benchmarks); empty: the provider's own.
    whatsapp_default_profile: str = ""

    @model_validator(mode="after")
    def _real_key_in_production(self) -> WhatsappSettings:
        key = self.whatsapp_credentials_key.get_secret_value()
        if self.environment == "production" and DEV_CREDENTIALS_KEY in key.split(","):
            raise ValueError("WHATSAPP_CREDENTIALS_KEY must be set to a real key in production")
        return self

    @property
    def reconnect_base_s(self) -> float:
        return self.whatsapp_reconnection_base_delay / 1000

    @property
    def reconnect_max_s(self) -> float:
        return self.whatsapp_reconnection_max_delay / 1000

    @property
    def breaker_timeout_s(self) -> float:
        return self.whatsapp_circuit_breaker_timeout / 1000

    @property
    def health_check_interval_s(self) -> float:
        return self.whatsapp_health_check_interval / 1000


@dataclass(frozen=True)
class ServiceRegistration:
    """What the local stack needs to run this service (entry point ``esquadrao.services``)."""

    name: str
    http_port: int


SERVICE = ServiceRegistration(name=SERVICE_NAME, http_port=HTTP_PORT)
