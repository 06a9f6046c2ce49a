"""Where the real broker and Redis live for tests, and how to start/stop the local broker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_DIR = REPO / "deploy" / "local" / "kafka"
REDIS_DIR = REPO / "deploy" / "local" / "redis"


def kafka_bootstrap() -> str:
    """The broker tests talk to: an external cluster if given, else the local one."""
    external = os.environ.get("PLEDGEFLOW_KAFKA_BOOTSTRAP")
    if external:
        return external
    return f"127.0.0.1:{os.environ.get('PLEDGEFLOW_KAFKA_PORT', '9092')}"


def redis_url() -> str:
    return os.environ.get(
        "PLEDGEFLOW_REDIS_URL",
        f"redis://127.0.0.1:{os.environ.get('PLEDGEFLOW_REDIS_PORT', '6379')}/0",
    )


def unique_name(prefix: str = "t") -> str:
    """A name no other test (or earlier run) uses: topics, groups, transactional ids, keys."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class LocalBroker:
    """Stops and starts the broker from deploy/local (used by restart and fault tests)."""

    bootstrap: str

    @property
    def is_local(self) -> bool:
        return "PLEDGEFLOW_KAFKA_BOOTSTRAP" not in os.environ

    def start(self) -> None:
        subprocess.run([str(KAFKA_DIR / "kafka-up.sh")], check=True, cwd=REPO)

    def stop(self) -> None:
        subprocess.run([str(KAFKA_DIR / "kafka-down.sh")], check=True, cwd=REPO)

    def ensure_running(self) -> None:
        self.start()


def ensure_redis() -> None:
    subprocess.run([str(REDIS_DIR / "redis-up.sh")], check=True, cwd=REPO)


class PrivateBroker:
    """A second local broker of the test's own (free ports, its own data folder).

    Fault tests that stop the broker use one, so that neither the other tests of the session
    nor anything else on the machine loses the shared broker meanwhile.
    """

    def __init__(self, data: Path) -> None:
        import socket

        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        self.port, self.controller_port = ports
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            key: value for key, value in os.environ.items() if key != "PLEDGEFLOW_KAFKA_BOOTSTRAP"
        }
        self.env.update(
            PLEDGEFLOW_KAFKA_PORT=str(self.port),
            PLEDGEFLOW_KAFKA_CONTROLLER_PORT=str(self.controller_port),
            PLEDGEFLOW_KAFKA_DATA=str(data),
        )

    def start(self) -> None:
        self._run("kafka-up.sh")

    def stop(self) -> None:
        self._run("kafka-down.sh")

    def _run(self, script: str) -> None:
        subprocess.run(
            [str(KAFKA_DIR / script)], check=True, cwd=REPO, env=self.env, capture_output=True
        )

    def crash(self) -> None:
        """SIGKILL the broker (no clean shutdown: its logs are recovered at the next start)."""
        import signal

        pidfile = Path(self.env["PLEDGEFLOW_KAFKA_DATA"]) / "broker.pid"
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            import time

            time.sleep(0.1)
        pidfile.unlink()


class ScriptRedis:
    """A Redis of the test's own, started and restarted by the local runs' redis-up.sh."""

    def __init__(self, data: Path, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data = data
        self.env = {
            **os.environ,
            "PLEDGEFLOW_REDIS_PORT": str(self.port),
            "PLEDGEFLOW_REDIS_DATA": str(data),
        }

    def start(self) -> None:
        subprocess.run(
            [str(REDIS_DIR / "redis-up.sh")],
            check=True,
            cwd=REPO,
            env=self.env,
            capture_output=True,
        )

    def kill(self) -> None:
        pidfile = self.data / "redis.pid"
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        pidfile.unlink()

    def wipe_data(self) -> None:
        """Delete what it persisted (call while it is down): it restarts empty."""
        import shutil

        for entry in self.data.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != "redis.log":
                entry.unlink()

    def stop(self) -> None:
        subprocess.run(
            [str(REDIS_DIR / "redis-down.sh")], cwd=REPO, env=self.env, capture_output=True
        )
