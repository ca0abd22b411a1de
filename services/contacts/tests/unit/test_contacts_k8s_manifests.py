"""The contacts Kubernetes manifests agree with the service they deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from contacts.config import HTTP_PORT, ContactsSettings
from esquadrao_common.kafka.catalog import Catalog

pytestmark = pytest.mark.unit

K8S = Path(__file__).parents[2] / "k8s"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in [*kustomization["resources"], "migrate-job.yaml"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def pod_specs() -> list[dict[str, Any]]:
    workloads = [*by_kind("Deployment").values(), *by_kind("Job").values()]
    return [w["spec"]["template"]["spec"] for w in workloads]


def test_every_container_runs_a_service_command_as_non_root() -> None:
    specs = pod_specs()
    assert len(specs) == 3
    commands = set()
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["image"] == "esquadrao/contacts"
            commands.add(container["args"][0])
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"]
    assert commands == {"api", "worker", "migrate"}


def test_config_map_sets_only_known_settings() -> None:
    config = by_kind("ConfigMap")["contacts-config"]["data"]
    known = {name.upper() for name in ContactsSettings.model_fields} | {"ESQUADRAO_ENV"}
    assert set(config) <= known, set(config) - known
    assert int(config["HTTP_PORT"]) == HTTP_PORT


def test_api_probes_service_and_autoscaler_point_at_the_api() -> None:
    api = by_kind("Deployment")["contacts-api"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == HTTP_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert by_kind("Service")["contacts"]["spec"]["selector"] == labels
    assert (
        by_kind("HorizontalPodAutoscaler")["contacts-api"]["spec"]["scaleTargetRef"]["name"]
        == "contacts-api"
    )
    for budget in by_kind("PodDisruptionBudget").values():
        selected = budget["spec"]["selector"]["matchLabels"]
        assert any(
            d["spec"]["template"]["metadata"]["labels"] == selected
            for d in by_kind("Deployment").values()
        )


def test_worker_scales_on_the_lag_of_the_contacts_consumer_group() -> None:
    scaled = by_kind("ScaledObject")["contacts-worker"]
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    group = Catalog.load().group(trigger["consumerGroup"])
    assert trigger["topic"] in group.topics
    assert scaled["spec"]["scaleTargetRef"]["name"] == "contacts-worker"
    partitions = max(Catalog.load().topic(t).partitions for t in group.topics)
    assert scaled["spec"]["maxReplicaCount"] <= partitions
