"""The single registry of Kafka topics: names, partitions, key, retention, cleanup, contents.

Every campaign-keyed topic shares one partition count (co-partitioning): with Kafka's default
key partitioner a campaign's commands, events and snapshots sit in the same partition number of
every topic, so the processor owning partition *p* of ``pledge-commands`` rebuilds from
partition *p* of the event topics. The local bootstrap and the k8s KafkaTopic manifests are
generated from this module, so nothing else spells a topic name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.events import EVENT_TYPES, Stream

__all__ = [
    "CHECKPOINTS_TOPIC",
    "COMMANDS_TOPIC",
    "CONSUMERS",
    "DEFAULT_PARTITIONS",
    "DLQ_RETENTION_MS",
    "NOTIFY_CONTACTS_TOPIC",
    "NOTIFY_ENDPOINTS_TOPIC",
    "PAYMENT_TOKENS_TOPIC",
    "PAYMENT_TOKEN_RETENTION_MS",
    "SETTLEMENT_COMMANDS_TOPIC",
    "SNAPSHOTS_TOPIC",
    "SNAPSHOT_MAX_MESSAGE_BYTES",
    "TopicKind",
    "TopicSpec",
    "Topics",
    "ensure_topics",
    "unserved",
]

DEFAULT_PARTITIONS = 6
COMMANDS_TOPIC = "pledge-commands"
#: Commands for the settlement worker (refunds, payment-method fixes, revenue reports).
SETTLEMENT_COMMANDS_TOPIC = "settlement-commands"
SNAPSHOTS_TOPIC = "pledge-snapshots"
#: Signed chain heads, one record per tenant (key), compacted to the latest of each
#: (services.audit.checkpoints; exports keep every one they saw).
CHECKPOINTS_TOPIC = "audit-checkpoints"
#: Payment tokens, out of the immutable log: key ``<tenant>/<campaign>/<pledge>`` (the pledge's
#: identity, which ``PledgeMade`` carries), value the token. Compacted, so a tombstone (written
#: by settlement once the pledge no longer needs it) erases it, and deleted after
#: :data:`PAYMENT_TOKEN_RETENTION_MS` anyway (a refused pledge's token is never needed).
PAYMENT_TOKENS_TOPIC = "payment-tokens"
#: 400 days: past any campaign's deadline plus the settlement retries (+1/+3/+7 days).
PAYMENT_TOKEN_RETENTION_MS = 400 * 24 * 3600 * 1000
#: Largest record of the snapshot topic. A campaign's snapshot is ~51 bytes per pledge after
#: compression, so the broker's default 1 MiB stopped snapshots at ~18,000 pledges; 16 MiB
#: holds ~300,000 (more backers than any crowdfunding campaign has had).
SNAPSHOT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Dead letters are kept 30 days: long enough to inspect and replay, not a permanent record.
DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000
#: Consumers that own a dead-letter topic ``<consumer>.dlq`` (the processor's is
#: ``pledge-commands.dlq``, named after the topic it reads).
CONSUMERS: tuple[str, ...] = ("settlement", "notify", "readmodel", "audit")
#: Notify's compacted registration topics (keyed ``tenant/...``; a tombstone deletes, so a
#: contact's e-mail address is erasable): platforms' webhook endpoints, backers' and creators'
#: contact details.
NOTIFY_ENDPOINTS_TOPIC = "notify-endpoints"
NOTIFY_CONTACTS_TOPIC = "notify-contacts"

TopicKind = Literal[
    "event", "command", "snapshot", "dead_letter", "checkpoint", "secret", "registration"
]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as Kafka should hold it."""

    name: str
    kind: TopicKind
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    key: str = "campaign_id"
    stream: Stream | None = None
    event_types: tuple[str, ...] = ()
    replication_factor: int = 1
    extra_config: tuple[tuple[str, str], ...] = field(default=())

    @property
    def config(self) -> dict[str, str]:
        """Topic-level configs as Kafka wants them (all values are strings)."""
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **dict(self.extra_config),
        }


