"""Long-running ``pledgeflow`` processes of a test, and waiting on them.

Shared by the tests that start whole stacks as real subprocesses (the live dashboard, the
seeded simulation, the Kafka ACL tests): each process logs to its own file and is stopped
(SIGTERM, then SIGKILL after 20 s) when the test leaves the ``with`` block.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.infra import REPO


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` in a subprocess (cwd: the repository), its output in ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(probe: Any, what: str, procs: list[subprocess.Popen[bytes]], within: float) -> Any:
    """``probe()``'s first truthy value (an HTTP error counts as not yet); fails at once when
    one of ``procs`` exited, or after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        for proc in procs:
            assert proc.poll() is None, f"{proc.args!r} exited while waiting for {what}"
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        time.sleep(0.2)
