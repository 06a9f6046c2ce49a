"""What every Pledgeflow process does the same way: JSON logs, ``/metrics`` and ``/ready``,
signals.

* :func:`configure_logging`: one JSON object per line on stderr (``at``, ``level``,
  ``logger``, ``message``, ``correlation_id`` when known, ``error``). The correlation id comes
  from ``extra={"correlation_id": ...}`` or from :data:`correlation_id` (a context variable a
  handler sets while it works on one command or event).
* :class:`ProcessServer`: one small HTTP server per process, on loopback unless configured:
  ``/metrics`` (Prometheus text of a registry), ``/ready`` (200 once :class:`Readiness` is set,
  503 before and while draining), ``/live`` (200).
* :func:`serve`: runs a :class:`Worker` until SIGTERM/SIGINT or until it stops by itself; on
  a signal the worker's ``stop()`` finishes the in-flight work and commits before exit.
  :class:`ReaderWorker` makes an ordered stream reader such a worker.
* :func:`run_cli`: the body of every ``pledgeflow <process> run`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from services.streams.log_limits import RepeatedLogFilter
from services.streams.reader import OrderedStreamReader

__all__ = [
    "JsonFormatter",
    "LoopWorker",
    "ProcessServer",
    "ReaderWorker",
    "Readiness",
    "Worker",
    "configure_logging",
    "correlation_id",
    "run_cli",
    "serve",
]

log = logging.getLogger("pledgeflow.process")

#: The correlation id of the command or event being worked on (logged with every line).
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = record.__dict__.get("correlation_id") or correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr at ``level`` for the whole process (aiokafka's chatter at warning)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # While a broker or Redis is down, clients log the same error ~100 times a second: pass
    # each kind once per 10 s, saying how many like it were held back.
    handler.addFilter(RepeatedLogFilter(every_s=10.0))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


class Readiness:
    """A thread-safe ready flag (the HTTP server thread reads it)."""

    def __init__(self) -> None:
        self._ready = threading.Event()

    def set(self) -> None:
        self._ready.set()

    def clear(self) -> None:
        self._ready.clear()

    def is_set(self) -> bool:
        return self._ready.is_set()


class ProcessServer:
    """``/metrics``, ``/ready`` and ``/live`` on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        readiness: Readiness | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.readiness = readiness or Readiness()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/ready":
                    ok = owner.readiness.is_set()
                    self._answer(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif path == "/live":
                    self._answer(200, b"live\n")
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes every few seconds would drown the process's log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="process-server", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when 0 asked for a free one)."""
        return int(self._server.server_address[1])

    def start(self) -> ProcessServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Worker(Protocol):
    """What :func:`serve` runs: started, awaited, stopped (draining) once."""

    async def start(self) -> None: ...

    async def wait(self) -> None:
        """Return (or raise) when the worker's loop ends by itself."""
        ...

    async def stop(self) -> None:
        """Finish the in-flight work, commit, release everything."""
        ...


class LoopWorker:
    """A :class:`Worker` that runs one loop task until its stop event: ``start`` opens what
    the loop needs and starts the task, ``stop`` sets the event, lets the loop finish the
    step in flight, then closes (even when the loop failed). Subclasses give the three."""

    def __init__(self, task_name: str) -> None:
        self._task_name = task_name
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        """What comes before the loop (joining a group...)."""

    def _loop(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        """The loop, run until ``stop`` is set."""
        raise NotImplementedError

    async def _close(self) -> None:
        """What comes after the loop (leaving a group, closing clients...)."""

    async def start(self) -> None:
        await self._open()
        self._task = asyncio.create_task(self._loop(self._stop), name=self._task_name)

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self._stop.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await self._close()


class ReaderWorker(LoopWorker):
    """An :class:`~services.streams.reader.OrderedStreamReader` as a :class:`Worker`:
    ``start`` joins the group and runs the reader in the background, ``stop`` lets the step in
    flight finish (its runs handed and committed) and leaves the group."""

    def __init__(self, reader: OrderedStreamReader, *, poll_ms: int = 200) -> None:
        super().__init__(reader.group_id)
        self.reader = reader
        self._poll_ms = poll_ms

    async def _open(self) -> None:
        await self.reader.start()

    def _loop(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return self.reader.run(stop, poll_ms=self._poll_ms)

    async def _close(self) -> None:
        await self.reader.stop()


async def serve(
    worker: Worker,
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
    readiness: Readiness | None = None,
    registry: CollectorRegistry = REGISTRY,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``worker`` until SIGTERM/SIGINT (or ``stop``), serving ``/metrics`` and ``/ready``
    on ``metrics_host:metrics_port`` when the port is not 0; drain and stop on the way out."""
    readiness = readiness or Readiness()
    server = (
        ProcessServer(metrics_host, metrics_port, readiness=readiness, registry=registry).start()
        if metrics_port
        else None
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await worker.start()
        readiness.set()
        stopped = asyncio.ensure_future(stop.wait())
        ended = asyncio.ensure_future(worker.wait())
        await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        readiness.clear()
        if stop.is_set():
            log.info("signal received: draining")
        await worker.stop()
        if ended.done():
            ended.result()  # a loop that died says why
        else:
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ended
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if server is not None:
            server.close()


def run_cli(name: str, main: Callable[[], Coroutine[Any, Any, None]], *, bootstrap: str) -> None:
    """``asyncio.run(main())`` for a ``pledgeflow <name> run`` command: Kafka out of reach is
    one line and exit code 1 (its supervisor restarts it), not a traceback."""
    import typer
    from aiokafka.errors import KafkaConnectionError

    try:
        asyncio.run(main())
    except KafkaConnectionError as exc:
        typer.echo(f"{name}: Kafka at {bootstrap} unreachable: {exc}", err=True)
        raise typer.Exit(1) from None
