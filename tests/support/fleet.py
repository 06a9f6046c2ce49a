"""Several workers of one service in one consumer group, and what the group looks like.

The multi-worker fault tests (``tests/faults/test_*_rebalance.py``) run each worker as the
real entry point in a subprocess (``pledgeflow processor run``, ``pledgeflow readmodel run``)
and inject faults with signals: SIGTERM, SIGKILL, and SIGSTOP/SIGCONT for a zombie (a worker
frozen long enough for the group to give its partitions away, then resumed with its open
transaction and in-memory state). The group is observed from outside with the admin client:
who is a member, which partitions each owns, and how long each partition's committed offset
stood still while work was waiting (how long it was unavailable).

Workers are started from ``pledgeflow`` subcommands and ``PLEDGEFLOW_*`` variables only, so
the harness keeps working when a service's modules move; a new service (settlement, notify)
joins by giving its command and environment to :class:`Fleet`. :func:`fault_run` is the frame
every such test shares: the seed, the topics, the admin client, the tallies, and a teardown
that stops the workers before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from schemas.topics import Topics, ensure_topics
from tests.support.infra import REPO
from tests.support.worker import ServiceProcess


class Member(ServiceProcess):
    """One worker of a fleet; adds the zombie's signals to :class:`ServiceProcess`."""

    #: stopped on purpose (SIGTERM/SIGKILL) and not restarted yet
    down = False

    def start(self) -> None:
        super().start()
        self.down = False

    def kill(self) -> None:
        super().kill()
        self.down = True

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets, transaction and memory, but sends nothing
        (no heartbeat, no commit) until :meth:`resume`."""
        assert self.alive(), self.logs()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM and wait for the graceful exit (it must exit on its own, and cleanly)."""
        assert self.proc is not None
        assert self.alive(), self.logs()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.down = True
        assert code == 0, f"exit code {code} after SIGTERM\n{self.logs()}"

    def full_log(self) -> str:
        """Everything the current run of this worker logged so far (``logs()`` is its tail)."""
        return (self.log_dir / f"{self.name}-{self.starts}.log").read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time the running worker used so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """Workers of one service started with ``command`` and ``env`` (plus, per worker, the
    variable ``instance_env`` set to its name when the service takes a static member id)."""

    command: list[str]
    env: dict[str, str]
    log_dir: Path
    instance_env: str | None = None
    members: dict[str, Member] = field(default_factory=dict)

    def add(self, name: str, extra_env: dict[str, str] | None = None) -> Member:
        env = {**self.env, **(extra_env or {})}
        if self.instance_env is not None:
            env[self.instance_env] = name
        member = Member(self.command, env, self.log_dir, name)
        self.members[name] = member
        member.start()
        return member

    def stop_all(self) -> None:
        for member in self.members.values():
            if member.alive():
                member.resume()  # a frozen process ignores SIGTERM until it runs again
            member.stop()

    def assert_alive(self) -> None:
        for name, member in self.members.items():
            assert member.down or member.alive(), f"{name} died\n{member.logs()}"


async def metric(port: int, name: str) -> float:
    """The value of the unlabelled sample ``name`` a worker serves on ``/metrics``."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not served on port {port}")


def service_env(**settings: str | int) -> dict[str, str]:
    """The environment of a worker: this one's plus ``PLEDGEFLOW_<NAME>`` per setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
    env.update({f"PLEDGEFLOW_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONPATH"] = str(REPO)
    return env


@dataclass(frozen=True)
class GroupView:
    """A consumer group as the coordinator describes it."""

    state: str
    #: member (its ``group.instance.id`` when static) -> partition numbers it owns (of any
    #: subscribed topic)
    owners: dict[str, frozenset[int]]

    def owner_of(self, partition: int) -> str | None:
        for member, partitions in self.owners.items():
            if partition in partitions:
                return member
        return None

    def stable_with(self, members: Iterable[str] | int, partitions: int) -> bool:
        """Stable, exactly these members (or this many), each owning some of the partitions,
        and every partition owned."""
        if self.state != "Stable":
            return False
        if isinstance(members, int):
            if len(self.owners) != members:
                return False
        elif set(self.owners) != set(members):
            return False
        if not all(self.owners.values()):
            return False
        owned = set().union(*self.owners.values()) if self.owners else set()
        return owned == set(range(partitions))


async def describe_group(admin: AIOKafkaAdminClient, group: str) -> GroupView:
    response = (await admin.describe_consumer_groups([group]))[0]
    _error, _group_id, state, _ptype, _protocol, members, *_ = response.groups[0]
    owners: dict[str, frozenset[int]] = {}
    for member in members:
        # aiokafka speaks DescribeGroups v0-v3, which has no group.instance.id; the broker
        # names a static member "<group.instance.id>-<uuid4>" (a dynamic one "<client.id>-
        # <uuid4>", the same client id for every worker: those get a "#n" suffix).
        member_id, *_, assignment = member
        name = member_id[:-37] if len(member_id) > 37 and member_id[-37] == "-" else member_id
        while name in owners:
            name += "#"
        numbers: set[int] = set()
        if assignment:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment)
            for _topic, partitions in decoded.assignment:
                numbers.update(partitions)
        owners[name] = frozenset(numbers)
    return GroupView(state=state, owners=owners)


