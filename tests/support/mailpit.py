"""A private mailpit (SMTP server + HTTP API) on free loopback ports, for e-mail tests.

The binary is installed by the project's own script (deploy/local/mailpit/install.sh: pinned,
idempotent) when missing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import free_port
from tests.support.infra import REPO

INSTALL = REPO / "deploy/local/mailpit/install.sh"
BINARY = REPO / ".local/bin/mailpit"


@dataclass(frozen=True)
class Mailpit:
    """A running mailpit: where to send (``smtp_port``) and where to read (``api``)."""

    smtp_port: int
    api: str

    def messages_to(self, address: str) -> list[dict[str, Any]]:
        """Summaries of the messages sent to ``address`` (newest first)."""
        answer = httpx.get(f"{self.api}/api/v1/search", params={"query": f"to:{address}"})
        answer.raise_for_status()
        return list(answer.json()["messages"])

    def message(self, message_id: str) -> dict[str, Any]:
        """One message in full (``Text``, ``HTML``, ``MessageID``, ``Subject``, ...)."""
        answer = httpx.get(f"{self.api}/api/v1/message/{message_id}")
        answer.raise_for_status()
        return dict(answer.json())


@contextmanager
def running_mailpit(log: Path, *, max_messages: int | None = None) -> Iterator[Mailpit]:
    """Start mailpit on free ports; stop it afterwards. It keeps its newest 500 messages
    unless ``max_messages`` says otherwise."""
    subprocess.run([str(INSTALL)], check=True)
    smtp, http = free_port(), free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BINARY),
                "--smtp",
                f"127.0.0.1:{smtp}",
                "--listen",
                f"127.0.0.1:{http}",
                *(["--max", str(max_messages)] if max_messages is not None else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            api = f"http://127.0.0.1:{http}"
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mailpit exited: {log.read_text()}")
                try:
                    if httpx.get(f"{api}/livez", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("mailpit did not answer within 30 s")
                time.sleep(0.1)
            yield Mailpit(smtp, api)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
