"""The keep-alive HTTP/1.1 connection of the benches' open-loop load generators
(``bench_api``, ``bench_e2e_latency``).

The generator shares the cores with the server it measures, so it is written to cost little:
an ``asyncio.Protocol`` with one request in flight at a time, the answer's status line and
``Content-Length`` parsed in ``data_received`` (no task, stream or response object per
request). Subclasses say what a request carries and what an answer does.
"""

from __future__ import annotations

import asyncio
from typing import Any


class KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection: :meth:`answered` is called with each response's status."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = b""
        self.head: bytes | None = None
        self.length = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                self.length = 0
                for line in self.head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        self.length = int(line[15:])
                        break
            if len(self.buffer) < self.length:
                return
            status = int(self.head.split(b" ", 2)[1])
            self.head, self.buffer = None, self.buffer[self.length :]
            self.answered(status)

    def answered(self, status: int) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