class Topics:
    """The registry, optionally namespaced by ``prefix`` (e.g. one per test on a shared broker).

    ``Topics()`` is production; ``Topics(prefix="t123.", partitions=3)`` gives every topic the
    same shape under isolated names.
    """

    def __init__(
        self, *, prefix: str = "", partitions: int = DEFAULT_PARTITIONS, replication_factor: int = 1
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.prefix = prefix
        self.partitions = partitions
        self.replication_factor = replication_factor
        specs: list[TopicSpec] = [
            self._spec(name, "event", -1, "delete", stream=model.stream, event_types=(name,))
            for name, model in EVENT_TYPES.items()
        ]
        specs.append(self._spec(COMMANDS_TOPIC, "command", -1, "delete"))
        specs.append(self._spec(SETTLEMENT_COMMANDS_TOPIC, "command", -1, "delete"))
        specs.append(
            self._spec(
                SNAPSHOTS_TOPIC,
                "snapshot",
                -1,
                "compact",
                # Keep only the latest snapshot per key, promptly.
                extra=(
                    ("min.cleanable.dirty.ratio", "0.1"),
                    ("max.message.bytes", str(SNAPSHOT_MAX_MESSAGE_BYTES)),
                ),
            )
        )
        specs.append(self._spec(f"{COMMANDS_TOPIC}.dlq", "dead_letter", DLQ_RETENTION_MS, "delete"))
        specs.append(
            TopicSpec(
                name=prefix + CHECKPOINTS_TOPIC,
                kind="checkpoint",
                partitions=self.partitions,
                retention_ms=-1,
                cleanup_policy="compact",
                key="tenant_id",
                replication_factor=replication_factor,
            )
        )
        specs.append(
            TopicSpec(
                name=prefix + PAYMENT_TOKENS_TOPIC,
                kind="secret",
                partitions=self.partitions,
                retention_ms=PAYMENT_TOKEN_RETENTION_MS,
                cleanup_policy="compact,delete",
                key="pledge",
                replication_factor=replication_factor,
                extra_config=(("min.cleanable.dirty.ratio", "0.1"),),
            )
        )
        specs.extend(
            self._spec(f"{consumer}.dlq", "dead_letter", DLQ_RETENTION_MS, "delete")
            for consumer in CONSUMERS
        )
        specs.extend(
            self._spec(
                name,
                "registration",
                -1,
                "compact",
                key="tenant_id",
                extra=(("min.cleanable.dirty.ratio", "0.1"),),
            )
            for name in (NOTIFY_ENDPOINTS_TOPIC, NOTIFY_CONTACTS_TOPIC)
        )
        self._specs = {spec.name: spec for spec in specs}

    def _spec(
        self,
        base: str,
        kind: TopicKind,
        retention_ms: int,
        cleanup: Literal["delete", "compact"],
        *,
        stream: Stream | None = None,
        event_types: tuple[str, ...] = (),
        extra: tuple[tuple[str, str], ...] = (),
        key: str = "campaign_id",
    ) -> TopicSpec:
        return TopicSpec(
            name=self.prefix + base,
            kind=kind,
            partitions=self.partitions,
            retention_ms=retention_ms,
            cleanup_policy=cleanup,
            key=key,
            stream=stream,
            event_types=event_types,
            replication_factor=self.replication_factor,
            extra_config=extra,
        )

    def all(self) -> list[TopicSpec]:
        """Every topic, in a stable order."""
        return list(self._specs.values())

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._specs.values())

    def get(self, name: str) -> TopicSpec:
        """The spec of a full (prefixed) topic name; KeyError if it is not in the registry."""
        return self._specs[name]

    @property
    def commands(self) -> str:
        """The command topic (``pledge-commands``)."""
        return self.prefix + COMMANDS_TOPIC

    @property
    def settlement_commands(self) -> str:
        """The settlement worker's command topic (``settlement-commands``)."""
        return self.prefix + SETTLEMENT_COMMANDS_TOPIC

    @property
    def checkpoints(self) -> str:
        """The compacted topic of signed checkpoints (key: tenant id)."""
        return self.prefix + CHECKPOINTS_TOPIC

    @property
    def payment_tokens(self) -> str:
        """The compacted, erasable topic of payment tokens (key: ``<campaign>/<pledge>``)."""
        return self.prefix + PAYMENT_TOKENS_TOPIC

    @property
    def snapshots(self) -> str:
        """The compacted processor-snapshot topic."""
        return self.prefix + SNAPSHOTS_TOPIC

    @property
    def notify_endpoints(self) -> str:
        """Compacted topic of the platforms' webhook endpoints (notify)."""
        return self.prefix + NOTIFY_ENDPOINTS_TOPIC

    @property
    def notify_contacts(self) -> str:
        """Compacted topic of backers' and creators' contact details (notify)."""
        return self.prefix + NOTIFY_CONTACTS_TOPIC

    def for_event(self, event_type: str) -> str:
        """Topic carrying ``event_type`` (named exactly as the type, plus the prefix)."""
        if event_type not in EVENT_TYPES:
            raise KeyError(f"unknown event type {event_type!r}")
        return self.prefix + event_type

    def event_topics(self) -> dict[str, str]:
        """``event_type -> topic name`` for every event type."""
        return {event_type: self.prefix + event_type for event_type in EVENT_TYPES}

    def for_stream(self, stream: Stream) -> list[str]:
        """Every event topic written by ``stream``: what an in-order consumer subscribes to."""
        return [spec.name for spec in self._specs.values() if spec.stream == stream]

    def dead_letter(self, consumer: str) -> str:
        """Dead-letter topic of ``consumer`` (``"pledge-commands"`` for the processor)."""
        name = f"{self.prefix}{consumer}.dlq"
        if name not in self._specs:
            known = ", ".join([COMMANDS_TOPIC, *CONSUMERS])
            raise KeyError(f"no dead-letter topic for {consumer!r} (known: {known})")
        return name


