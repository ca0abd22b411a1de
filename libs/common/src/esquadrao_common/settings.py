"""Configuration every service shares, read from the environment.

Each service's ``config.py`` declares one subclass of :class:`ServiceSettings` (adding its
own fields and defaults such as ``service_name`` and ``http_port``) and builds it once at
startup. Variable names are the field names in upper case, without prefix, as the local
stack sets them (``DATABASE_URL``, ``KAFKA_BOOTSTRAP``, ``REDIS_URL``, ``HTTP_PORT``, ...);
the environment is the exception: ``ESQUADRAO_ENV``. An empty variable counts as unset.

Invalid configuration fails at startup with a message naming the variable, never at the
first request. Secrets never leave the object by accident: ``jwt_secret`` is a
:class:`~pydantic.SecretStr`, ``repr()`` and :meth:`ServiceSettings.describe` mask it and
any password in a URL, and validation errors do not echo the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from esquadrao_common.logging import LogFormat

#: The HS256 secret used in development when ``JWT_SECRET`` is not set (the same one the
#: local stack's ``esquadrao-stack token`` signs with). Refused in production.
DEV_JWT_SECRET = "dev-secret"

#: What replaces a secret or a URL's password in :meth:`ServiceSettings.describe`.
MASK = "**********"

Environment = Literal["development", "production"]
JwtAlgorithm = Literal["HS256", "RS256"]

_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def mask_url_password(url: str) -> str:
    """``url`` with the password of its user info (if any) replaced by :data:`MASK`.

    A value that cannot be parsed as a URL is masked entirely: it might hold a secret.
    """
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return MASK
    userinfo, at, hostinfo = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return url.replace(netloc, f"{user}:{MASK}@{hostinfo}", 1)


def _postgres_url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("DATABASE_URL must not be empty")
    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        raise ValueError("DATABASE_URL is not a valid database URL") from None
    if backend not in ("postgresql", "postgres"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, not a {backend!r} one")
    return value


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    return level


class ServiceSettings(BaseSettings):
    """Settings shared by every service; subclass it once per service.

    JWT contract: ``jwt_algorithm`` defaults to RS256 when ``JWT_PUBLIC_KEY`` is set and
    ``JWT_ALGORITHM`` is not, else HS256. HS256 verifies with ``jwt_secret``, which in
    development defaults to :data:`DEV_JWT_SECRET`; RS256 verifies with ``jwt_public_key``
    (PEM) and requires it. Production refuses the development secret and requires either
    a real secret (HS256) or a public key (RS256).
    """

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        hide_input_in_errors=True,
        extra="forbid",
    )

    service_name: str
    environment: Environment = Field(default="development", validation_alias="ESQUADRAO_ENV")

    http_host: str = "0.0.0.0"
    http_port: int = Field(ge=1, le=65535)

    database_url: str
    kafka_bootstrap: str
    kafka_enable_idempotence: bool = False
    redis_url: str

    log_level: str = "INFO"
    log_format: LogFormat = "json"

    otel_exporter_otlp_endpoint: str | None = None
    otel_console: bool = False

    jwt_algorithm: JwtAlgorithm = "HS256"
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None

    @field_validator("service_name")
    @classmethod
    def _service_name_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("SERVICE_NAME must not be empty")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        return _postgres_url(value)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_not_blank(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",")]
        if not all(servers):
            raise ValueError("KAFKA_BOOTSTRAP must be a comma-separated list of host:port")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("REDIS_URL must not be empty")
        scheme = value.partition("://")[0].lower()
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(f"REDIS_URL must start with one of {', '.join(_REDIS_SCHEMES)}://")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        return _log_level(value)

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _blank_endpoint_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    @field_validator("jwt_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("JWT_SECRET must not be blank")
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _public_key_is_rsa_pem(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            key = load_pem_public_key(value.encode())
        except ValueError:
            raise ValueError("JWT_PUBLIC_KEY is not a PEM-encoded public key") from None
        if not isinstance(key, RSAPublicKey):
            raise ValueError("JWT_PUBLIC_KEY must be an RSA public key (RS256)")
        return value

    @model_validator(mode="after")
    def _jwt_configuration(self) -> Self:
        if "jwt_algorithm" not in self.model_fields_set and self.jwt_public_key is not None:
            self.jwt_algorithm = "RS256"
        if self.jwt_algorithm == "RS256" and self.jwt_public_key is None:
            raise ValueError("JWT_ALGORITHM=RS256 requires JWT_PUBLIC_KEY (PEM)")
        if self.environment == "development":
            if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
                self.jwt_secret = SecretStr(DEV_JWT_SECRET)
            return self
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
            raise ValueError("JWT_SECRET must not be the development default in production")
        if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            raise ValueError(
                "production requires JWT_SECRET for HS256 (or JWT_PUBLIC_KEY with RS256)"
            )
        return self

    def describe(self) -> dict[str, Any]:
        """Every setting, safe to log: secrets and URL passwords replaced by :data:`MASK`.

        Covers the fields subclasses add: any ``SecretStr`` is masked, and so is the
        password of any string value that looks like a URL.
        """
        described: dict[str, Any] = self.model_dump(mode="json")
        for name, value in described.items():
            if isinstance(getattr(self, name), SecretStr):
                described[name] = MASK
            elif isinstance(value, str) and "://" in value:
                described[name] = mask_url_password(value)
        return described

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        return self.describe().items()


class MigrationSettings(BaseSettings):
    """What ``python -m <service> migrate`` reads: the database and logging, nothing else.

    A migration touches only the database, so a migration job (or ``make migrate``) runs
    with ``DATABASE_URL`` alone, without a broker, Redis or JWT configuration. The
    variables and their validation are those of :class:`ServiceSettings`; others are
    ignored.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, hide_input_in_errors=True)

    database_url: str
    log_level: str = "INFO"
    log_format: LogFormat = "json"

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        return _postgres_url(value)

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        return _log_level(value)
