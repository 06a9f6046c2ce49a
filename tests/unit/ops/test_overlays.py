"""`make deploy-check`'s overlay validation: real schemas, strict, and KEDA reaching Kafka."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.ops.overlays import (
    KUBERNETES_VERSION,
    Report,
    build,
    check_keda_reaches_kafka,
    validate_builtin,
    validate_crds,
    validate_overlay,
)

REPO = Path(__file__).resolve().parents[3]
OVERLAYS = REPO / "deploy" / "k8s" / "overlays"


@pytest.fixture(scope="module")
def kustomize() -> Path:
    installer = REPO / "deploy" / "check" / "kustomize-install.sh"
    out = subprocess.run([str(installer)], check=True, capture_output=True, text=True, timeout=600)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def prod(kustomize: Path) -> list[dict[str, Any]]:
    return build(kustomize, OVERLAYS / "prod")


def _one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1
    return copy.deepcopy(found[0])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_is_valid_and_says_which_kinds_were_checked(
    kustomize: Path, overlay: str
) -> None:
    report = validate_overlay(kustomize, OVERLAYS / overlay)
    assert report.errors == []
    assert {"apps/v1/Deployment", "apps/v1/StatefulSet", "networking.k8s.io/v1/NetworkPolicy",
            "autoscaling/v2/HorizontalPodAutoscaler", "v1/Service"} <= report.builtin  # fmt: skip
    # prod adds Kafka authentication: KEDA's TriggerAuthentication (schema-checked) and
    # Strimzi KafkaUsers (no schema available).
    prod_only = overlay == "prod"
    assert report.crds == {
        "keda.sh/v1alpha1/ScaledObject",
        "monitoring.coreos.com/v1/PodMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "monitoring.coreos.com/v1/ServiceMonitor",
    } | ({"keda.sh/v1alpha1/TriggerAuthentication"} if prod_only else set())
    assert {kind.split("/")[-1] for kind in report.unchecked} == {
        "Kafka", "KafkaNodePool", "KafkaTopic",
    } | ({"KafkaUser"} if prod_only else set())  # fmt: skip


def test_a_misspelt_field_of_a_builtin_kind_is_an_error(prod: list[dict[str, Any]]) -> None:
    deployment = _one(prod, "Deployment", "pledgeflow-api")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    report = Report()
    validate_builtin([deployment], report, KUBERNETES_VERSION)
    assert len(report.errors) == 1
    assert "imagePullPolicyy" in report.errors[0]


def test_a_wrong_type_in_a_crd_is_an_error(prod: list[dict[str, Any]]) -> None:
    scaled = _one(prod, "ScaledObject", "pledgeflow-processor")
    scaled["spec"]["minReplicaCount"] = "one"
    rule = _one(prod, "PrometheusRule", "pledgeflow")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    report = Report()
    validate_crds([scaled, rule], report)
    assert len(report.errors) == 2, report.errors
    assert "minReplicaCount" in report.errors[0] and "for" in report.errors[1]


def test_keda_reaches_kafka_by_its_fully_qualified_name_in_each_overlay(kustomize: Path) -> None:
    # prod: the TLS + SCRAM listener on 9093 only (docs/security.md).
    for overlay, namespace, port in (("dev", "pledgeflow-dev", 9092), ("prod", "pledgeflow", 9093)):
        resources = build(kustomize, OVERLAYS / overlay)
        servers = {
            trigger["metadata"]["bootstrapServers"]
            for r in resources
            if r["kind"] == "ScaledObject"
            for trigger in r["spec"]["triggers"]
        }
        assert servers == {f"pledgeflow-kafka-bootstrap.{namespace}.svc.cluster.local:{port}"}
        assert check_keda_reaches_kafka(resources) == []


def test_prod_kafka_takes_only_tls_scram_clients_and_keda_authenticates(
    prod: list[dict[str, Any]],
) -> None:
    kafka = _one(prod, "Kafka", "pledgeflow")["spec"]
    assert [
        (lst["port"], lst["tls"], lst["authentication"]) for lst in kafka["kafka"]["listeners"]
    ] == [(9093, True, {"type": "scram-sha-512"})]
    assert kafka["kafka"]["authorization"] == {"type": "simple"}
    assert "userOperator" in kafka["entityOperator"]
    for scaled in (r for r in prod if r["kind"] == "ScaledObject"):
        assert scaled["spec"]["triggers"][0]["authenticationRef"] == {"name": "pledgeflow-kafka"}
    for workload in (r for r in prod if r["kind"] in ("Deployment", "StatefulSet")):
        pod = workload["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            if container["name"] in ("redis",):
                continue
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL", container[
                "name"
            ]
            user = env["PLEDGEFLOW_KAFKA_SASL_USERNAME"]["value"]
            assert env["PLEDGEFLOW_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": user, "key": "password"
            }  # fmt: skip


def test_a_short_bootstrap_name_or_a_listener_closed_to_keda_is_an_error(
    prod: list[dict[str, Any]],
) -> None:
    scaled = _one(prod, "ScaledObject", "pledgeflow-projector")
    scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"] = (
        "pledgeflow-kafka-bootstrap:9092"
    )
    kafka = _one(prod, "Kafka", "pledgeflow")
    listener = kafka["spec"]["kafka"]["listeners"][0]
    listener["networkPolicyPeers"] = [
        peer for peer in listener["networkPolicyPeers"] if "namespaceSelector" not in peer
    ]
    errors = check_keda_reaches_kafka([scaled, kafka])
    assert len(errors) == 2, errors
    assert "fully qualified" in errors[0] and "'keda'" in errors[1]
