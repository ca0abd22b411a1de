from pathlib import Path

import pytest
import yaml
from esquadrao_common.kafka.catalog import Catalog
from esquadrao_devstack.cli import app
from esquadrao_devstack.k8s import resource_name
from typer.testing import CliRunner

pytestmark = pytest.mark.unit


def test_prints_one_strimzi_kafka_topic_per_catalog_topic() -> None:
    result = CliRunner().invoke(app, ["k8s-topics"])

    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    expected = {spec.name: spec for spec in Catalog.load().all_topics()}
    assert {doc["spec"]["topicName"] for doc in documents} == set(expected)
    assert len(documents) == len(expected)
    for doc in documents:
        spec = expected[doc["spec"]["topicName"]]
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["labels"] == {"strimzi.io/cluster": "esquadrao"}
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == spec.replication_factor
        assert doc["spec"]["config"]["retention.ms"] == spec.retention_ms


def test_output_is_stable_between_runs() -> None:
    runner = CliRunner()

    assert runner.invoke(app, ["k8s-topics"]).output == runner.invoke(app, ["k8s-topics"]).output


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("contacts.events.v1", "contacts.events.v1"),
        ("Billing_Events.V1", "billing-events.v1"),
        ("_odd_", "odd"),
    ],
)
def test_resource_names_are_valid_kubernetes_names(topic: str, name: str) -> None:
    assert resource_name(topic) == name


def test_committed_kafka_topics_manifest_matches_the_catalog() -> None:
    committed = Path(__file__).parents[4] / "k8s" / "base" / "kafka-topics.yaml"

    result = CliRunner().invoke(app, ["k8s-topics"])

    assert result.exit_code == 0, result.output
    assert committed.read_text() == result.output, (
        "k8s/base/kafka-topics.yaml is stale: run `make k8s-topics`"
    )
