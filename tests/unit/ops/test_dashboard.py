"""The dashboard shows one environment at a time: every selector is scoped by its variables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "pledgeflow.json"
# A metric name and its {...} matchers (quoted strings may hold braces: route templates).
_SELECTOR = re.compile(r'(pledgeflow_[a-z0-9_]+)(\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\})?')


def _exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [target["expr"] for target in panel.get("targets", []) if "expr" in target]
        found += _exprs(panel.get("panels", []))
    return found


def test_namespace_and_job_variables_exist() -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert variables["namespace"]["type"] == "query"
    assert "namespace" in variables["namespace"]["query"]["query"]
    assert not variables["namespace"]["includeAll"], "one environment at a time"
    assert variables["job"]["includeAll"] and variables["job"]["allValue"]
    assert '"$namespace"' in variables["job"]["query"]["query"]


def test_every_selector_is_scoped_to_the_chosen_namespace_and_jobs() -> None:
    exprs = _exprs(json.loads(DASHBOARD.read_text())["panels"])
    assert exprs
    for expr in exprs:
        for name, matchers in _SELECTOR.findall(expr):
            assert 'namespace="$namespace"' in matchers, f"{name} in {expr}"
            assert 'job=~"$job"' in matchers, f"{name} in {expr}"
