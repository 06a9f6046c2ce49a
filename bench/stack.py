"""The real Pledgeflow processes as subprocesses, for the whole-system benchmarks
(``bench_e2e_latency``, ``bench_recovery``, ``bench_e2e_rss``).

Each service is its real entry point (``python -m services.cli ...``), isolated by a topic
prefix (Kafka topics, consumer groups, Redis namespace) and free ports, its output in a log
file. The helpers read what the benches report from ``/proc``: CPU seconds and resident memory
of a process, how busy the whole machine was (2 cores shared with other work: figures say how
noisy the run was), and consumer-group lag (to know when a service has caught up).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

#: ``pledgeflow`` sub-commands of every long-running service.
COMMANDS: dict[str, list[str]] = {
    "api": ["api", "run"],
    "processor": ["processor", "run", "--log-level", "warning"],
    "projector": ["readmodel", "run", "--log-level", "warning"],
    "settlement": ["settlement", "run"],
    "notify": ["notify", "worker", "-l", "warn"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS``; 0 for a zombie, which has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (uvicorn's workers, for instance)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (a server's workers); a child that
    just ended counts nothing."""
    total = 0.0
    for one in [pid, *children(pid)]:
        try:
            total += cpu_seconds(one)
        except OSError:
            continue
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class MachineLoad:
    """Busy cores of the whole machine between construction and :meth:`busy_cores`."""

    def __init__(self) -> None:
        self.start = machine_ticks()

    def busy_cores(self) -> float:
        busy, total = machine_ticks()
        spent = total - self.start[1]
        return 0.0 if spent <= 0 else (busy - self.start[0]) / spent * (os.cpu_count() or 1)


def stack_env(
    bootstrap: str, redis_url: str, prefix: str, partitions: int, **extra: str
) -> dict[str, str]:
    """The environment of every service of one run: only this run's ``PLEDGEFLOW_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
    env.update(
        PLEDGEFLOW_KAFKA_BOOTSTRAP=bootstrap,
        PLEDGEFLOW_REDIS_URL=redis_url,
        PLEDGEFLOW_TOPIC_PREFIX=prefix,
        PLEDGEFLOW_PARTITIONS=str(partitions),
        PLEDGEFLOW_METRICS_PORT="0",
    )
    env.update(extra)
    return env


class Service:
    """One service process (``python -m services.cli <command>``), its log in ``log_dir``."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, **extra_env: str) -> None:
        self.name = name
        self.env = {**env, **extra_env}
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *COMMANDS[self.name]],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and its children (a server's workers)."""
        return [self.pid, *children(self.pid)]

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PrivateRedis:
    """A redis-server of the bench's own on a free port, no persistence, ``maxmemory`` of its
    own: 100,000 campaigns' read model does not fit beside everyone's data in the shared
    Redis (512 MiB, ``noeviction``: filling it would refuse other people's writes), and its
    ``used_memory`` is a figure of the run."""

    def __init__(self, log_dir: Path, maxmemory: str = "4gb") -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log_dir / "redis.log"
        self.maxmemory = maxmemory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        import redis

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--maxmemory", self.maxmemory,
                 "--maxmemory-policy", "noeviction", "--dir", str(self.log.parent)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis-server not answering on {self.port}")

    def used_memory(self) -> int:
        import redis

        return int(redis.Redis.from_url(self.url).info("memory")["used_memory"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def stop_all(services: Iterable[Service]) -> None:
    for service in services:
        service.stop()


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    within: float,
    what: str,
    services: Iterable[Service] = (),
    every: float = 0.2,
) -> None:
    """Poll ``check`` until true; fail early when a service died, or after ``within`` s."""
    watched = list(services)
    deadline = time.monotonic() + within
    while not await check():
        for service in watched:
            service.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {within} s")
        await asyncio.sleep(every)


async def group_lag(bootstrap: str, group: str, topics: Iterable[str], partitions: int) -> int:
    """Records of ``topics`` not yet committed by consumer group ``group`` (all partitions;
    a partition the group never committed counts whole)."""
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await consumer.stop()
        await admin.close()
    lag = 0
    for tp in tps:
        done = committed.get(tp)
        offset = done.offset if done is not None and done.offset >= 0 else 0
        lag += max(0, ends[tp] - offset)
    return lag
