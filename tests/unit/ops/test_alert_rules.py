"""The alerting rules behave: promtool's unit tests pass, and each alert has one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from schemas.events import RejectionReason
from services.pledge.processor.metrics import (
    DEAD_LETTER_CAUSES,
    TRANSACTION_RESULTS,
    ProcessorMetrics,
)
from tests.support.prometheus import ensure_prometheus

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    ensure_prometheus()
    result = subprocess.run(
        ["promtool", "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    checks = [
        check
        for case in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
        for check in case.get("alert_rule_test", [])
    ]
    fires = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert sorted(alerts - fires) == [], "alerts without a case where they fire"
    assert sorted(alerts - quiet) == [], "alerts without a case where they stay quiet"


def test_every_alert_aggregates_by_namespace() -> None:
    for rule in _rules():
        expr = rule["expr"]
        aggregations = re.findall(r"\b(?:sum|max|min|count|avg)\s+by\s*\(([^)]*)\)", expr)
        assert aggregations, f"{rule.get('alert')}: no aggregation"
        for labels in aggregations:
            assert "namespace" in labels, f"{rule.get('alert')}: by ({labels})"


def test_labelled_processor_counters_exist_at_zero_from_start() -> None:
    """The first dead letter or abort after a restart must be a rise that increase() sees."""
    registry = CollectorRegistry()
    ProcessorMetrics.create(registry)
    text = generate_latest(registry).decode()
    for cause in DEAD_LETTER_CAUSES:
        assert f'pledgeflow_processor_dead_letters_total{{cause="{cause}"}} 0.0' in text
    for result in TRANSACTION_RESULTS:
        assert f'pledgeflow_processor_transactions_total{{result="{result}"}} 0.0' in text
    for reason in RejectionReason:
        assert f'pledgeflow_processor_rejections_total{{reason="{reason.value}"}} 0.0' in text


def test_every_dead_letter_cause_in_the_processor_is_pre_created() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8") for path in (REPO / "services").rglob("*.py")
    )
    used = set(re.findall(r"_dead_letter\(\s*out,\s*record,\s*\"([a-z_]+)\"", sources))
    assert used, "no dead-letter call found: has the processor's call shape changed?"
    assert sorted(used - set(DEAD_LETTER_CAUSES)) == []
