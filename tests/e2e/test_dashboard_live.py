"""The Grafana dashboard and the alert rules, evaluated by a real Prometheus on real metrics.

Starts the API and the workers (processor, projector, notify with a webhook receiver and
mailpit) as processes (free ports, this test's topics), and a Prometheus on loopback scraping
them every second with the local scrape config (jobs, ``namespace`` label, alert rules). After
a short load through the API (a webhook endpoint and a backer's e-mail registered first, so
notify delivers on both channels), every query of every
dashboard panel - read from deploy/grafana/pledgeflow.json, so a panel added later is checked
too - runs through Prometheus's HTTP API with the template variables substituted and must
return at least one series; the variables' own queries must find this run; every alerting and
recording rule must evaluate without error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from schemas.topics import Topics, ensure_topics
from services.ops.local_prometheus import local_config
from tests.support.api import free_port
from tests.support.infra import REPO, kafka_bootstrap, redis_url
from tests.support.mailpit import running_mailpit
from tests.support.prometheus import ensure_prometheus
from tests.support.subprocesses import process, wait_until
from tests.support.webhook_receiver import Receiver, receiver_in_thread

pytestmark = pytest.mark.integration

DASHBOARD = REPO / "deploy" / "grafana" / "pledgeflow.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
KEY = "dash-key-0123456789abcdef"
#: What Grafana's built-in interval variables stand for here (Prometheus scrapes every 1 s).
BUILTINS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def panel_queries(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """``(panel title, expr)`` of every target, rows' nested panels included."""
    for panel in panels:
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]
        yield from panel_queries(panel.get("panels", []))


def substitute(expr: str, values: dict[str, str]) -> str:
    """The query Grafana would send: variables (longest name first) replaced by values."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name]).replace("${" + name[1:] + "}", values[name])
    leftover = re.findall(r"\$\{?\w+", expr)
    assert not leftover, f"unsubstituted variables {leftover} in {expr}"
    return expr


def variable_values(dashboard: dict[str, Any], namespace: str) -> dict[str, str]:
    """This run's namespace; every other query variable at its "All" value."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        if variable["name"] == "namespace":
            values["$namespace"] = namespace
        else:
            assert variable.get("includeAll") and variable.get("allValue"), variable["name"]
            values["$" + variable["name"]] = variable["allValue"]
    assert "$namespace" in values, "the dashboard has no namespace variable"
    return values


def query(prometheus: str, expr: str) -> dict[str, Any]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = answer.json()
    return body


def series_count(prometheus: str, expr: str) -> int:
    body = query(prometheus, expr)
    assert body["status"] == "success", (expr, body)
    return len(body["data"]["result"])


def drive_load(api: str) -> None:
    """A short, varied load: launch, accepted and refused pledges, a replay, a 429."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=api, headers=auth, timeout=15) as client:
        launched = client.post(
            "/v1/campaigns",
            headers={"Idempotency-Key": "launch", "Prefer": "wait=10"},
            json={
                "campaign_id": "c-dash", "title": "Mon album", "creator_id": "u-9",
                "goal": {"amount_minor": 10_000, "currency": "EUR"},
                "deadline": "2099-12-31T23:59:59Z", "funding_model": "all_or_nothing",
            },
        )  # fmt: skip
        assert launched.status_code == 201, launched.text

        def pledge(n: int, currency: str = "EUR") -> httpx.Response:
            return client.post(
                "/v1/campaigns/c-dash/pledges",
                headers={"Idempotency-Key": f"pledge-{n}", "Prefer": "wait=10"},
                json={"backer_id": f"b-{n}", "amount_minor": 2500, "currency": currency},
            )

        for n in range(6):
            assert pledge(n).status_code == 201
        assert pledge(0).status_code == 201  # the same key again: an idempotent replay
        assert pledge(99, currency="USD").status_code == 409  # refused: currency mismatch
        assert client.get("/v1/campaigns/c-dash").status_code == 200
        statuses = [pledge(100 + n).status_code for n in range(40)]
        assert 429 in statuses, statuses


def register_notifications(api: str, receiver: Receiver) -> None:
    """A webhook endpoint of the tenant for its pledges (at the test's receiver, which learns
    the secret) and a backer's e-mail address: the load then owes both channels deliveries."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=api, headers=auth, timeout=15) as client:
        created = client.post(
            "/v1/webhook-endpoints",
            headers={"Idempotency-Key": "hook"},
            json={"url": receiver.url("dash"), "event_types": ["PledgeMade"]},
        )
        assert created.status_code == 201, created.text
        receiver.secrets["dash"] = created.json()["secret"]
        contact = client.put("/v1/backers/b-0", json={"email": "b-0@example.org", "locale": "fr"})
        assert contact.status_code in (200, 201), contact.text


