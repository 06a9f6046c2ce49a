"""Ingest API throughput and latency over loopback HTTP, against two baselines measured in the
same run.

Servers (each its own uvicorn process, uvloop + httptools, access log off):

(a) ``bare``  - FastAPI endpoint that only answers 202 (the HTTP ceiling of this machine);
(b) ``naive`` - FastAPI + pydantic body, one Redis ``SET NX`` for the Idempotency-Key, one
    awaited aiokafka send (acks=all, idempotent) per request, one worker;
(c) ``real``  - ``services.pledge.api`` (auth, tenancy, idempotency, rate limit, durable
    acks=all append), with ``API_WORKERS`` processes (default 1; (a) runs with the same count);
(d) ``bare_asgi`` - a pure ASGI callable answering 202 (no framework: the server's own floor);
(e) ``real_granian`` - (c) served by granian instead of uvicorn (same loop, same workers).

CPU per request (server processes, /proc) is recorded for each: the target compares the real
endpoint's with the bare ASGI app's (<= 1.5x) and its throughput with bare FastAPI's (>= 1x).
The campaigns are launched through the typed client (``services.client``) before the load,
and a client-driven run (``real_client``: every request through ``PledgeflowClient``, its
Idempotency-Key, retries and model parsing) is measured beside the protocol-level load.

Load: ``wrk`` closed loop (Debian package, installed with apt-get when missing and root) with
a Lua script giving every request its own Idempotency-Key; p99 at fixed rates with an
open-loop generator below (requests are scheduled on a fixed timetable and latency is measured
from the scheduled time, so a stalled server cannot hide its queueing: no coordinated omission).
The p99 target (25 ms at 2,000 req/s) was written for a machine whose bare endpoint answers
about 13,000 req/s; besides 2,000 req/s, p99 is also measured at the same share of this
machine's own ceiling, ``2,000 x bare / 13,000`` req/s (bare measured in the same run), and
the bare endpoint's own p99 at both rates is the latency baseline of the same run. The
generator runs on uvloop with protocol callbacks and no task per request: it shares the cores
with the server, and its own CPU would otherwise count in the server's latency.
The batch endpoint is loaded with 1,000-pledge requests.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from bench.harness import Target, kafka_bootstrap, redis_url, write_result
from bench.http_load import KeepAliveConnection
from bench.stack import free_port, tree_cpu_seconds

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
KEY = "bench-key-0123456789abcdef"
DURATION = int(os.environ.get("BENCH_API_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_API_CONNECTIONS", "64"))
WORKERS = int(os.environ.get("API_WORKERS", "1"))
OPEN_LOOP_RATE = 2000
#: Bare-endpoint req/s of the machine the p99 target was written for.
REFERENCE_CEILING = 13_000
PLEDGE = {
    "backer_id": "b-1",
    "amount_minor": 2500,
    "currency": "EUR",
    "tier_id": "t1",
    "payment_token": "tok_visa",
    "locale": "fr",
}

# --- baseline apps (imported by uvicorn in their own processes) ----------------------------


class NaivePledge(BaseModel):
    """The naive endpoint's body: a plain pydantic model."""

    backer_id: str
    amount_minor: int
    currency: str
    tier_id: str | None = None
    payment_token: str | None = None
    locale: str | None = None


