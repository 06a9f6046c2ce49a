"""Where audited events come from: an archive folder or the Kafka topics, read in parallel.

Kept as one module: the archive and Kafka readers share the partition fan-out and the
way findings are named, which must stay identical for both sources.

Every campaign's events sit in one partition number of every topic (co-partitioning), so each
partition is an independent unit of work: worker processes (``fork``, one per core by
default) verify and fold whole partitions and send back only per-campaign summaries and
findings. Findings are named by their Kafka coordinates: from the archive's sidecar index, or
recorded while consuming.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import hashlib
import multiprocessing
import os
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from services.audit.archive import Manifest, SegmentInfo, read_index, read_lines
from services.audit.engine import Finding, PartitionAuditor, PartitionResult
from services.audit.fold import CampaignFold
from services.streams.kafka_security import kafka_client_kwargs

__all__ = [
    "AuditRun",
    "KafkaSourceError",
    "audit_archive",
    "audit_kafka",
    "partition_for",
    "stop_consumer",
]

#: ``progress(done, total)`` callback of a long read.
Progress = Callable[[int, int], None]

_counter: Any = None


class KafkaSourceError(Exception):
    """The topics cannot be audited (missing, not co-partitioned, the broker stalls)."""


@dataclass
class AuditRun:
    """The merged result of auditing every partition of one source."""

    source: str
    events: int = 0
    seconds: float = 0.0
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    folds: dict[str, CampaignFold] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    rule_counts: Counter[str] = field(default_factory=Counter)
    archive_findings: list[str] = field(default_factory=list)
    unknown_types: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.findings and not self.archive_findings and not self.rule_counts

    @property
    def first(self) -> Finding | None:
        """The first bad event (see :meth:`Finding.order`)."""
        return self.findings[0] if self.findings else None

    def add_findings(self, findings: list[Finding]) -> None:
        """Append findings of a later check (after the log's own, which name events)."""
        for finding in findings:
            self.rule_counts[finding.rule] += 1
        self.findings.extend(findings)

    @classmethod
    def merge(cls, source: str, results: Sequence[PartitionResult], seconds: float) -> AuditRun:
        run = cls(source=source, seconds=seconds)
        for result in sorted(results, key=lambda r: r.partition):
            run.events += result.events
            run.summaries.update(result.summaries)
            run.folds.update(result.folds)
            run.findings.extend(result.findings)
            run.rule_counts.update(result.rule_counts)
            run.archive_findings.extend(result.archive_findings)
            run.unknown_types.update(result.unknown_types)
        run.findings.sort(key=Finding.order)
        run.summaries = dict(sorted(run.summaries.items()))
        return run


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _advance(n: int) -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += n


def _run_jobs(
    worker: Callable[[Any], list[PartitionResult]],
    jobs: list[Any],
    workers: int,
    total: int,
    progress: Progress | None,
) -> list[PartitionResult]:
    """Run ``worker`` over ``jobs`` in ``workers`` forked processes (inline when 1)."""
    global _counter
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    if workers <= 1 or len(jobs) <= 1:
        _counter = counter
        try:
            results: list[PartitionResult] = []
            for job in jobs:
                results.extend(worker(job))
                if progress is not None:
                    progress(counter.value, total)
            return results
        finally:
            _counter = None
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(counter,)) as pool:
        pending = pool.map_async(worker, jobs, chunksize=1)
        while not pending.ready():
            pending.wait(0.1)
            if progress is not None:
                progress(counter.value, total)
        if progress is not None:
            progress(counter.value, total)
        return [result for batch in pending.get() for result in batch]


# --- archive -------------------------------------------------------------------------------


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while folding: the fold allocates millions of small
    containers that form no cycles, and each full collection would walk all of them (it
    costs more than everything else the auditor does). Reference counting still frees."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _archive_partition(
    job: tuple[Path, int, list[SegmentInfo], str | None, bool],
) -> list[PartitionResult]:
    with _no_gc():
        return _audit_archive_partition(*job)


