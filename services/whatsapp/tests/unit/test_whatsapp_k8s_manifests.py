"""The whatsapp Kubernetes manifests agree with the service they deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from esquadrao_common.kafka.catalog import Catalog
from whatsapp.config import HTTP_PORT, WhatsappSettings

pytestmark = pytest.mark.unit

K8S = Path(__file__).parents[2] / "k8s"
KEY_REF = {"name": "whatsapp-credentials-key", "key": "WHATSAPP_CREDENTIALS_KEY"}


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in [*kustomization["resources"], "migrate-job.yaml"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def test_every_container_runs_a_service_command_as_non_root() -> None:
    workloads = [*by_kind("Deployment").values(), *by_kind("Job").values()]
    commands = {}
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        main = container(workload)
        assert main["image"] == "esquadrao/whatsapp"
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert "memory" in main["resources"]["limits"]
        commands[workload["metadata"]["name"]] = main["args"]
    assert commands == {
        "whatsapp-api": ["api"],
        "whatsapp-worker": ["worker"],
        "whatsapp-migrate": ["migrate"],
    }


def test_the_credentials_key_comes_from_its_own_secret_where_it_is_needed() -> None:
    for name, workload in [*by_kind("Deployment").items(), *by_kind("Job").items()]:
        env = {item["name"]: item for item in container(workload).get("env", [])}
        secret_refs = [
            ref["secretRef"]["name"] for ref in container(workload)["envFrom"] if "secretRef" in ref
        ]
        assert secret_refs == ["whatsapp-secrets"]
        if name == "whatsapp-migrate":
            assert "WHATSAPP_CREDENTIALS_KEY" not in env
        else:
            key = env["WHATSAPP_CREDENTIALS_KEY"]["valueFrom"]["secretKeyRef"]
            assert key == KEY_REF
    config = by_kind("ConfigMap")["whatsapp-config"]["data"]
    assert "WHATSAPP_CREDENTIALS_KEY" not in config


def test_config_map_sets_only_known_settings() -> None:
    config = by_kind("ConfigMap")["whatsapp-config"]["data"]
    known = {name.upper() for name in WhatsappSettings.model_fields} | {"ESQUADRAO_ENV"}
    assert set(config) <= known, set(config) - known
    assert int(config["HTTP_PORT"]) == HTTP_PORT
    assert config["ESQUADRAO_ENV"] == "production"


def test_api_probes_service_and_autoscaler_point_at_the_api() -> None:
    api = by_kind("Deployment")["whatsapp-api"]
    main = container(api)
    assert main["ports"][0]["containerPort"] == HTTP_PORT
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert by_kind("Service")["whatsapp"]["spec"]["selector"] == labels
    hpa = by_kind("HorizontalPodAutoscaler")["whatsapp-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "whatsapp-api"
    for budget in by_kind("PodDisruptionBudget").values():
        selected = budget["spec"]["selector"]["matchLabels"]
        assert any(
            d["spec"]["template"]["metadata"]["labels"] == selected
            for d in by_kind("Deployment").values()
        )


def test_workers_are_several_and_scale_on_the_sender_groups_lag() -> None:
    worker = by_kind("Deployment")["whatsapp-worker"]
    scaled = by_kind("ScaledObject")["whatsapp-worker"]
    catalog = Catalog.load()
    triggers = [trigger["metadata"] for trigger in scaled["spec"]["triggers"]]
    groups = {trigger["consumerGroup"] for trigger in triggers}
    assert groups == {"whatsapp-sender"}
    group = catalog.group("whatsapp-sender")
    assert {trigger["topic"] for trigger in triggers} == set(group.topics)
    partitions = min(catalog.topic(topic).partitions for topic in group.topics)
    assert scaled["spec"]["scaleTargetRef"]["name"] == "whatsapp-worker"
    assert 2 <= scaled["spec"]["minReplicaCount"] == worker["spec"]["replicas"]
    assert scaled["spec"]["maxReplicaCount"] <= partitions