async def wait_group(
    admin: AIOKafkaAdminClient,
    group: str,
    ready: Callable[[GroupView], bool],
    *,
    within: float,
    fleet: Fleet | None = None,
    what: str = "the group",
) -> tuple[GroupView, float]:
    """Poll the group until ``ready(view)``; returns the view and the seconds it took."""
    started = time.monotonic()
    view = None
    while True:
        try:
            view = await describe_group(admin, group)
        except KafkaError:
            view = None
        if view is not None and ready(view):
            return view, time.monotonic() - started
        if fleet is not None:
            fleet.assert_alive()
        assert time.monotonic() - started < within, f"{what} not ready after {within}s: {view}"
        await asyncio.sleep(0.2)


class StallWatch:
    """Samples a group's committed offsets and the topics' ends every ``every`` seconds and
    keeps, per partition number, the longest time its committed offset stood still while
    records were waiting past it: how long the partition was unavailable.

    On topics written in transactions (``transactional``) the end offset counts the commit
    marker, which no consumer reads or commits past: a gap of one is idle there."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: list[str],
        partitions: int,
        *,
        transactional: bool = False,
        every: float = 0.2,
    ) -> None:
        self.slack = 1 if transactional else 0
        self.bootstrap = bootstrap
        self.group = group
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.every = every
        #: partition number -> (since when it waits without progress) for the current stall
        self._since: dict[TopicPartition, float] = {}
        self._last: dict[TopicPartition, int] = {}
        #: (start, seconds, partition) of every stall longer than ``every * 3``
        self.stalls: list[tuple[float, float, int]] = []
        self._task: asyncio.Task[None] | None = None

        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed"
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                committed = await self._admin.list_consumer_group_offsets(self.group)
                ends = await self._consumer.end_offsets(self.tps)
            except KafkaError:
                continue
            now = time.monotonic()
            for tp in self.tps:
                offset = committed[tp].offset if tp in committed else 0
                waiting = offset + self.slack < ends[tp]
                moved = offset != self._last.get(tp)
                self._last[tp] = offset
                if waiting and not moved:
                    self._since.setdefault(tp, now - self.every)
                else:
                    self._close(tp, now)

    def _close(self, tp: TopicPartition, now: float) -> None:
        since = self._since.pop(tp, None)
        if since is not None and now - since > self.every * 3:
            self.stalls.append((since, now - since, tp.partition))

    def longest_after(self, moment: float, until: float | None = None) -> float:
        """Longest stall that began at or after ``moment`` (and before ``until``), counting
        the stalls still going on so far (a partition not yet taken over is the longest)."""
        now = time.monotonic()
        ongoing = [(since, now - since, tp.partition) for tp, since in self._since.items()]
        return max(
            (
                seconds
                for start, seconds, _ in self.stalls + ongoing
                if start >= moment - self.every and (until is None or start < until)
            ),
            default=0.0,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        now = time.monotonic()
        for tp in list(self._since):
            self._close(tp, now)
        if self._task is not None:
            await self._consumer.stop()
            await self._admin.close()


async def wait_advanced(
    bootstrap: str, group: str, topics: list[str], partitions: Iterable[int], within: float
) -> None:
    """Wait until the group's committed offset moved on each of ``partitions`` of ``topics``
    that has records waiting (their new owners took them over and made progress on them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in partitions]
        start = await admin.list_consumer_group_offsets(group)
        first = {tp: start[tp].offset if tp in start else 0 for tp in tps}
        deadline = time.monotonic() + within
        while True:
            now = await admin.list_consumer_group_offsets(group)
            ends = await consumer.end_offsets(tps)
            stuck = [
                tp for tp in tps if (now[tp].offset if tp in now else 0) <= first[tp] < ends[tp]
            ]
            if not stuck:
                return
            assert time.monotonic() < deadline, "no progress on " + ", ".join(
                f"{tp.topic}[{tp.partition}] committed {first[tp]} end {ends[tp]}" for tp in stuck
            )
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await admin.close()


