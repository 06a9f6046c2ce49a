"""stripe-mock (Stripe's official API mock) for the Stripe adapter's tests: installed by the
project's script when missing (pinned), started on a free loopback port, stopped afterwards."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.api import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "local" / "stripe-mock" / "install.sh"
BINARY = ROOT / ".local" / "bin" / "stripe-mock"


@contextlib.contextmanager
def stripe_mock() -> Iterator[str]:
    """Yield the base URL of a running stripe-mock."""
    subprocess.run([str(INSTALL)], check=True, timeout=600)
    port = free_port()
    process = subprocess.Popen(
        [str(BINARY), "-http-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stripe-mock did not start on port {port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
