"""``pledgeflow api run`` serves the API under either ASGI server it offers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.api import KEY_A, free_port
from tests.support.infra import REPO, kafka_bootstrap, redis_url

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_api_run_serves_readiness_and_reads_under_each_server(
    broker: object, redis_server: str, unique: str, server: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_TOPIC_PREFIX": f"{unique}.",
        "PLEDGEFLOW_API_KEYS": f"tenant-a:{KEY_A}",
        "PLEDGEFLOW_API_SERVER": server,
    }
    cli = [sys.executable, "-m", "services.cli", "api", "run", "--port", str(port)]
    proc = subprocess.Popen(cli, cwd=REPO, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{server} exited with {proc.returncode}"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{server} not ready in 60 s"
            time.sleep(0.3)
        listed = httpx.get(f"{base}/v1/campaigns", headers={"Authorization": f"Bearer {KEY_A}"})
        assert listed.status_code == 200 and listed.json() == {"data": [], "next_cursor": None}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_an_unknown_server_is_one_line_naming_the_option() -> None:
    env = {**os.environ, "PLEDGEFLOW_API_KEYS": f"t:{KEY_A}", "PLEDGEFLOW_API_SERVER": "nginx"}
    run = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert "PLEDGEFLOW_API_SERVER" in run.stderr, run.stderr