def _audit_archive_partition(
    folder: Path, partition: int, segments: list[SegmentInfo], campaign: str | None,
    keep_folds: bool,
) -> list[PartitionResult]:  # fmt: skip
    auditor = PartitionAuditor(partition, campaign=campaign)
    ordinal = 0
    starts: list[int] = []
    problems: list[str] = []
    for segment in segments:
        starts.append(ordinal)
        path = folder / segment.name
        if not path.is_file():
            problems.append(f"{segment.name}: missing (listed in the manifest)")
            continue
        digest = hashlib.sha256()
        try:
            for lines in read_lines(path, digest):
                ordinal = auditor.feed(lines, ordinal)
                _advance(len(lines))
        except (zlib.error, OSError) as exc:
            problems.append(f"{segment.name}: unreadable gzip ({exc})")
            continue
        if digest.hexdigest() != segment.sha256:
            problems.append(f"{segment.name}: SHA-256 differs from the manifest's")
        if ordinal - starts[-1] != segment.events:
            problems.append(
                f"{segment.name}: {ordinal - starts[-1]} lines, the manifest says {segment.events}"
            )
    result = auditor.finish(keep_folds=keep_folds)
    _name_archive_findings(folder, segments, starts, result.findings)
    result.archive_findings = problems
    return [result]


def _name_archive_findings(
    folder: Path, segments: list[SegmentInfo], starts: list[int], findings: list[Finding]
) -> None:
    """Fill in each finding's segment line, Kafka topic/offset and event id."""
    cache: dict[int, tuple[list[bytes], list[tuple[str, int, str]]]] = {}
    for finding in findings:
        at = bisect.bisect_right(starts, finding.ordinal) - 1
        if at < 0:
            continue
        segment = segments[at]
        line_no = finding.ordinal - starts[at]
        finding.location = f"{segment.name} line {line_no + 1}"
        if at not in cache:
            try:
                lines = [line for chunk in read_lines(folder / segment.name) for line in chunk]
            except (zlib.error, OSError):
                lines = []
            try:
                index = read_index(folder / segment.index_name)
            except (zlib.error, OSError, ValueError):
                index = []
            cache[at] = (lines, index)
        lines, index = cache[at]
        raw: Any = None
        if line_no < len(lines):
            try:
                raw = orjson.loads(lines[line_no])
            except orjson.JSONDecodeError:
                raw = None
        if isinstance(raw, dict):
            for name in ("campaign_id", "stream", "seq", "event_type", "event_id"):
                if getattr(finding, name) is None and raw.get(name) is not None:
                    setattr(finding, name, raw.get(name))
        # The index is matched by event id (robust to a deleted or swapped line), else by place.
        row = None
        if finding.event_id is not None:
            if line_no < len(index) and index[line_no][2] == finding.event_id:
                row = index[line_no]
            else:
                row = next((r for r in index if r[2] == finding.event_id), None)
        if row is None and line_no < len(index):
            row = index[line_no]
        if row is not None:
            finding.topic, finding.offset = row[0], row[1]


def audit_archive(
    folder: Path,
    *,
    workers: int | None = None,
    campaign: str | None = None,
    keep_folds: bool = False,
    progress: Progress | None = None,
) -> AuditRun:
    """Verify and fold every event of the archive in ``folder`` (one process per core)."""
    started = time.perf_counter()
    manifest = Manifest.load(folder)
    groups = manifest.by_partition()
    jobs = [
        (folder, partition, segments, campaign, keep_folds)
        for partition, segments in sorted(
            groups.items(), key=lambda item: -sum(s.events for s in item[1])
        )
    ]
    results = _run_jobs(
        _archive_partition, jobs, workers or os.cpu_count() or 1, manifest.events, progress
    )
    return AuditRun.merge(str(folder), results, time.perf_counter() - started)


# --- Kafka ---------------------------------------------------------------------------------


def reading_consumer(bootstrap: str) -> Any:
    """The auditors' consumer: no group, nothing committed, committed transactions only."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


async def stop_consumer(consumer: Any) -> None:
    """``consumer.stop()``, tolerating aiokafka 0.14's group-less coordinator re-raising the
    cancellation of its own internal task when it had not started yet."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def partition_for(campaign_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a campaign's key (murmur2)."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(campaign_id.encode()) & 0x7FFFFFFF) % partitions


