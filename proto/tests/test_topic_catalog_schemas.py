"""Every topic of the catalog that declares a schema names an existing wrapper message."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import esquadrao
import pytest
from esquadrao.common.v1.envelope_pb2 import Envelope
from esquadrao_common.kafka.catalog import Catalog, TopicSpec
from google.protobuf import descriptor_pool

pytestmark = pytest.mark.unit

CATALOG = Catalog.load(Path(__file__).resolve().parents[1] / "esquadrao" / "topics.yaml")
TOPICS_WITH_SCHEMA = [topic for topic in CATALOG.topics if topic.schema]


@pytest.fixture(scope="module", autouse=True)
def _load_generated_modules() -> None:
    """Register every generated message in the default descriptor pool."""
    for info in pkgutil.walk_packages(esquadrao.__path__, prefix="esquadrao."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)


def test_the_catalog_declares_schemas() -> None:
    assert TOPICS_WITH_SCHEMA, "no topic of the catalog declares a schema"


@pytest.mark.parametrize("topic", TOPICS_WITH_SCHEMA, ids=lambda topic: topic.name)
def test_topic_schema_is_a_wrapper_with_the_envelope_first(topic: TopicSpec) -> None:
    try:
        message = descriptor_pool.Default().FindMessageTypeByName(topic.schema)
    except KeyError:
        pytest.fail(f"{topic.name}: schema {topic.schema} is not a generated message")

    envelope_field = message.fields_by_number.get(1)
    assert envelope_field is not None, f"{topic.schema} has no field 1"
    assert envelope_field.name == "envelope"
    assert envelope_field.message_type is not None
    assert envelope_field.message_type.full_name == Envelope.DESCRIPTOR.full_name


@pytest.mark.parametrize("topic", TOPICS_WITH_SCHEMA, ids=lambda topic: topic.name)
def test_topic_schema_belongs_to_the_topics_domain_and_version(topic: TopicSpec) -> None:
    domain, *_, version = topic.name.split(".")
    assert topic.schema.startswith(f"esquadrao.{domain}.{version}."), (
        f"{topic.name} carries {topic.schema}, outside package esquadrao.{domain}.{version}"
    )