def bare_app() -> Any:
    """(a) The HTTP ceiling: route + 202, nothing else."""
    from fastapi import FastAPI
    from starlette.responses import Response

    app = FastAPI()

    @app.post("/v1/campaigns/{campaign_id}/pledges", status_code=202)
    async def pledge(campaign_id: str) -> Response:
        return Response(b'{"status":"pending"}', status_code=202, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


def bare_asgi_app() -> Any:
    """(d) The server's floor: an ASGI callable that drains the body and answers 202."""
    start = {
        "type": "http.response.start",
        "status": 202,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")],
    }
    body = {"type": "http.response.body", "body": b'{"status":"pending"}'}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send(body)

    return app


def naive_app() -> Any:
    """(b) The obvious implementation: pydantic body, SET NX, one awaited send per request."""
    from contextlib import asynccontextmanager

    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer
    from fastapi import FastAPI, Header
    from fastapi.responses import JSONResponse

    topic = os.environ["BENCH_NAIVE_TOPIC"]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        state["redis"] = aioredis.Redis.from_url(redis_url())
        state["producer"] = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap(), acks="all", enable_idempotence=True
        )
        await state["producer"].start()
        yield
        await state["producer"].stop()
        await state["redis"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/campaigns/{campaign_id}/pledges", status_code=202)
    async def pledge(
        campaign_id: str, body: NaivePledge, idempotency_key: str = Header()
    ) -> JSONResponse:
        fresh = await state["redis"].set(f"naive:{idempotency_key}", b"1", nx=True, ex=86400)
        if not fresh:
            return JSONResponse({"status": "duplicate"}, status_code=409)
        value = orjson.dumps({"campaign_id": campaign_id, **body.model_dump()})
        await state["producer"].send_and_wait(topic, value, key=campaign_id.encode())
        return JSONResponse({"campaign_id": campaign_id, "status": "pending"}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({})

    return app


# --- servers -------------------------------------------------------------------------------


class Server:
    """One uvicorn process."""

    def __init__(
        self, target: str, workers: int, env: dict[str, str], server: str = "uvicorn"
    ) -> None:
        self.port = free_port()
        if server == "granian":
            command = [PY, "-m", "granian", "--interface", "asgi", "--factory",
                       "--host", "127.0.0.1", "--port", str(self.port), "--workers",
                       str(workers), "--loop", "uvloop", "--no-ws", "--no-access-log",
                       "--log-level", "warning", target]  # fmt: skip
        else:
            command = [PY, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
                       "--port", str(self.port), "--workers", str(workers), "--loop",
                       "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
                       "warning"]  # fmt: skip
        self.proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env})
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    time.sleep(1.0)  # let every worker finish its lifespan
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server not ready in 60 s")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its worker processes so far (/proc)."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- load ----------------------------------------------------------------------------------