async def discover(bootstrap: str, topics: list[str]) -> int:
    """The common partition count of ``topics``; KafkaSourceError if one is missing or the
    counts differ (a campaign's events would then be split across partition numbers)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), request_timeout_ms=10_000
    )
    try:
        await admin.start()
    except Exception as exc:
        raise KafkaSourceError(f"--bootstrap: cannot reach Kafka at {bootstrap} ({exc})") from None
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    counts: dict[str, int] = {}
    for topic in described:
        if topic["error_code"] != 0 or not topic["partitions"]:
            raise KafkaSourceError(
                f"--topics: topic {topic['topic']!r} does not exist on {bootstrap} "
                "(check --topic-prefix)"
            )
        counts[topic["topic"]] = len(topic["partitions"])
    if len(set(counts.values())) > 1:
        raise KafkaSourceError(f"--topics: topics are not co-partitioned: {counts}")
    return next(iter(counts.values()), 0)


def _kafka_group(
    job: tuple[str, list[str], list[int], str | None, bool, float],
) -> list[PartitionResult]:
    with _no_gc():
        return asyncio.run(_consume_group(*job))


async def _consume_group(
    bootstrap: str,
    topics: list[str],
    partitions: list[int],
    campaign: str | None,
    keep_folds: bool,
    stall_seconds: float,
) -> list[PartitionResult]:
    from aiokafka import TopicPartition

    from services.audit.kafka_reader import CommittedReader, KafkaReadError

    consumer = reading_consumer(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in partitions]
        # Assigned (so the client's metadata knows every partition's leader) and paused:
        # the records are fetched by the CommittedReader, not by the consumer's fetcher.
        consumer.assign(tps)
        consumer.pause(*tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        auditors = {p: PartitionAuditor(p, holdback=True, campaign=campaign) for p in partitions}
        ordinals = dict.fromkeys(partitions, 0)
        topic_index = {topic: i for i, topic in enumerate(topics)}
        coord_topic = {p: array("H") for p in partitions}
        coord_offset = {p: array("q") for p in partitions}
        reader = CommittedReader(consumer._client, begin, end, stall_seconds=stall_seconds)
        try:
            async for chunks in reader.chunks():
                for chunk in chunks:
                    p, n = chunk.partition, len(chunk.values)
                    coord_topic[p].extend(array("H", [topic_index[chunk.topic]]) * n)
                    coord_offset[p].extend(chunk.offsets)
                    ordinals[p] = auditors[p].feed(chunk.values, ordinals[p])
                    _advance(n)
        except KafkaReadError as exc:
            raise KafkaSourceError(str(exc)) from None
    finally:
        await stop_consumer(consumer)
    results = []
    for p in partitions:
        result = auditors[p].finish(keep_folds=keep_folds)
        for finding in result.findings:
            if finding.ordinal < len(coord_offset[p]):
                finding.topic = topics[coord_topic[p][finding.ordinal]]
                finding.offset = coord_offset[p][finding.ordinal]
        results.append(result)
    return results


async def _events_per_partition(
    bootstrap: str, topics: list[str], partitions: list[int]
) -> dict[int, int]:
    """How many records (committed or not, markers included) each partition number holds
    across ``topics`` now: the progress total and the weight of balancing workers."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in partitions]
        # Assigned first: the offset requests then find the leaders in the metadata the
        # assignment fetched, instead of retrying after a backoff (~1.3 s).
        consumer.assign(tps)
        consumer.pause(*tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        counts = dict.fromkeys(partitions, 0)
        for tp in tps:
            counts[tp.partition] += int(end[tp] - begin[tp])
        return counts
    finally:
        await stop_consumer(consumer)


def balance(weights: dict[int, int], workers: int) -> list[list[int]]:
    """Partition numbers in at most ``workers`` groups of about equal weight (largest first,
    each to the lightest group): campaigns hash unevenly, and a worker left with the small
    partitions would idle while another reads the big ones."""
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(weights))))]
    loads = [0] * len(groups)
    for partition in sorted(weights, key=lambda p: (-weights[p], p)):
        lightest = min(range(len(groups)), key=lambda i: (loads[i], len(groups[i])))
        groups[lightest].append(partition)
        loads[lightest] += weights[partition]
    return [sorted(group) for group in groups if group]


def audit_kafka(
    bootstrap: str,
    topics: list[str],
    *,
    workers: int | None = None,
    campaign: str | None = None,
    keep_folds: bool = False,
    progress: Progress | None = None,
    stall_seconds: float = 30.0,
) -> AuditRun:
    """Verify and fold every event of ``topics`` from the beginning (read_committed, no
    consumer group, nothing committed), one process per group of partitions of about equal
    size."""
    started = time.perf_counter()
    count = asyncio.run(discover(bootstrap, topics))
    partitions = list(range(count))
    if campaign is not None and count:
        partitions = [partition_for(campaign, count)]
    weights = (
        asyncio.run(_events_per_partition(bootstrap, topics, partitions)) if partitions else {}
    )
    groups = balance(weights, workers or os.cpu_count() or 1)
    jobs = [(bootstrap, topics, group, campaign, keep_folds, stall_seconds) for group in groups]
    results = _run_jobs(_kafka_group, jobs, len(groups), sum(weights.values()), progress)
    return AuditRun.merge(f"kafka {bootstrap}", results, time.perf_counter() - started)
