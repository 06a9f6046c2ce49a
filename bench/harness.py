"""Shared plumbing for benchmarks: where the infrastructure is, and the result file format.

Every benchmark compares itself with a baseline measured in the same run (the machine has two
noisy cores, so absolute figures drift between runs; ratios are what targets are checked on).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"
_VERSIONS = ("aiokafka", "faust-streaming", "pydantic", "orjson", "fastapi", "redis")


def kafka_bootstrap() -> str:
    return os.environ.get("PLEDGEFLOW_KAFKA_BOOTSTRAP") or (
        f"127.0.0.1:{os.environ.get('PLEDGEFLOW_KAFKA_PORT', '9092')}"
    )


def redis_url() -> str:
    return os.environ.get(
        "PLEDGEFLOW_REDIS_URL",
        f"redis://127.0.0.1:{os.environ.get('PLEDGEFLOW_REDIS_PORT', '6379')}/0",
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class Target:
    """What `met` means: value >= `value` (absolute) and ratio >= `ratio` (vs. the baseline).

    For lower-is-better metrics (latency) set `lower_is_better`: value <= `value`, and the
    ratio is baseline/value so that a bigger ratio is still better.
    """

    value: float | None = None
    ratio: float | None = None
    lower_is_better: bool = False


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Every topic a bench made under ``prefix`` (and faust's, named after an app id that
    starts with it): a broker carrying the topics of every earlier run restarts slowly."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def write_result(
    name: str,
    metric: str,
    unit: str,
    value: float,
    *,
    baseline: tuple[str, float] | None,
    target: Target,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write bench/results/<name>.json in the format DESIGN.md fixes, and return it."""
    ratio = None
    if baseline is not None and baseline[1] and value:
        ratio = baseline[1] / value if target.lower_is_better else value / baseline[1]
    met = True
    if target.value is not None:
        met &= value <= target.value if target.lower_is_better else value >= target.value
    if target.ratio is not None:
        met &= ratio is not None and ratio >= target.ratio
    result: dict[str, Any] = {
        "name": name,
        "metric": metric,
        "unit": unit,
        "value": round(value, 3),
        "baseline": None
        if baseline is None
        else {"name": baseline[0], "value": round(baseline[1], 3)},
        "ratio": None if ratio is None else round(ratio, 3),
        "target": {"value": target.value, "ratio": target.ratio},
        "met": bool(met),
        "machine": machine(),
        "versions": versions(),
        "seed": seed,
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if extra:
        result["extra"] = extra
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


async def produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[bytes, bytes]],
    *,
    linger_ms: int,
    max_batch_size: int,
) -> None:
    """Write ``(key, value)`` records to ``topic`` (``acks=all``) and wait for all of them:
    the commands a bench preloads before it starts a clock."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_batch_size=max_batch_size
    )
    await producer.start()
    try:
        for key, value in items:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def launch_command(campaign_id: str, title: str) -> bytes:
    """An encoded keep-it-all ``LaunchCampaign`` of ``campaign_id`` (tenant ``tenant-1``, a
    goal no bench reaches, deadline a month out): the campaign a bench's probes pledge to."""
    from schemas import LaunchCampaign, encode_command

    now = datetime.now(UTC)
    return encode_command(
        LaunchCampaign.model_validate(
            {
                "command_id": f"launch-{campaign_id}",
                "tenant_id": "tenant-1",
                "correlation_id": f"corr-{campaign_id}",
                "issued_at": now,
                "campaign_id": campaign_id,
                "creator_id": "creator-1",
                "title": title,
                "goal": {"amount_minor": 10**9, "currency": "EUR"},
                "deadline": now + timedelta(days=30),
                "funding_model": "keep_it_all",
                "settlement_mode": "authorize_then_capture",
                "commission_bps": 500,
            }
        )
    )


class Stopwatch:
    """Wall-clock seconds of a block; `perf_counter` so it is monotonic."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
