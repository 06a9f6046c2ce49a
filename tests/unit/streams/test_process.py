"""The service process: JSON logs with correlation ids, /metrics and /ready, draining stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import urllib.error
import urllib.request

import orjson
from prometheus_client import CollectorRegistry, Counter

from services.streams import JsonFormatter, ProcessServer, Readiness, correlation_id, serve
from tests.support.api import free_port


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_log_line_is_json_with_the_correlation_id() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "pledgeflow.x", logging.INFO, __file__, 1, "hello %s", ("you",), None
    )
    token = correlation_id.set("corr-1")
    try:
        line = orjson.loads(formatter.format(record))
    finally:
        correlation_id.reset(token)
    assert line["message"] == "hello you"
    assert line["correlation_id"] == "corr-1"
    assert line["level"] == "info"
    record.__dict__["correlation_id"] = "corr-2"
    assert orjson.loads(formatter.format(record))["correlation_id"] == "corr-2"


def test_the_server_answers_metrics_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("pledgeflow_test_things", "Things.", registry=registry).inc()
    readiness = Readiness()
    server = ProcessServer("127.0.0.1", free_port(), readiness=readiness, registry=registry)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert status(f"{base}/ready") == 503
        readiness.set()
        assert status(f"{base}/ready") == 200
        assert status(f"{base}/live") == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert b"pledgeflow_test_things_total 1.0" in response.read()
    finally:
        server.close()


class Worker:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.done = asyncio.Event()

    async def start(self) -> None:
        self.events.append("start")

    async def wait(self) -> None:
        await self.done.wait()

    async def stop(self) -> None:
        self.events.append("stop")
        self.done.set()


async def test_sigterm_stops_the_worker_through_its_draining_stop() -> None:
    worker = Worker()
    readiness = Readiness()
    task = asyncio.create_task(serve(worker, readiness=readiness))
    while not readiness.is_set():  # noqa: ASYNC110 (a threading flag, not an asyncio one)
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert worker.events == ["start", "stop"]
    assert not readiness.is_set()
