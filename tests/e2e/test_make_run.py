"""`make run` end to end: the real processes under honcho, driven over HTTP like a platform.

Runs deploy/local/run.sh (what `make run` calls) on this test's own topics, ports and Redis
namespace, pledges through the API, stops it with Ctrl-C (SIGINT), starts it again and checks
that the data is still there and the processor carries on from the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.client import PledgeflowClient
from services.pledge.api.models import CampaignView, EventView, PledgeDecided
from tests.support.api import free_port
from tests.support.infra import REPO, kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration

KEY = "e2e-key-0123456789abcdef"


@contextmanager
def running_stack(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`deploy/local/run.sh` until it prints that everything is ready; Ctrl-C on exit."""
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(REPO / "deploy" / "local" / "run.sh")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGINT reaches it like Ctrl-C
        )
    try:
        deadline = time.monotonic() + 150
        while b"Pledgeflow is running." not in log.read_bytes()[start:]:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


#: Every process of `make run` that serves metrics, as the run's Prometheus names its job.
JOBS = {
    "pledgeflow-api",
    "pledgeflow-processor",
    "pledgeflow-projector",
    "pledgeflow-notify",
    "pledgeflow-settlement",
    "pledgeflow-settlement-readmodel",
}


def scraped_jobs(prometheus: str, within: float = 30.0) -> set[str]:
    """The jobs the run's Prometheus scrapes successfully (waits for every one, or times out)."""
    deadline = time.monotonic() + within
    jobs: set[str] = set()
    while time.monotonic() < deadline:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"}, timeout=5)
        jobs = {series["metric"]["job"] for series in answer.json()["data"]["result"]}
        if jobs >= JOBS:
            break
        time.sleep(0.5)
    return jobs


def pledge(client: httpx.Client, campaign: str, n: int) -> httpx.Response:
    return client.post(
        f"/v1/campaigns/{campaign}/pledges",
        headers={"Idempotency-Key": f"pledge-{n}", "Prefer": "wait=10"},
        json={
            "pledge_id": f"p-{n}",
            "backer_id": f"b-{n}",
            "amount_minor": 2500,
            "currency": "EUR",
        },
    )


def test_make_run_serves_pledges_stops_on_ctrl_c_and_keeps_data(
    broker: object, redis_server: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_TOPIC_PREFIX": f"{unique_name('e2e')}.",
        "PLEDGEFLOW_PARTITIONS": "2",
        "PLEDGEFLOW_API_PORT": str(port),
        "PLEDGEFLOW_PROCESSOR_METRICS_PORT": str(free_port()),
        "PLEDGEFLOW_PROJECTOR_METRICS_PORT": str(free_port()),
        "PLEDGEFLOW_NOTIFY_METRICS_PORT": str(free_port()),
        "PLEDGEFLOW_SETTLEMENT_METRICS_PORT": str(free_port()),
        "PLEDGEFLOW_SETTLEMENT_READMODEL_METRICS_PORT": str(free_port()),
        "PLEDGEFLOW_MAILPIT_SMTP_PORT": str(free_port()),
        "PLEDGEFLOW_MAILPIT_UI_PORT": str(free_port()),
        "PLEDGEFLOW_API_KEYS": f"platform-e2e:{KEY}",
        "PLEDGEFLOW_PROMETHEUS_PORT": str(free_port()),
        "PLEDGEFLOW_PROMETHEUS_DATA": str(tmp_path / "prometheus"),
    }
    log = tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    with running_stack(env, log) as first:
        with httpx.Client(base_url=base, headers=headers, timeout=15) as client:
            launched = client.post(
                "/v1/campaigns",
                headers={"Idempotency-Key": "launch-1", "Prefer": "wait=10"},
                json={
                    "campaign_id": "c-e2e",
                    "title": "Mon album",
                    "creator_id": "u-9",
                    "goal": {"amount_minor": 5000, "currency": "EUR"},
                    "deadline": "2099-12-31T23:59:59Z",
                    "funding_model": "all_or_nothing",
                },
            )
            assert launched.status_code == 201, launched.text
            assert pledge(client, "c-e2e", 1).status_code == 201
            summary = client.get("/v1/campaigns/c-e2e").json()
        assert summary["total"] == {"amount_minor": 2500, "currency": "EUR"}
        projector = httpx.get(
            f"http://127.0.0.1:{env['PLEDGEFLOW_PROJECTOR_METRICS_PORT']}/metrics", timeout=5
        ).text
        assert 'pledgeflow_readmodel_events_applied_total{event_type="PledgeMade"} 1.0' in projector
        prometheus = f"http://127.0.0.1:{env['PLEDGEFLOW_PROMETHEUS_PORT']}"
        assert f"prometheus:   {prometheus}" in log.read_text()
        assert scraped_jobs(prometheus) == JOBS
    assert first.returncode is not None
    # Ctrl-C stopped every process it started: nothing answers on the API port any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)

    # A second run keeps the data and the processor resumes from the log (seq goes on); this
    # time through the typed client, as an integrator would.
    with running_stack(env, log):
        again, summary, pledges, events = asyncio.run(second_run(base))
    assert isinstance(again, PledgeDecided) and again.seq == 3
    assert summary.total.amount_minor == 5000 and summary.total.currency == "EUR"
    assert summary.pledge_count == 2
    assert summary.goal_reached_at is not None
    assert pledges == ["p-1", "p-2"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.event_type for e in events][:3] == ["CampaignLaunched", "PledgeMade", "PledgeMade"]


async def second_run(base: str) -> tuple[Any, CampaignView, list[str], list[EventView]]:
    """Pledge again, read the campaign, list its pledges and events, through the client."""
    async with PledgeflowClient(base, KEY, timeout=15) as api:
        again = await api.make_pledge(
            "c-e2e", {"pledge_id": "p-2", "backer_id": "b-2", "amount_minor": 2500,
                      "currency": "EUR"}, wait=10,
        )  # fmt: skip
        summary = await api.get_campaign("c-e2e")
        pledges = [p.pledge_id async for p in api.pledges("c-e2e", status="accepted")]
        events = [e async for e in api.events("c-e2e")]
    return again, summary, pledges, events