async def ensure_topics(
    bootstrap: str, topics: Topics | Iterable[TopicSpec], *, timeout_ms: int = 30_000
) -> list[str]:
    """Create the registry's topics that are missing on the broker; return the names created.

    Idempotent: existing topics are left alone (their partition count is not changed, since
    repartitioning would break co-partitioning), and a concurrent creator winning the race
    (TopicAlreadyExistsError) is fine.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    # PLEDGEFLOW_KAFKA_* client security (TLS + SCRAM in prod), like every other client.
    from services.streams.kafka_security import kafka_client_kwargs

    specs = topics.all() if isinstance(topics, Topics) else list(topics)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), request_timeout_ms=timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        for spec in missing:
            new_topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                topic_configs=spec.config,
            )
            try:
                response = await admin.create_topics([new_topic], timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                continue
            for topic_error in getattr(response, "topic_errors", ()):
                code = topic_error[1]
                if code == TopicAlreadyExistsError.errno:
                    break
                if code != 0:
                    raise RuntimeError(f"creating topic {spec.name!r} failed: {topic_error!r}")
            else:
                created.append(spec.name)
        if created:
            await _wait_until_served(admin, specs, timeout_ms / 1000)
        return created
    finally:
        await admin.close()


def unserved(described: Iterable[dict[str, Any]], wanted: dict[str, int]) -> list[str]:
    """The topics of ``wanted`` (name -> partition count) that ``described`` (an admin
    ``describe_topics`` answer) does not show with every partition led by a broker."""
    served = {t["topic"]: t["partitions"] for t in described if t.get("error_code", 0) == 0}
    return [
        name
        for name, count in wanted.items()
        if name not in served
        or len(served[name]) != count
        or any(p.get("leader", -1) < 0 for p in served[name])
    ]


async def _wait_until_served(admin: Any, specs: list[TopicSpec], within: float) -> None:
    """Return once every partition of ``specs`` has a leader in the broker's metadata.

    Creation is acknowledged by the controller before the broker serves the new partitions;
    a consumer subscribing in that window sees no partitions and waits for its next metadata
    refresh, so callers that start consuming right away must not return earlier.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    wanted = {spec.name: spec.partitions for spec in specs}
    while True:
        if not unserved(await admin.describe_topics(list(wanted)), wanted):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topics not served by the broker after {within}s")
        await asyncio.sleep(0.1)