_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer __KEY__"
local body = __BODY__
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = string.format("__RUN__-%d-%d", tid, counter)
  local path = string.format("__PATH__", counter %% 100)
  return wrk.format(nil, path, nil, body)
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = "apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)"
        subprocess.run(["bash", "-c", cmd], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench_api: wrk is required (Debian: apt-get install wrk)")
    return found


def run_wrk(url: str, path: str, body: bytes, connections: int, seconds: int) -> dict[str, float]:
    """Closed loop: ``connections`` connections each sending as fast as answers come."""
    lua = (
        _WRK_LUA.replace("__KEY__", KEY)
        .replace("__BODY__", "[==[" + body.decode() + "]==]")
        .replace("__RUN__", uuid.uuid4().hex[:8])
        .replace("__PATH__", path.replace("{n}", "%d"))
        .replace("%%", "%")
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    out = subprocess.run(
        [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         script.name, url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    total = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rps,
        "requests": float(total.group(1)) if total else 0.0,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


class _Connection(KeepAliveConnection):
    """A connection of the open-loop generator: the latency of an answer counts from when its
    request was due."""

    def __init__(self, done: Any) -> None:
        super().__init__()
        self.done = done
        self.due = 0.0

    def send(self, request: bytes, due: float) -> None:
        self.due = due
        self.transport.write(request)

    def answered(self, status: int) -> None:
        self.done(self, status, time.perf_counter() - self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.head is not None or self.due:
            self.done(self, 0, time.perf_counter() - self.due)


async def open_loop(url: str, rate: int, seconds: int, connections: int = 64) -> dict[str, float]:
    """Fixed-rate load: request i is due at t0 + i/rate; its latency counts from then.

    Requests wait in a queue when all ``connections`` are busy (their wait counts). The
    generator shares the cores with the server, so it is written to cost little: protocol
    callbacks, no task per request.
    """
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps(PLEDGE)
    run = uuid.uuid4().hex[:8].encode()
    tail = (
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    #: how late the generator got to each request: its own delay (a starved client)
    late: list[float] = []
    statuses: dict[int, int] = {}
    waiting: collections.deque[tuple[int, float]] = collections.deque()
    free: collections.deque[_Connection] = collections.deque()  # FIFO: none idles long
    total = int(rate * seconds)
    finished = loop.create_future()

    def request(i: int) -> bytes:
        return b"POST /v1/campaigns/c-%d/pledges HTTP/1.1\r\nHost: %s\r\n" \
            b"Idempotency-Key: ol-%s-%d\r\n%s" % (i % 100, host.encode(), run, i, tail)  # fmt: skip

    def take() -> _Connection | None:
        while free:
            conn = free.popleft()
            if conn.transport is not None:  # a server may close an idle connection
                return conn
        return None

    def done(conn: _Connection, status: int, latency: float) -> None:
        latencies.append(latency)
        statuses[status] = statuses.get(status, 0) + 1
        conn.due = 0.0
        if len(latencies) == total and not finished.done():
            finished.set_result(None)
        if conn.transport is None:
            return  # connection lost: it takes no more requests
        if waiting:
            i, due = waiting.popleft()
            conn.send(request(i), due)
        else:
            free.append(conn)

    for _ in range(connections):
        _, opened = await loop.create_connection(lambda: _Connection(done), host, int(port))
        await opened.ready
        free.append(opened)
    conns = list(free)
    t0 = time.perf_counter() + 0.1
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i / rate <= now:
            due = t0 + i / rate
            late.append(now - due)
            idle = take()
            if idle is not None:
                idle.send(request(i), due)
            else:
                waiting.append((i, due))
            i += 1
        if i < total:
            # Timers tick in milliseconds: waking for a shorter delay would spin. A request
            # sent up to a tick late has that delay in its latency.
            await asyncio.sleep(max(0.001, t0 + i / rate - time.perf_counter()))
    await asyncio.wait_for(finished, 120)
    elapsed = time.perf_counter() - t0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    latencies.sort()
    late.sort()
    return {
        "target_rate": float(rate),
        "rate": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
        "client_late_p99_ms": late[int(len(late) * 0.99)] * 1000,
        "non_202": float(sum(n for s, n in statuses.items() if s != 202)),
    }


_HISTOGRAMS = {
    "server": 'pledgeflow_api_request_duration_seconds_bucket{le="%s",method="POST",'
    'route="/v1/campaigns/{campaign_id}/pledges"}',
    "kafka": 'pledgeflow_api_kafka_produce_duration_seconds_bucket{kind="command",le="%s"}',
}


def histogram_counts(url: str) -> dict[str, dict[str, float]]:
    """Cumulative bucket counts of the server's request and Kafka-append histograms."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {name: {} for name in _HISTOGRAMS}
    for line in text.splitlines():
        for name, pattern in _HISTOGRAMS.items():
            head, tail = pattern.split("%s")
            if line.startswith(head) and tail in line:
                bound = line[len(head) : line.index(tail, len(head))]
                found[name][bound] = float(line.rsplit(" ", 1)[1])
    return found


def histogram_p99(before: dict[str, float], after: dict[str, float]) -> float:
    """Upper bound (ms) of the bucket holding the 99th percentile of what was observed
    between two scrapes (the server's own view: no client or socket queueing)."""
    deltas = sorted((float(bound), after[bound] - before.get(bound, 0.0)) for bound in after)
    total = deltas[-1][1] if deltas else 0.0
    for bound, count in deltas:
        if total and count >= 0.99 * total:
            return bound * 1000
    return float("nan")


def run_open_loop(url: str, rate: int, seconds: int) -> dict[str, float]:
    """:func:`open_loop` on uvloop (the generator's CPU competes with the server's)."""
    import uvloop

    return uvloop.run(open_loop(url, rate, seconds))


# --- the run -------------------------------------------------------------------------------


def scaled_open_loop_rate(bare_rps: float) -> int:
    """The open-loop rate that loads this machine as 2,000 req/s loads the reference one."""
    return max(100, round(OPEN_LOOP_RATE * bare_rps / REFERENCE_CEILING))


async def create_topics(prefix: str) -> list[str]:
    from schemas.topics import Topics, ensure_topics

    topics = Topics(prefix=prefix)
    await ensure_topics(kafka_bootstrap(), topics)
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    await admin.start()
    await admin.create_topics([NewTopic(f"{prefix}naive", 6, 1)])
    await admin.close()
    return [spec.name for spec in topics] + [f"{prefix}naive"]


async def cleanup(prefix: str, topics: list[str]) -> None:
    import redis.asyncio as aioredis
    from aiokafka.admin import AIOKafkaAdminClient

    client = aioredis.Redis.from_url(redis_url())
    for pattern in (f"{prefix}pf:*", "naive:*"):
        batch = []
        async for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


CLIENT_REQUESTS = int(os.environ.get("BENCH_API_CLIENT_REQUESTS", "5000"))
#: httpx's pool costs more CPU per request the more requests wait on it (64 in flight cost
#: twice the client CPU of 8 on the dev box).
CLIENT_CONCURRENCY = 8


async def launch_campaigns(url: str, count: int) -> None:
    """The set-up: campaigns c-0..c-{count-1} launched through the typed client."""
    from datetime import UTC, datetime, timedelta

    from services.client import PledgeflowClient

    deadline = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with PledgeflowClient(url, KEY) as client:
        for i in range(count):
            await client.launch_campaign(
                {
                    "campaign_id": f"c-{i}",
                    "title": "Bench",
                    "creator_id": "u-1",
                    "goal": {"amount_minor": 10**9, "currency": "EUR"},
                    "deadline": deadline,
                    "funding_model": "all_or_nothing",
                    "tiers": [{"tier_id": "t1", "title": "T", "min_amount_minor": 100}],
                }
            )


async def client_load(url: str, requests: int) -> dict[str, float]:
    """``requests`` pledges through :class:`PledgeflowClient`, ``CLIENT_CONCURRENCY`` at once."""
    from services.client import PledgeflowClient

    queue = iter(range(requests))
    async with PledgeflowClient(url, KEY, max_connections=CLIENT_CONCURRENCY) as client:

        async def worker() -> None:
            for n in queue:
                await client.make_pledge(f"c-{n % 100}", PLEDGE)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENT_CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return {"requests": requests, "seconds": round(elapsed, 2), "rps": round(requests / elapsed)}


def main() -> None:
    prefix = f"bench-api-{uuid.uuid4().hex[:6]}."
    topics = asyncio.run(create_topics(prefix))
    body = orjson.dumps(PLEDGE)
    batch_body = orjson.dumps(
        {
            "pledges": [
                {**PLEDGE, "tier_id": None, "campaign_id": f"c-{i % 100}"} for i in range(1000)
            ]
        }
    )
    real_env = {
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_API_KEYS": f"bench:{KEY}",
        "PLEDGEFLOW_API_RATE_PER_SECOND": "1e9",
        "PLEDGEFLOW_API_RATE_BURST": "1000000000",
    }
    path = "/v1/campaigns/c-{n}/pledges"
    results: dict[str, Any] = {}
    try:
        for name, target, workers, env, kind in (
            ("bare_asgi", "bench.bench_api:bare_asgi_app", WORKERS, {}, "uvicorn"),
            ("bare", "bench.bench_api:bare_app", WORKERS, {}, "uvicorn"),
            ("naive", "bench.bench_api:naive_app", 1, {"BENCH_NAIVE_TOPIC": f"{prefix}naive"},
             "uvicorn"),
            ("real", "services.pledge.api:create_app", WORKERS, real_env, "uvicorn"),
            ("real_granian", "services.pledge.api:create_app", WORKERS, real_env, "granian"),
        ):  # fmt: skip
            server = Server(target, workers, env, kind)
            try:
                server.wait_ready()
                if name == "real":
                    asyncio.run(launch_campaigns(server.url, 100))
                run_wrk(server.url, path, body, CONNECTIONS, 2)  # warm-up
                # CPU per request of the server: robust to other load on the machine, where
                # req/s is not (the figures below record the load average too).
                cpu = server.cpu_seconds()
                results[name] = run_wrk(server.url, path, body, CONNECTIONS, DURATION)
                cpu = server.cpu_seconds() - cpu
                results[name]["cpu_us_per_req"] = round(
                    cpu / max(results[name]["requests"], 1) * 1e6, 1
                )
                results[name]["load_average_1m"] = round(os.getloadavg()[0], 2)
                print(f"{name:>6} (workers={workers}): {results[name]}", flush=True)
                if name in ("bare", "real"):
                    scaled_rate = scaled_open_loop_rate(results["bare"]["rps"])
                    rates = (("open_loop", OPEN_LOOP_RATE), ("open_loop_scaled", scaled_rate))
                    for suffix, rate in rates:
                        key = f"{name}_{suffix}"
                        cpu = server.cpu_seconds()
                        before = histogram_counts(server.url) if name == "real" else {}
                        results[key] = run_open_loop(server.url, rate, DURATION)
                        cpu = server.cpu_seconds() - cpu
                        if name == "real":
                            after = histogram_counts(server.url)
                            # What the tail is made of: the handler's p99 and the Kafka
                            # append's (bucket bounds), beside the client-side p99 above.
                            for part in ("server", "kafka"):
                                results[key][f"{part}_p99_bucket_ms"] = histogram_p99(
                                    before[part], after[part]
                                )
                        results[key]["cpu_us_per_req"] = round(cpu / (rate * DURATION) * 1e6, 1)
                        results[key]["load_average_1m"] = round(os.getloadavg()[0], 2)
                        print(f"  open loop @ {rate}/s: {results[key]}", flush=True)
                if name == "real":
                    cpu = server.cpu_seconds()
                    batch = run_wrk(server.url, "/v1/pledges/batch", batch_body, 8, DURATION)
                    cpu = server.cpu_seconds() - cpu
                    batch["pledges_per_s"] = batch["rps"] * 1000
                    batch["cpu_us_per_pledge"] = round(
                        cpu / max(batch["requests"] * 1000, 1) * 1e6, 2
                    )
                    results["real_batch"] = batch
                    print(f"  batch: {batch}")
                    cpu = server.cpu_seconds()
                    through_client = asyncio.run(client_load(server.url, CLIENT_REQUESTS))
                    cpu = server.cpu_seconds() - cpu
                    through_client["cpu_us_per_req"] = round(
                        cpu / max(through_client["requests"], 1) * 1e6, 1
                    )
                    results["real_client"] = through_client
                    print(f"  through the client: {through_client}", flush=True)
            finally:
                server.stop()
    finally:
        asyncio.run(cleanup(prefix, topics))

    bare, naive, real = results["bare"]["rps"], results["naive"]["rps"], results["real"]["rps"]
    extra = {"workers": WORKERS, "connections": CONNECTIONS, "seconds": DURATION, **{
        f"{k}_{m}": v for k, r in results.items() for m, v in r.items()}}  # fmt: skip
    write_result(
        "api_pledge", f"POST pledge closed loop (wrk -c{CONNECTIONS}), vs naive endpoint",
        "req/s", real, baseline=("naive: pydantic + SET NX + awaited send, 1 worker", naive),
        target=Target(value=5000, ratio=1.3), extra=extra,
    )  # fmt: skip
    write_result(
        "api_pledge_vs_http_ceiling", "POST pledge closed loop, share of a bare 202 endpoint",
        "req/s", real, baseline=(f"bare FastAPI 202, {WORKERS} worker(s)", bare),
        target=Target(ratio=0.4), extra=extra,
    )  # fmt: skip
    # Latency baseline: the bare 202 endpoint under the same open-loop load (ratio = bare p99
    # / real p99: the share of the HTTP floor's tail; 1.0 would be no slower than bare).
    write_result(
        "api_pledge_p99", f"POST pledge p99 latency, open loop at {OPEN_LOOP_RATE} req/s", "ms",
        results["real_open_loop"]["p99_ms"],
        baseline=("bare FastAPI 202 endpoint, same rate", results["bare_open_loop"]["p99_ms"]),
        target=Target(value=25, lower_is_better=True), extra=extra,
    )  # fmt: skip
    scaled = results["real_open_loop_scaled"]
    write_result(
        "api_pledge_p99_scaled",
        f"POST pledge p99 latency, open loop at {scaled['target_rate']:.0f} req/s "
        f"(2,000 x this machine's bare ceiling / {REFERENCE_CEILING:,})", "ms",
        scaled["p99_ms"],
        baseline=(
            "bare FastAPI 202 endpoint, same rate", results["bare_open_loop_scaled"]["p99_ms"]
        ),
        target=Target(value=25, lower_is_better=True), extra=extra,
    )  # fmt: skip
    write_result(
        "api_pledge_cpu_vs_bare_asgi",
        "POST pledge server CPU per request vs a bare ASGI 202 app (uvicorn + httptools)",
        "us/req", results["real"]["cpu_us_per_req"],
        baseline=("bare ASGI 202 app, same server", results["bare_asgi"]["cpu_us_per_req"]),
        target=Target(ratio=round(1 / 1.5, 3), lower_is_better=True), extra=extra,
    )  # fmt: skip
    write_result(
        "api_pledge_vs_bare_fastapi", "POST pledge closed loop vs bare FastAPI 202 (throughput)",
        "req/s", real, baseline=("bare FastAPI 202", bare), target=Target(ratio=1.0),
        extra=extra,
    )  # fmt: skip
    write_result(
        "api_pledge_granian_cpu", "POST pledge server CPU per request under granian",
        "us/req", results["real_granian"]["cpu_us_per_req"],
        baseline=("same app under uvicorn + httptools", results["real"]["cpu_us_per_req"]),
        target=Target(lower_is_better=True), extra=extra,
    )  # fmt: skip
    write_result(
        "api_pledge_client", f"POST pledge through PledgeflowClient ({CLIENT_CONCURRENCY} "
        "concurrent calls)", "req/s", results["real_client"]["rps"],
        baseline=("wrk closed loop, same endpoint", real), target=Target(), extra=extra,
    )  # fmt: skip
    write_result(
        "api_batch", "POST /v1/pledges/batch (1,000 pledges/request) throughput", "pledges/s",
        results["real_batch"]["pledges_per_s"],
        baseline=("single-pledge endpoint req/s", real), target=Target(value=50_000), extra=extra,
    )  # fmt: skip


if __name__ == "__main__":
    main()
