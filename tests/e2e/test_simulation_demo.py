"""`make demo` end to end: deploy/local/demo.sh (what the target runs) on this test's own
topics, ports and Redis namespace, as a user would run it: it starts the stack, plays a short
simulation with the audit at the end, says where to look, keeps running, and Ctrl-C stops it
and everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.api import free_port
from tests.support.infra import REPO, kafka_bootstrap, redis_url, unique_name
from tests.support.invariants import wipe_namespace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = "demo-key-0123456789abcdef"


def test_make_demo_simulates_audits_says_where_to_look_and_stops_on_ctrl_c(
    broker: object, redis_server: str, tmp_path: Path
) -> None:
    prefix = f"{unique_name('demo')}."
    ports = {
        name: free_port()
        for name in (
            "API", "PROCESSOR_METRICS", "PROJECTOR_METRICS", "NOTIFY_METRICS",
            "SETTLEMENT_METRICS", "SETTLEMENT_READMODEL_METRICS", "MAILPIT_SMTP", "MAILPIT_UI",
            "PROMETHEUS",
        )
    }  # fmt: skip
    env = {
        **os.environ,
        **{f"PLEDGEFLOW_{name}_PORT": str(port) for name, port in ports.items()},
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_PARTITIONS": "2",
        "PLEDGEFLOW_API_KEYS": f"platform-demo:{KEY}",
        "PLEDGEFLOW_PROMETHEUS_DATA": str(tmp_path / "prometheus"),
        "PLEDGEFLOW_SANDBOX_PREFIX": f"{prefix}sandbox:",
        "DEMO_DURATION": "8",
        "DEMO_RATE": "5",
        "DEMO_CAMPAIGNS": "3",
        "DEMO_LOG": str(tmp_path / "stack.log"),
    }
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [str(REPO / "deploy" / "local" / "demo.sh")],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGINT reaches it like Ctrl-C
            # as from a terminal: a runner started in the background passes SIGINT ignored,
            # and a shell cannot trap a signal ignored on entry (Ctrl-C would do nothing)
            preexec_fn=_default_sigint,
        )
    api = f"http://127.0.0.1:{ports['API']}"
    try:
        deadline = time.monotonic() + 240
        while b"Ctrl-C stops it" not in out.read_bytes():
            assert demo.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.5)
        text = out.read_text(errors="replace")
        assert "audit: clean (exit 0)" in text, text
        assert "kept every promise and the audit is clean" in text, text
        assert f"API docs:     {api}/docs" in text
        assert f"http://127.0.0.1:{ports['MAILPIT_UI']}" in text
        assert f"prometheus:   http://127.0.0.1:{ports['PROMETHEUS']}" in text
        # Still running after the simulation: the API answers, mailpit holds the e-mails.
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
        mail = httpx.get(f"http://127.0.0.1:{ports['MAILPIT_UI']}/api/v1/messages", timeout=5)
        assert mail.json()["total"] > 0
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Say what did not stop (the group's processes) and what the stack last logged.
            left = subprocess.run(
                ["ps", "-o", "pid,stat,etime,args", "-s", str(demo.pid)],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            log = (tmp_path / "stack.log").read_text(errors="replace")[-6000:]
            pytest.fail(f"the demo did not stop within 60 s of Ctrl-C\n{left}\n{log}")
        # Ctrl-C stopped every process it started.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{api}/healthz", timeout=2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{ports['MAILPIT_UI']}/livez", timeout=2)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        asyncio.run(_cleanup(prefix))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _cleanup(prefix: str) -> None:
    from tests.conftest import delete_topics

    await delete_topics(kafka_bootstrap(), {prefix})
    await wipe_namespace(redis_url(), prefix)
