"""Wait until a local dependency answers a real request (never a fixed sleep).

Usage: wait_ready.py kafka HOST:PORT [--timeout S] [--pid PID]
       wait_ready.py redis HOST:PORT [--timeout S] [--pid PID]
Exit 0 when ready, 1 on timeout or when the watched process died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time


async def kafka_ready(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def redis_ready(address: str) -> bool:
    import redis.asyncio as aioredis

    host, port = address.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def main() -> int:
    logging.disable(logging.CRITICAL)  # aiokafka logs every refused connection while we poll
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["kafka", "redis"])
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--pid", type=int, default=None)
    args = parser.parse_args()
    probe = kafka_ready if args.what == "kafka" else redis_ready
    deadline = time.monotonic() + args.timeout
    while True:
        if await probe(args.address):
            return 0
        if not alive(args.pid):
            print(f"{args.what}: process {args.pid} exited before it was ready", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            if args.timeout > 0:
                print(
                    f"{args.what}: not ready at {args.address} after {args.timeout}s",
                    file=sys.stderr,
                )
            return 1
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
