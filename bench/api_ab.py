"""Interleaved A/B runs of the real pledge endpoint: this checkout against another one (an
older commit's worktree), beside the bare ASGI and bare FastAPI baselines, in the same minutes.

On a shared 2-core box one run of ``bench_api.py`` says little about a 10% change: the load
of the moment moves every figure. This runs the two versions of the real endpoint back to
back, several rounds, alternating which goes first, each under the same ``wrk -t2 -c64``
load as ``bench_api.py``, and records CPU per request and req/s for each run with the load
average. Not part of ``make bench`` (it needs a second checkout)::

    git worktree add /tmp/base <commit>
    .venv/bin/python -m bench.api_ab --base /tmp/base --rounds 4 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.bench_api import (
    CONNECTIONS,
    KEY,
    PLEDGE,
    PY,
    REPO,
    cleanup,
    create_topics,
    launch_campaigns,
    run_open_loop,
    run_wrk,
)
from bench.harness import kafka_bootstrap, redis_url
from bench.stack import free_port, tree_cpu_seconds

PATH = "/v1/campaigns/c-{n}/pledges"


class Served:
    """One uvicorn process serving ``target`` from the checkout at ``root``."""

    def __init__(self, target: str, root: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        command = [PY, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port",
                   str(self.port), "--loop", "uvloop", "--http", "httptools",
                   "--no-access-log", "--log-level", "warning"]  # fmt: skip
        paths = {**os.environ, **env, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(command, cwd=root, env=paths)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    time.sleep(1.0)
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server not ready in 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(
    name: str,
    target: str,
    root: Path,
    env: dict[str, str],
    seconds: int,
    launch: bool,
    rate: int = 0,
    open_seconds: int = 10,
) -> dict[str, Any]:
    """One server: warm-up, then ``seconds`` of closed-loop load (req/s, CPU µs per request,
    load average); with ``rate``, then as long at that fixed rate (open loop: p50/p99 ms and
    CPU µs per request)."""
    server = Served(target, root, env)
    try:
        server.wait_ready()
        if launch:
            asyncio.run(launch_campaigns(server.url, 100))
        body = orjson.dumps(PLEDGE)
        run_wrk(server.url, PATH, body, CONNECTIONS, 2)
        out: dict[str, Any] = {"name": name}
        if seconds:
            cpu = tree_cpu_seconds(server.proc.pid)
            result = run_wrk(server.url, PATH, body, CONNECTIONS, seconds)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu
            out |= {
                "rps": round(result["rps"]),
                "cpu_us": round(cpu / max(result["requests"], 1) * 1e6, 1),
                "non_2xx": result["non_2xx"],
            }
        if rate:
            cpu = tree_cpu_seconds(server.proc.pid)
            fixed = run_open_loop(server.url, rate, open_seconds)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu
            out |= {
                f"open_{rate}_p50_ms": round(fixed["p50_ms"], 2),
                f"open_{rate}_p99_ms": round(fixed["p99_ms"], 2),
                f"open_{rate}_cpu_us": round(cpu / (rate * open_seconds) * 1e6, 1),
                f"open_{rate}_non_202": fixed["non_202"],
            }
        out |= {
            "load": round(os.getloadavg()[0], 2),
            "at": time.strftime("%H:%M:%S", time.gmtime()),
        }
    finally:
        server.stop()
        if launch:
            asyncio.run(forget(env["PLEDGEFLOW_TOPIC_PREFIX"]))
    print(orjson.dumps(out).decode(), flush=True)
    return out


async def forget(prefix: str) -> None:
    """Drop the run's Redis keys (idempotency records, pending rows: about 1.5 kB a request
    on the shared Redis), so that runs never fill it."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url())
    try:
        batch = []
        async for key in client.scan_iter(match=f"{prefix}pf:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (old)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8, help="closed loop (0: none)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--rate", type=int, default=0, help="also an open loop at this rate")
    parser.add_argument("--open-seconds", type=int, default=10)
    args = parser.parse_args()
    prefix = f"bench-ab-{uuid.uuid4().hex[:6]}."
    topics = asyncio.run(create_topics(prefix))
    env = {
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_API_KEYS": f"bench:{KEY}",
        "PLEDGEFLOW_API_RATE_PER_SECOND": "1e9",
        "PLEDGEFLOW_API_RATE_BURST": "1000000000",
    }
    runs: list[dict[str, Any]] = []
    try:
        for round_ in range(args.rounds):
            order = [("old", args.base), ("new", REPO)]
            if round_ % 2:
                order.reverse()
            if not args.no_baselines and round_ in (0, args.rounds - 1):
                for name, target in (
                    ("bare_asgi", "bench.bench_api:bare_asgi_app"),
                    ("bare_fastapi", "bench.bench_api:bare_app"),
                ):
                    runs.append(measure(name, target, REPO, {}, args.seconds or 8, False))
            for name, root in order:
                target = "services.pledge.api:create_app"
                runs.append(
                    measure(
                        name, target, root, env, args.seconds, True, args.rate, args.open_seconds
                    )
                )
    finally:
        asyncio.run(cleanup(prefix, topics))
    print("median per server (cpu µs/request, req/s):")
    for name in ("bare_asgi", "bare_fastapi", "old", "new"):
        mine = [r for r in runs if r["name"] == name]
        if mine:
            line = f"  {name:>12} ({len(mine)} runs):"
            if "cpu_us" in mine[0]:
                cpu = statistics.median(r["cpu_us"] for r in mine)
                rps = statistics.median(r["rps"] for r in mine)
                line += f" {cpu:7.1f} µs  {rps:8.0f} req/s"
            if args.rate and name in ("old", "new"):
                for key in ("p50_ms", "p99_ms", "cpu_us"):
                    value = statistics.median(r[f"open_{args.rate}_{key}"] for r in mine)
                    line += f"; open {args.rate}/s {key} {value}"
            print(line)


if __name__ == "__main__":
    main()
