from pathlib import Path

import pytest
from esquadrao_devstack.stack import Component, LocalStack, StackConfig, libpq_url

pytestmark = pytest.mark.unit


def test_unset_or_empty_variables_mean_embedded() -> None:
    config = StackConfig.from_env({"KAFKA_BOOTSTRAP": "", "REDIS_URL": ""}, kafka_port=9999)

    assert config.given(Component.KAFKA) is None
    assert config.given(Component.POSTGRES) is None
    assert config.given(Component.REDIS) is None
    assert config.given(Component.SIMULATOR) is None
    assert config.kafka_port == 9999


def test_given_urls_are_read_and_database_url_loses_its_driver() -> None:
    config = StackConfig.from_env(
        {
            "KAFKA_BOOTSTRAP": "broker:9092",
            "DATABASE_URL": "postgresql+asyncpg://app:pw@db:5432/postgres",
            "REDIS_URL": "redis://cache:6379/1",
            "WHATSAPP_SIMULATOR_URL": "http://wasim:8790",
            "TICKETS_DATABASE_URL": "postgresql://t@other:5432/tickets",
        }
    )

    assert config.kafka_bootstrap == "broker:9092"
    assert config.postgres_url == "postgresql://app:pw@db:5432/postgres"
    assert config.redis_url == "redis://cache:6379/1"
    assert config.given(Component.SIMULATOR) == "http://wasim:8790"
    assert config.service_database_urls == {"tickets": "postgresql://t@other:5432/tickets"}


def test_a_given_stack_embeds_nothing_and_names_one_database_per_service(tmp_path: Path) -> None:
    config = StackConfig(
        kafka_bootstrap="broker:9092",
        postgres_url="postgresql://app:pw@db:5432/postgres",
        redis_url="redis://cache:6379/0",
        whatsapp_simulator_url="http://wasim:8790",
        service_database_urls={"tickets": "postgresql://t@other:5432/tickets"},
    )

    stack = LocalStack(tmp_path, config)

    assert stack.embedded == []
    assert stack.whatsapp_simulator_url == "http://wasim:8790"
    assert stack.database_url("contacts") == "postgresql://app:pw@db:5432/esquadrao_contacts"
    assert stack.database_url("tickets") == "postgresql://t@other:5432/tickets"


def test_a_default_stack_embeds_the_simulator_as_its_fourth_server(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackConfig(simulator_port=8790))

    assert [server.component for server in stack.embedded] == [
        "kafka",
        "postgres",
        "redis",
        "wasim",
    ]
    assert stack.simulator is not None
    assert stack.simulator.directory == tmp_path.resolve() / "wasim"
    assert stack.simulator.data_path == tmp_path.resolve() / "wasim" / "data"
    assert stack.simulator.requested_port == 8790


def test_a_stack_limited_to_postgres_has_no_broker(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackConfig(), components=[Component.POSTGRES])

    assert [server.component for server in stack.embedded] == ["postgres"]
    with pytest.raises(RuntimeError, match="no kafka server"):
        _ = stack.kafka_bootstrap


@pytest.mark.parametrize(
    ("url", "database", "expected"),
    [
        ("postgresql+asyncpg://u:p@h:5/db", None, "postgresql://u:p@h:5/db"),
        ("postgres://h/db?sslmode=require", "other", "postgresql://h/other?sslmode=require"),
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "x",
            "postgresql://postgres@127.0.0.1:5432/x",
        ),
    ],
)
def test_libpq_url(url: str, database: str | None, expected: str) -> None:
    assert libpq_url(url, database=database) == expected