@dataclass
class FaultRun:
    """The frame of one multi-worker fault test (made by :func:`fault_run`): a seeded
    ``rng``, the test's topics (created), an admin client, the figures and fault counts it
    prints, and the fleets and watches its teardown stops."""

    bootstrap: str
    redis_url: str
    log_dir: Path
    topics: Topics
    rng: random.Random
    admin: AIOKafkaAdminClient
    figures: dict[str, float] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    fleets: list[Fleet] = field(default_factory=list)
    watches: list[StallWatch] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.topics.prefix

    def service_env(self, **settings: str | int) -> dict[str, str]:
        """:func:`service_env` for this run's broker, Redis, prefix and partitions."""
        return service_env(
            kafka_bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            topic_prefix=self.prefix,
            partitions=self.topics.partitions,
            **settings,
        )

    def fleet(self, command: list[str], env: dict[str, str], instance_env: str) -> Fleet:
        """A :class:`Fleet` logging under this run, stopped by its teardown."""
        fleet = Fleet(command, env, self.log_dir, instance_env=instance_env)
        self.fleets.append(fleet)
        return fleet

    def watch(self, group: str, topics: list[str], *, transactional: bool = False) -> StallWatch:
        """A :class:`StallWatch` of ``group`` (the test starts it), stopped by the teardown."""
        watch = StallWatch(
            self.bootstrap, group, topics, self.topics.partitions, transactional=transactional
        )
        self.watches.append(watch)
        return watch

    def stop_workers(self) -> None:
        for fleet in self.fleets:
            fleet.stop_all()

    async def static_restart(self, member: Member, session_s: float) -> float:
        """SIGTERM ``member`` (its graceful stop timed) and start it again within its session
        timeout ``session_s``, then wait past that timeout: had the old process not been
        replaced by the same static member, it would expire now. Returns when it began."""
        t = time.monotonic()
        member.terminate()
        self.faults["SIGTERM"] += 1
        self.figures["graceful_stop_s"] = time.monotonic() - t
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        member.start()
        self.faults["static restart within the session timeout"] += 1
        assert time.monotonic() - t < session_s - 3, "too slow to test"
        await asyncio.sleep(max(0.0, t + session_s + 1 - time.monotonic()))
        return t


@contextlib.asynccontextmanager
async def fault_run(
    bootstrap: str, redis_url: str, log_dir: Path, *, prefix: str, partitions: int
) -> AsyncIterator[FaultRun]:
    """A :class:`FaultRun` (its seed printed, so a failure can be replayed); on exit every
    worker is stopped first (nothing may keep running), then the watches and the admin."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    topics = Topics(prefix=prefix, partitions=partitions)
    await ensure_topics(bootstrap, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    run = FaultRun(bootstrap, redis_url, log_dir, topics, random.Random(seed), admin)
    try:
        yield run
    finally:
        run.stop_workers()
        for watch in run.watches:
            await watch.stop()
        await admin.close()


async def audit_verify(bootstrap: str, prefix: str, redis_url: str) -> tuple[int, str]:
    """``pledgeflow audit verify --from-kafka --against-readmodel``: exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", "verify", "--from-kafka",
        "--against-readmodel", "--bootstrap", bootstrap, "--topic-prefix", prefix,
        "--redis-url", redis_url, "--workers", "1",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """A one-shot ``pledgeflow`` command (e.g. ``readmodel rebuild``); fails on non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-4000:]
    return output
