"""The API's ``/metrics``, ``/ready`` and ``/live`` on a port of their own.

With ``PLEDGEFLOW_METRICS_PORT`` set (k8s: 9100 on ``0.0.0.0``), they are served there by the
same small server every Pledgeflow process uses (:class:`services.streams.process.ProcessServer`)
and the public port answers 404 for ``/metrics`` and ``/readyz``: the API's NetworkPolicy lets
clients reach only the public port, and only Prometheus's namespace reaches this one, so
clients can read neither the metrics nor which dependency is down. Unset (0, the local
default), both stay on the public port as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext

from prometheus_client import CollectorRegistry

from services.pledge.api.config import ApiSettings
from services.pledge.api.ports import IngestPorts
from services.streams.process import ProcessServer, Readiness

__all__ = ["READY_POLL_SECONDS", "ops_port", "ops_port_of"]

log = logging.getLogger("pledgeflow.api")

#: How often readiness (Kafka and Redis reachable) is re-checked for ``/ready``.
READY_POLL_SECONDS = 2.0


async def _ready(ports: IngestPorts) -> bool:
    try:
        return all(await asyncio.gather(ports.bus.ready(), ports.gate.ready()))
    except Exception as exc:
        log.warning("readiness check failed: %r", exc)
        return False


@contextlib.asynccontextmanager
async def ops_port(
    host: str, port: int, registry: CollectorRegistry, ports: IngestPorts
) -> AsyncIterator[ProcessServer]:
    """Serve the ops endpoints on ``host:port`` while the API runs."""
    readiness = Readiness()
    server = ProcessServer(host, port, readiness=readiness, registry=registry).start()

    async def watch() -> None:
        while True:
            if await _ready(ports):
                readiness.set()
            else:
                readiness.clear()
            await asyncio.sleep(READY_POLL_SECONDS)

    task = asyncio.create_task(watch())
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()


def ops_port_of(
    config: ApiSettings, registry: CollectorRegistry, ports: IngestPorts
) -> AbstractAsyncContextManager[object]:
    """The ops port when ``PLEDGEFLOW_METRICS_PORT`` is set, else nothing."""
    if not config.metrics_port:
        return nullcontext()
    return ops_port(config.metrics_host, config.metrics_port, registry, ports)
