"""Strimzi ``KafkaTopic`` resources generated from the topic catalog.

The catalog is the only place topics are declared; the manifests in ``k8s/base`` are this
module's output (``make k8s-topics``), so they never drift from what the code expects.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from esquadrao_common.kafka.catalog import Catalog, TopicSpec

STRIMZI_API_VERSION = "kafka.strimzi.io/v1beta2"
STRIMZI_CLUSTER = "esquadrao"
_NOT_IN_RESOURCE_NAME = re.compile(r"[^a-z0-9.-]+")

HEADER = (
    "# Generated from proto/esquadrao/topics.yaml by `make k8s-topics`: do not edit.\n"
    f"# One Strimzi KafkaTopic per catalog topic, for the Kafka cluster {STRIMZI_CLUSTER!r}.\n"
)


def resource_name(topic: str) -> str:
    """A Kubernetes resource name for ``topic`` (lower case, ``[a-z0-9.-]``)."""
    return _NOT_IN_RESOURCE_NAME.sub("-", topic.lower()).strip("-.")


def kafka_topic(spec: TopicSpec, cluster: str = STRIMZI_CLUSTER) -> dict[str, Any]:
    """The ``KafkaTopic`` resource of one topic."""
    return {
        "apiVersion": STRIMZI_API_VERSION,
        "kind": "KafkaTopic",
        "metadata": {
            "name": resource_name(spec.name),
            "labels": {"strimzi.io/cluster": cluster},
        },
        "spec": {
            "topicName": spec.name,
            "partitions": spec.partitions,
            "replicas": spec.replication_factor,
            "config": {"retention.ms": spec.retention_ms},
        },
    }


def kafka_topics_yaml(catalog: Catalog, cluster: str = STRIMZI_CLUSTER) -> str:
    """Every topic of ``catalog`` (retry and dead-letter topics included) as multi-doc YAML."""
    documents = [kafka_topic(spec, cluster) for spec in catalog.all_topics()]
    body = yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
    return HEADER + body
