"""Helpers of notify's worker tests: settings, registrations, transactional campaign events,
the worker as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import decode
from schemas.envelope import Envelope
from schemas.events import Event
from schemas.topics import Topics
from services.notify.adapters.registration_store import KafkaRegistrationLog
from services.notify.directory import contact_key, contact_value, endpoint_key, endpoint_value
from services.notify.domain import RecipientKind, WebhookEndpoint
from services.notify.mail import Contact
from services.notify.webhooks import new_secret
from services.streams import ChainHeads, PartitionWriter, key_partition
from tests.support.infra import REPO
from tests.unit.notify.events import NOW


def worker_env(
    bootstrap: str, redis_url: str, prefix: str, smtp_port: int, **extra: Any
) -> dict[str, str]:
    """Environment of a notify worker isolated to one test."""
    values = {
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "PLEDGEFLOW_REDIS_URL": redis_url,
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_PARTITIONS": "2",
        "PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "true",
        "PLEDGEFLOW_NOTIFY_RETRY_INITIAL_SECONDS": "0.05",
        "PLEDGEFLOW_NOTIFY_RETRY_MAX_SECONDS": "0.2",
        "PLEDGEFLOW_NOTIFY_MAX_ATTEMPTS": "4",
        "PLEDGEFLOW_NOTIFY_LEASE_SECONDS": "3",
        "PLEDGEFLOW_NOTIFY_SMTP_PORT": str(smtp_port),
        "PLEDGEFLOW_NOTIFY_MESSAGE_ID_DOMAIN": "pf.test",
        **{f"PLEDGEFLOW_{k.upper()}": str(v) for k, v in extra.items()},
    }
    return {**os.environ, **values}


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m services.notify.app worker`` until the block ends (SIGTERM, then kill)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.notify.app", "worker", "-l", "warn"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def register(
    bootstrap: str,
    topics: Topics,
    endpoints: list[tuple[str, str, str, list[str]]],
    contacts: list[tuple[str, RecipientKind, str, str, str | None]],
) -> dict[str, str]:
    """Record endpoints ``(tenant, id, url, event_types)`` and contacts ``(tenant, kind, id,
    email, locale)`` on the compacted topics; returns each endpoint's secret by id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    secrets: dict[str, str] = {}
    try:
        log = KafkaRegistrationLog(producer)
        for tenant, endpoint_id, url, types in endpoints:
            secret = secrets[endpoint_id] = new_secret()
            ep = WebhookEndpoint(endpoint_id, tenant, url, frozenset(types), secret)
            await log.put(
                topics.notify_endpoints, endpoint_key(tenant, endpoint_id), endpoint_value(ep)
            )
        for tenant, kind, person, email, locale in contacts:
            await log.put(
                topics.notify_contacts,
                contact_key(tenant, kind, person),
                contact_value(Contact(email, locale)),
            )
    finally:
        await producer.stop()
    return secrets


class CampaignLog:
    """Writes campaign events the way the processor does: stamped, in Kafka transactions."""

    def __init__(self, bootstrap: str, topics: Topics, group: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.heads = ChainHeads()
        self.count = 0

    async def write(
        self, campaign_id: str, events: list[Event], *, abort: bool = False
    ) -> list[Envelope]:
        """One transaction holding ``events``; ``abort`` aborts it after the records are sent."""
        partition = key_partition(campaign_id.encode(), self.topics.partitions)

        async def fail(_: int) -> None:
            raise RuntimeError("aborted on purpose")

        writer = PartitionWriter(
            self.bootstrap, self.group, partition, before_commit=fail if abort else None
        )
        await writer.start()
        self.count += 1
        stream = events[0].stream
        stamped = self.heads.stamp(
            events,
            campaign_id=campaign_id,
            stream=stream,
            occurred_at=NOW,
            causation_id=f"cmd-{campaign_id}-{self.count}",
            correlation_id=f"corr-{self.count}",
        )
        records: dict[str, list[Any]] = {}
        for envelope, _, value in stamped:
            records.setdefault(self.topics.for_event(envelope.event_type), []).append(
                (campaign_id.encode(), value, [])
            )
        try:
            await writer.write(records)
            return [envelope for envelope, _, _ in stamped]
        except RuntimeError:
            if not abort:
                raise
            return []
            # as a writer would: the chain goes on from before the aborted tail
            self.heads.forget(lambda key: key[0] != campaign_id)
        finally:
            await writer.close()


async def notify_stream(bootstrap: str, topics: Topics) -> list[Envelope]:
    """Every committed event of the notify stream."""
    consumer = AIOKafkaConsumer(
        *topics.for_stream("notify"),
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[Envelope] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            for records in batch.values():
                found.extend(decode(r.value) for r in records if r.value is not None)
        return found
    finally:
        await consumer.stop()
