"""The deployment files agree with the code: topics, metrics, settings, selectors, runbooks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from schemas.topics import Topics
from services.notify.config import NotifySettings
from services.notify.metrics import NotifyMetrics
from services.ops.cli import app as deploy_cli
from services.ops.manifests import kafka_topics, prometheus_rule, render, resource_name
from services.pledge.config import PledgeSettings
from services.pledge.metrics_api import ApiMetrics
from services.pledge.processor.metrics import ProcessorMetrics
from services.pledge.projector.metrics import ReadModelMetrics
from services.settlement.metrics import settlement_metrics
from services.settlement.projector import SettlementReadModelMetrics

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "deploy" / "k8s" / "base"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "pledgeflow.json"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _base_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    return [doc for name in kustomization["resources"] for doc in _documents(BASE / name)]


def _exported_series() -> set[str]:
    """Every series name the three processes can expose."""
    registry = CollectorRegistry()
    ProcessorMetrics.create(registry)
    ApiMetrics.create(registry)
    ReadModelMetrics.create(registry)
    NotifyMetrics.create(registry)
    settlement_metrics(registry)
    SettlementReadModelMetrics.create(registry)
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_generated_files_are_current() -> None:
    stale = [str(item.path) for item in render(REPO) if not item.is_current()]
    assert stale == [], "run `pledgeflow deploy render`"


def test_render_check_names_a_stale_file_and_render_rewrites_it(tmp_path: Path) -> None:
    for part in ("deploy/k8s/base", "deploy/grafana", "deploy/prometheus"):
        shutil.copytree(REPO / part, tmp_path / part)
    topics_file = tmp_path / "deploy/k8s/base/kafka-topics.yaml"
    topics_file.write_text("# edited by hand\n")
    runner = CliRunner()

    checked = runner.invoke(deploy_cli, ["render", "--repo", str(tmp_path), "--check"])
    assert checked.exit_code == 1
    assert "kafka-topics.yaml" in checked.output

    written = runner.invoke(deploy_cli, ["render", "--repo", str(tmp_path)])
    assert written.exit_code == 0
    assert topics_file.read_text() == kafka_topics()
    again = runner.invoke(deploy_cli, ["render", "--repo", str(tmp_path), "--check"])
    assert again.exit_code == 0


def test_every_registry_topic_is_a_kafka_topic_resource_with_production_replication() -> None:
    documents = list(yaml.safe_load_all(kafka_topics()))
    registry = Topics()
    assert [doc["spec"]["topicName"] for doc in documents] == [spec.name for spec in registry]
    for doc, spec in zip(documents, registry, strict=True):
        assert doc["kind"] == "KafkaTopic"
        assert re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", doc["metadata"]["name"])
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "pledgeflow"
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == 3
        assert doc["spec"]["config"]["min.insync.replicas"] == 2
        assert doc["spec"]["config"]["retention.ms"] == spec.retention_ms
        assert doc["spec"]["config"]["cleanup.policy"] == spec.cleanup_policy
    names = [doc["metadata"]["name"] for doc in documents]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("PledgeMade", "pledge-made"),
        ("CampaignLaunched", "campaign-launched"),
        ("pledge-commands.dlq", "pledge-commands.dlq"),
        ("GoalReached", "goal-reached"),
    ],
)
def test_resource_names_are_lowercase_kebab(topic: str, name: str) -> None:
    assert resource_name(topic) == name


def test_alerts_and_dashboard_only_use_metrics_the_services_export() -> None:
    exported = _exported_series()
    used = set()
    for expr in [rule["expr"] for rule in _alert_rules()] + _dashboard_exprs():
        used.update(re.findall(r"pledgeflow_[a-z0-9_]+", expr))
    assert used, "no pledgeflow metric found in the rules or the dashboard"
    assert sorted(used - exported) == []


def test_every_exported_metric_family_is_on_the_dashboard() -> None:
    registry = CollectorRegistry()
    for create in (
        ProcessorMetrics.create,
        ApiMetrics.create,
        ReadModelMetrics.create,
        NotifyMetrics.create,
        SettlementReadModelMetrics.create,
    ):
        create(registry)
    text = "\n".join(_dashboard_exprs())
    missing = [family.name for family in registry.collect() if family.name not in text]
    assert missing == []


def test_every_alert_is_labelled_and_has_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.strip().lower().replace(" ", "-"))
        for heading in re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)
    }
    rules = _alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        path, anchor = rule["annotations"]["runbook_url"].split("#")
        assert path == "docs/operations.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"no runbook section for {rule['alert']}"


def test_prometheus_rule_carries_the_rule_file_unchanged() -> None:
    rule = yaml.safe_load(prometheus_rule(ALERTS.read_text()))
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_manifests_only_set_settings_that_exist() -> None:
    from services.audit.config import AuditSettings  # the checkpointer's settings
    from services.pledge.api.config import ApiSettings  # the API's (metrics host and port)
    from services.settlement.config import SettlementSettings

    settings = [
        *PledgeSettings.model_fields,
        *AuditSettings.model_fields,
        *ApiSettings.model_fields,
        *NotifySettings.model_fields,
        *SettlementSettings.model_fields,
    ]
    fields = {f"PLEDGEFLOW_{name.upper()}" for name in settings}
    text = "\n".join(path.read_text() for path in BASE.glob("*.yaml"))
    text += (REPO / "deploy" / "k8s" / "overlays" / "dev" / "kustomization.yaml").read_text()
    used = set(re.findall(r"PLEDGEFLOW_[A-Z0-9_]+", text))
    assert used
    assert sorted(used - fields) == []


def test_every_selector_in_the_base_matches_a_pod_template() -> None:
    documents = _base_documents()
    pods = [
        doc["spec"]["template"]["metadata"]["labels"]
        for doc in documents
        if doc["kind"] in {"Deployment", "StatefulSet"}
    ]
    names = {labels["app.kubernetes.io/name"] for labels in pods}

    def selected(selector: dict[str, Any]) -> set[str]:
        wanted = selector.get("matchLabels", {})
        found = {
            labels["app.kubernetes.io/name"]
            for labels in pods
            if all(labels.get(k) == v for k, v in wanted.items())
        }
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In"
            found &= set(expression["values"])
            assert set(expression["values"]) <= names
        return found

    checked = 0
    for doc in documents:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind == "Service":
            assert selected({"matchLabels": spec["selector"]}), doc["metadata"]["name"]
        elif kind in {"PodDisruptionBudget", "ServiceMonitor", "PodMonitor"}:
            assert selected(spec["selector"]), doc["metadata"]["name"]
        elif kind == "NetworkPolicy" and spec["podSelector"]:
            assert selected(spec["podSelector"]), doc["metadata"]["name"]
        else:
            continue
        checked += 1
    assert checked >= 10


def test_workloads_run_commands_the_cli_has() -> None:
    from services.cli import _register, app

    _register()
    runner = CliRunner()
    commands = {
        tuple(container["args"][:2])
        for doc in _base_documents()
        if doc["kind"] in {"Deployment", "StatefulSet"} and doc["metadata"]["name"] != "redis"
        for container in doc["spec"]["template"]["spec"].get("initContainers", [])
        + doc["spec"]["template"]["spec"]["containers"]
    }
    assert ("processor", "run") in commands and ("deploy", "wait-topics") in commands
    for group, command in sorted(commands):
        result = runner.invoke(app, [group, command, "--help"])
        assert result.exit_code == 0, (group, command, result.output)


#: The group consumers of the base, by command: each is a static group member.
_GROUP_CONSUMERS = {
    ("processor", "run"): "PLEDGEFLOW_PROCESSOR_INSTANCE_ID",
    ("readmodel", "run"): "PLEDGEFLOW_READMODEL_INSTANCE_ID",
    ("settlement", "run"): "PLEDGEFLOW_SETTLEMENT_INSTANCE_ID",
    ("settlement", "readmodel"): "PLEDGEFLOW_SETTLEMENT_READMODEL_INSTANCE_ID",
}


def test_group_consumers_are_statefulsets_whose_pod_name_is_their_static_member_id() -> None:
    documents = _base_documents()
    found = set()
    for doc in documents:
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = tuple(container.get("args", [])[:2])
            if command not in _GROUP_CONSUMERS:
                continue
            found.add(command)
            name = doc["metadata"]["name"]
            assert doc["kind"] == "StatefulSet", name
            env = {e["name"]: e for e in container.get("env", [])}
            source = env[_GROUP_CONSUMERS[command]]["valueFrom"]["fieldRef"]["fieldPath"]
            assert source == "metadata.name", name
            service = [
                d
                for d in documents
                if d["kind"] == "Service" and d["metadata"]["name"] == doc["spec"]["serviceName"]
            ]
            assert service and service[0]["spec"]["clusterIP"] == "None", name
            for scaled in documents:
                if scaled["kind"] == "ScaledObject" and scaled["metadata"]["name"] == name:
                    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet", name
    assert found == set(_GROUP_CONSUMERS)


def test_make_run_gives_every_group_consumer_a_local_static_member_id() -> None:
    procfile = (REPO / "deploy" / "local" / "Procfile").read_text(encoding="utf-8")
    for command, variable in _GROUP_CONSUMERS.items():
        run = f"pledgeflow {' '.join(command)}"
        line = next(line for line in procfile.splitlines() if run in line)
        assert f"{variable}=" in line, command
