"""Every pod of both overlays is hardened (issue 12, item 5): no service-account token, the
runtime's default seccomp profile, every container (init containers included) without
privilege escalation or capabilities, on a read-only root, with resources; Redis with a
password from a Secret, a maxmemory and noeviction."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.ops.overlays import build

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "deploy" / "k8s" / "overlays"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


@pytest.fixture(scope="module")
def kustomize() -> Path:
    installer = REPO / "deploy" / "check" / "kustomize-install.sh"
    out = subprocess.run([str(installer)], check=True, capture_output=True, text=True, timeout=600)
    return Path(out.stdout.strip())


def pod_specs(resources: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for resource in resources:
        if resource["kind"] not in WORKLOADS:
            continue
        template = resource["spec"]["template"]
        if resource["kind"] == "CronJob":
            template = resource["spec"]["jobTemplate"]["spec"]["template"]
        yield f"{resource['kind']}/{resource['metadata']['name']}", template["spec"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_and_container_is_hardened(kustomize: Path, overlay: str) -> None:
    resources = build(kustomize, OVERLAYS / overlay)
    specs = list(pod_specs(resources))
    assert len(specs) >= 4
    for name, spec in specs:
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name} {container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert container.get("resources", {}).get("limits", {}).get("memory"), where
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), where


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_redis_needs_a_password_from_a_secret_and_never_evicts(
    kustomize: Path, overlay: str
) -> None:
    resources = build(kustomize, OVERLAYS / overlay)
    [redis] = [
        r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "redis"
    ]
    [container] = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pledgeflow-redis"
    for name, spec in pod_specs(resources):
        for item in spec["containers"]:
            urls = [e for e in item.get("env", []) if e["name"] == "PLEDGEFLOW_REDIS_URL"]
            for url in urls:
                assert url["value"].startswith("redis://:$(REDIS_PASSWORD)@"), name