def test_every_dashboard_query_and_rule_evaluates_on_live_metrics(
    broker: object, redis_server: str, unique: str, tmp_path: Path
) -> None:
    ensure_prometheus()
    prefix = f"{unique}."
    asyncio.run(ensure_topics(kafka_bootstrap(), Topics(prefix=prefix, partitions=2)))
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_PARTITIONS": "2",
        "PLEDGEFLOW_API_KEYS": f"platform-dash:{KEY}",
        # Low enough for the load's burst to meet a 429, high enough for the rest of it.
        "PLEDGEFLOW_API_RATE_PER_SECOND": "2",
        "PLEDGEFLOW_API_RATE_BURST": "20",
        "PLEDGEFLOW_PROCESSOR_POLL_MS": "50",
        # The API accepts, and notify posts to, the receiver on loopback.
        "PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "true",
    }
    with ExitStack() as stack:
        mail = stack.enter_context(running_mailpit(tmp_path / "mailpit.log"))
        receiver = stack.enter_context(receiver_in_thread())
        #: The workers: name -> (``pledgeflow`` arguments, extra environment). Each serves its
        #: metrics on its own free port, scraped as job ``pledgeflow-<name>`` like the
        #: dashboard's ``job=~"pledgeflow-.*"``; a new worker is one more entry.
        workers: dict[str, tuple[list[str], dict[str, str]]] = {
            "processor": (["processor", "run"], {}),
            "projector": (["readmodel", "run"], {}),
            "notify": (
                ["notify", "worker", "-l", "warn"],
                {
                    "PLEDGEFLOW_NOTIFY_SMTP_PORT": str(mail.smtp_port),
                    "PLEDGEFLOW_NOTIFY_DATA_DIR": str(tmp_path / "notify-data"),
                    "PLEDGEFLOW_NOTIFY_MESSAGE_ID_DOMAIN": "pf.test",
                },
            ),
            "settlement": (["settlement", "run"], {}),
            "settlement-readmodel": (["settlement", "readmodel", "run"], {}),
        }
        ports = {name: free_port() for name in ("api", "prometheus", *workers)}
        jobs = {f"pledgeflow-{name}": ports[name] for name in ("api", *workers)}
        config = tmp_path / "prometheus.yml"
        config.write_text(local_config(jobs, namespace=unique, scrape_interval="1s"))
        cli = str(REPO / ".venv" / "bin" / "pledgeflow")
        api_env = {**env, "PLEDGEFLOW_API_PORT": str(ports["api"])}
        procs = [
            stack.enter_context(process([cli, "api", "run"], api_env, tmp_path / "api.log")),
            *(
                stack.enter_context(
                    process(
                        [cli, *args],
                        {**env, **extra, "PLEDGEFLOW_METRICS_PORT": str(ports[name])},
                        tmp_path / f"{name}.log",
                    )
                )
                for name, (args, extra) in workers.items()
            ),
            stack.enter_context(
                process(
                    [
                        "prometheus",
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                        "--log.level=warn",
                    ],
                    env,
                    tmp_path / "prometheus.log",
                )
            ),
        ]
        api = f"http://127.0.0.1:{ports['api']}"
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        wait_until(lambda: httpx.get(f"{api}/readyz").status_code == 200, "API", procs, 40)
        wait_until(
            lambda: (
                series_count(prometheus, "pledgeflow_processor_recovery_seconds_count > 0")
                and all(series_count(prometheus, f'up{{job="{job}"}} == 1') for job in jobs)
            ),
            "processor recovered and every worker scraped",
            procs,
            40,
        )
        register_notifications(api, receiver)
        drive_load(api)
        wait_until(
            lambda: receiver.delivered("dash") and mail.messages_to("b-0@example.org"),
            "a webhook and an e-mail delivered",
            procs,
            30,
        )

        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        values = variable_values(dashboard, unique)
        queries = [
            (title, substitute(expr, values)) for title, expr in panel_queries(dashboard["panels"])
        ]
        assert len(queries) >= 30

        def empty() -> list[str]:
            return [f"{t}: {e}" for t, e in queries if series_count(prometheus, e) == 0]

        # The load's last counters reach Prometheus with its next scrapes (every second).
        missing: list[str] = []
        deadline = time.monotonic() + 15
        while (missing := empty()) and time.monotonic() < deadline:
            time.sleep(1)
        assert missing == [], "panels without a series:\n" + "\n".join(missing)

        # The template variables' own queries find this run.
        def label_values(label: str, match: str) -> set[str]:
            answer = httpx.get(
                f"{prometheus}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10
            )
            return set(answer.json()["data"])

        assert unique in label_values("namespace", 'up{job=~"pledgeflow-.*"}')
        assert label_values("job", f'up{{namespace="{unique}", job=~"pledgeflow-.*"}}') == set(jobs)

        # Every rule expression evaluates, and Prometheus's own evaluations report no error.
        groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        for rule in rules:
            body = query(prometheus, rule["expr"])
            assert body["status"] == "success", (rule.get("alert") or rule.get("record"), body)

        def evaluated() -> list[dict[str, Any]]:
            answer = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
            loaded = [r for g in answer["data"]["groups"] for r in g["rules"]]
            done = all(r["health"] != "unknown" for r in loaded) and len(loaded) == len(rules)
            return loaded if done else []

        loaded = wait_until(evaluated, "every rule evaluated", procs, 15)
        assert [(r["name"], r.get("lastError", "")) for r in loaded if r["health"] != "ok"] == []
