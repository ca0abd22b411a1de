"""ServiceSettings: read from the environment, validated at startup, secrets never shown."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from esquadrao_common.db import async_url
from esquadrao_common.settings import (
    DEV_JWT_SECRET,
    MASK,
    MigrationSettings,
    ServiceSettings,
    mask_url_password,
)
from pydantic import ValidationError

pytestmark = pytest.mark.unit

#: Every variable ServiceSettings reads: cleared before each test so that the servers the
#: test run itself is configured with (DATABASE_URL, ...) never leak into these tests.
VARIABLES = (
    "SERVICE_NAME",
    "ESQUADRAO_ENV",
    "HTTP_HOST",
    "HTTP_PORT",
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "REDIS_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_CONSOLE",
    "JWT_ALGORITHM",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
)

DB_PASSWORD = "db-pa55word"
REDIS_PASSWORD = "redis-pa55word"
PROD_SECRET = "a-long-random-production-secret"


class ContactsSettings(ServiceSettings):
    """A service's settings class, as a service's config.py declares it."""

    service_name: str = "contacts"
    http_port: int = 8001


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_public_pem() -> str:
    return public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment holding only the three server URLs every service needs."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://contacts:{DB_PASSWORD}@db:5432/contacts")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "broker-1:9092, broker-2:9092")
    monkeypatch.setenv("REDIS_URL", f"redis://:{REDIS_PASSWORD}@cache:6379/0")
    return monkeypatch


def test_reads_every_field_from_its_variable(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("SERVICE_NAME", "tickets")
    environment.setenv("HTTP_HOST", "127.0.0.1")
    environment.setenv("HTTP_PORT", "9004")
    environment.setenv("KAFKA_ENABLE_IDEMPOTENCE", "true")
    environment.setenv("LOG_LEVEL", "debug")
    environment.setenv("LOG_FORMAT", "console")
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    environment.setenv("OTEL_CONSOLE", "1")
    environment.setenv("JWT_SECRET", "s3cret")

    settings = ContactsSettings()

    assert settings.service_name == "tickets"
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 9004
    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.kafka_enable_idempotence is True
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "console"
    assert settings.otel_exporter_otlp_endpoint == "http://collector:4318"
    assert settings.otel_console is True
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "s3cret"


def test_defaults_are_those_of_development() -> None:
    settings = ContactsSettings()

    assert settings.environment == "development"
    assert settings.http_host == "0.0.0.0"
    assert settings.kafka_enable_idempotence is False
    assert (settings.log_level, settings.log_format) == ("INFO", "json")
    assert settings.otel_exporter_otlp_endpoint is None
    assert settings.otel_console is False
    assert settings.jwt_algorithm == "HS256"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert settings.jwt_public_key is None


def test_plain_postgresql_url_is_kept_and_converted_by_async_url() -> None:
    settings = ContactsSettings()

    assert settings.database_url.startswith("postgresql://")
    assert async_url(settings.database_url).startswith("postgresql+asyncpg://")


def test_an_empty_variable_counts_as_unset(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    environment.setenv("JWT_SECRET", "")

    settings = ContactsSettings()

    assert settings.otel_exporter_otlp_endpoint is None
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET


@pytest.mark.parametrize("variable", ["DATABASE_URL", "KAFKA_BOOTSTRAP", "REDIS_URL"])
def test_server_urls_are_required(environment: pytest.MonkeyPatch, variable: str) -> None:
    environment.delenv(variable)

    with pytest.raises(ValidationError) as raised:
        ContactsSettings()

    assert raised.value.errors()[0]["loc"] == (variable.lower(),)
    assert raised.value.errors()[0]["type"] == "missing"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_URL", "mysql://db/contacts", "DATABASE_URL must be a postgresql:// URL"),
        ("DATABASE_URL", "not a url", "DATABASE_URL is not a valid database URL"),
        ("DATABASE_URL", "   ", "DATABASE_URL must not be empty"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL must start with one of"),
        ("KAFKA_BOOTSTRAP", "broker-1:9092,,", "KAFKA_BOOTSTRAP must be a comma-separated"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of"),
    ],
)
def test_invalid_values_fail_with_a_message_naming_the_variable(
    environment: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    environment.setenv(variable, value)

    with pytest.raises(ValidationError, match=message):
        ContactsSettings()


def test_service_without_a_name_or_port_is_rejected() -> None:
    with pytest.raises(ValidationError) as raised:
        ServiceSettings()

    missing = {error["loc"] for error in raised.value.errors() if error["type"] == "missing"}
    assert missing == {("service_name",), ("http_port",)}


def test_the_environment_is_read_from_esquadrao_env_only(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("ENVIRONMENT", "production")
    assert ContactsSettings().environment == "development"

    environment.setenv("ESQUADRAO_ENV", "production")
    environment.setenv("JWT_SECRET", PROD_SECRET)
    assert ContactsSettings().environment == "production"


def test_production_without_any_jwt_key_is_rejected(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("ESQUADRAO_ENV", "production")

    with pytest.raises(ValidationError, match="production requires JWT_SECRET"):
        ContactsSettings()


def test_production_refuses_the_development_secret(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("ESQUADRAO_ENV", "production")
    environment.setenv("JWT_SECRET", DEV_JWT_SECRET)

    with pytest.raises(ValidationError, match="must not be the development default"):
        ContactsSettings()


def test_production_accepts_a_real_secret(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("ESQUADRAO_ENV", "production")
    environment.setenv("JWT_SECRET", PROD_SECRET)

    settings = ContactsSettings()

    assert settings.jwt_algorithm == "HS256"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == PROD_SECRET


def test_production_accepts_a_public_key_alone_and_then_verifies_rs256(
    environment: pytest.MonkeyPatch, rsa_public_pem: str
) -> None:
    environment.setenv("ESQUADRAO_ENV", "production")
    environment.setenv("JWT_PUBLIC_KEY", rsa_public_pem)

    settings = ContactsSettings()

    assert settings.jwt_algorithm == "RS256"
    assert settings.jwt_secret is None
    assert settings.jwt_public_key == rsa_public_pem.strip()


def test_production_hs256_needs_a_secret_even_with_a_public_key(
    environment: pytest.MonkeyPatch, rsa_public_pem: str
) -> None:
    environment.setenv("ESQUADRAO_ENV", "production")
    environment.setenv("JWT_ALGORITHM", "HS256")
    environment.setenv("JWT_PUBLIC_KEY", rsa_public_pem)

    with pytest.raises(ValidationError, match="production requires JWT_SECRET for HS256"):
        ContactsSettings()


def test_rs256_requires_a_public_key(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_ALGORITHM", "RS256")

    with pytest.raises(ValidationError, match="JWT_ALGORITHM=RS256 requires JWT_PUBLIC_KEY"):
        ContactsSettings()


def test_public_key_must_be_an_rsa_pem(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_PUBLIC_KEY", "not a key")
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY is not a PEM-encoded public key"):
        ContactsSettings()

    environment.setenv("JWT_PUBLIC_KEY", public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY must be an RSA public key"):
        ContactsSettings()


def test_describe_masks_secrets_and_url_passwords(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_SECRET", PROD_SECRET)

    described = ContactsSettings().describe()

    assert described["jwt_secret"] == MASK
    assert described["database_url"] == f"postgresql://contacts:{MASK}@db:5432/contacts"
    assert described["redis_url"] == f"redis://:{MASK}@cache:6379/0"
    assert described["service_name"] == "contacts"
    assert described["http_port"] == 8001
    for secret in (PROD_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in str(described)


def test_repr_and_str_never_show_secrets(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_SECRET", PROD_SECRET)
    settings = ContactsSettings()

    for shown in (repr(settings), str(settings)):
        assert "contacts" in shown
        for secret in (PROD_SECRET, DB_PASSWORD, REDIS_PASSWORD):
            assert secret not in shown


def test_validation_errors_do_not_echo_the_input(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_SECRET", PROD_SECRET)
    environment.setenv("HTTP_PORT", "not-a-port")

    with pytest.raises(ValidationError) as raised:
        ContactsSettings()

    assert "http_port" in str(raised.value)
    for secret in (PROD_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in str(raised.value)


def test_settings_fields_are_not_keyword_aliases_of_their_variables() -> None:
    """The environment's keyword is its variable's name: a misspelt one is an error, not
    silently ignored."""
    with pytest.raises(ValidationError, match="environment"):
        ContactsSettings(environment="production")

    settings = ContactsSettings(ESQUADRAO_ENV="production", jwt_secret=PROD_SECRET)
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:pw@host/db", f"postgresql://user:{MASK}@host/db"),
        ("redis://:p@ss@host:6379/0", f"redis://:{MASK}@host:6379/0"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("http://collector:4318", "http://collector:4318"),
        ("http://[::1", MASK),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked


def test_migrations_need_only_the_database(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("DATABASE_URL", "postgresql://postgres@db:5432/esquadrao_contacts")
    environment.setenv("LOG_LEVEL", "debug")
    environment.setenv("JWT_ALGORITHM", "RS256")  # another process's concern: ignored

    settings = MigrationSettings()

    assert settings.database_url == "postgresql://postgres@db:5432/esquadrao_contacts"
    assert settings.log_level == "DEBUG"


def test_migrations_refuse_a_database_that_is_not_postgres(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("DATABASE_URL", "mysql://root@db/esquadrao")

    with pytest.raises(ValidationError, match="must be a postgresql:// URL"):
        MigrationSettings()
