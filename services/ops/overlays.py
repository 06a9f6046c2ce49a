"""The rendered Kubernetes overlays checked offline by validators nobody here wrote.

``pledgeflow deploy validate`` (run by ``make deploy-check``) builds each overlay with
kustomize, then checks every resource:

* built-in kinds (Deployment, Service, NetworkPolicy, HPA...) against the Kubernetes API's
  own OpenAPI-derived JSON Schemas shipped in PyPI's ``kubernetes-validate``, in strict mode
  (an unknown or misspelt field is an error);
* CRD kinds whose schemas a registry serves: KEDA's ``ScaledObject`` and
  ``TriggerAuthentication``, and the Prometheus operator's ``ServiceMonitor``, ``PodMonitor``,
  ``PrometheusRule`` (npm ``@kubernetes-models/*`` via ``deploy/check/validate-crds.mjs``);
* what no schema can say: a KEDA Kafka trigger names the bootstrap Service by its fully
  qualified name in the resource's own namespace (the operator resolves it from ``keda``),
  and the Kafka listener admits the KEDA operator's namespace.

Strimzi's kinds (Kafka, KafkaNodePool, KafkaTopic, KafkaUser) have no schema in a reachable registry
(its Maven ``api`` jar holds Java classes): they are reported as not schema-checked.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

__all__ = [
    "CRD_KINDS",
    "KUBERNETES_VERSION",
    "Report",
    "build",
    "check_keda_reaches_kafka",
    "validate_builtin",
    "validate_overlay",
]

#: The Kubernetes release whose API schemas the built-in kinds are checked against.
KUBERNETES_VERSION = "1.33"
#: CRD kinds (``apiVersion/kind``) checked by deploy/check/validate-crds.mjs.
CRD_KINDS = frozenset(
    {
        "keda.sh/v1alpha1/ScaledObject",
        "keda.sh/v1alpha1/TriggerAuthentication",
        "monitoring.coreos.com/v1/PodMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "monitoring.coreos.com/v1/ServiceMonitor",
    }
)
KEDA_NAMESPACE = "keda"
_CHECK_DIR = Path(__file__).resolve().parents[2] / "deploy" / "check"

Resource = dict[str, Any]


@dataclass
class Report:
    """What was checked in one overlay, and every error found (empty = valid)."""

    builtin: set[str] = field(default_factory=set)
    crds: set[str] = field(default_factory=set)
    unchecked: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def _name(resource: Resource) -> str:
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


def _type(resource: Resource) -> str:
    return f"{resource.get('apiVersion')}/{resource.get('kind')}"


def build(kustomize: Path, overlay: Path) -> list[Resource]:
    """``kustomize build overlay`` as a list of resources."""
    result = subprocess.run(
        [str(kustomize), "build", str(overlay)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise ValueError(f"kustomize build {overlay}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_builtin(resources: list[Resource], report: Report, version: str) -> None:
    """Built-in kinds against the API schemas, strict; other kinds left to the CRD check."""
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except SchemaNotFoundError:
            continue
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path) or "<root>"
            report.errors.append(f"{_name(resource)}: {path}: {exc.message}")
        report.builtin.add(_type(resource))


def validate_crds(resources: list[Resource], report: Report) -> None:
    """The CRD kinds the npm models know, through deploy/check/validate-crds.mjs."""
    crds = [r for r in resources if _type(r) in CRD_KINDS]
    if not crds:
        return
    subprocess.run([str(_CHECK_DIR / "install.sh")], check=True, timeout=600)
    result = subprocess.run(
        ["node", str(_CHECK_DIR / "validate-crds.mjs")],
        input=json.dumps(crds),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=_CHECK_DIR,
    )
    lines = result.stdout.splitlines()
    report.errors.extend(line.removeprefix("error ") for line in lines if line.startswith("error"))
    if result.returncode != 0 and not any(line.startswith("error") for line in lines):
        report.errors.append(f"validate-crds.mjs failed: {result.stderr.strip()}")
    if len([line for line in lines if line.startswith(("ok ", "error "))]) != len(crds):
        report.errors.append(f"validate-crds.mjs checked fewer than {len(crds)} resources")
    report.crds.update(_type(r) for r in crds)


def check_keda_reaches_kafka(resources: list[Resource]) -> list[str]:
    """KEDA's operator (namespace ``keda``) can resolve and reach every Kafka it scales on."""
    errors = []
    for resource in resources:
        if resource.get("kind") != "ScaledObject":
            continue
        namespace = resource.get("metadata", {}).get("namespace")
        for trigger in resource["spec"].get("triggers", []):
            if trigger.get("type") != "kafka":
                continue
            for server in trigger["metadata"]["bootstrapServers"].split(","):
                host = server.rsplit(":", 1)[0]
                parts = host.split(".")
                if len(parts) < 3 or parts[1] != namespace or parts[2] != "svc":
                    errors.append(
                        f"{_name(resource)}: bootstrap {server!r} is not a Service of namespace "
                        f"{namespace!r} by its fully qualified name"
                    )
    for resource in resources:
        if resource.get("kind") != "Kafka":
            continue
        for listener in resource["spec"]["kafka"].get("listeners", []):
            peers = listener.get("networkPolicyPeers")
            if peers is None:
                continue  # no peers: Strimzi admits every pod
            admitted = {
                peer.get("namespaceSelector", {})
                .get("matchLabels", {})
                .get("kubernetes.io/metadata.name")
                for peer in peers
            }
            if KEDA_NAMESPACE not in admitted:
                errors.append(
                    f"{_name(resource)}: listener {listener['name']!r} does not admit namespace "
                    f"{KEDA_NAMESPACE!r} (the KEDA operator reads consumer lag through it)"
                )
    return errors


def validate_overlay(kustomize: Path, overlay: Path, version: str = KUBERNETES_VERSION) -> Report:
    """Build ``overlay`` and check every resource; the report lists kinds and errors."""
    resources = build(kustomize, overlay)
    report = Report()
    validate_builtin(resources, report, version)
    validate_crds(resources, report)
    report.errors.extend(check_keda_reaches_kafka(resources))
    report.unchecked = {_type(r) for r in resources} - report.builtin - report.crds
    return report
