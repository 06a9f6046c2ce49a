"""Settings of the pledge service (processor, read-model projector, ingest API).

One pydantic-settings class, env prefix ``PLEDGEFLOW_``; built once at the entry point and
passed down, never read from globals deep inside.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PledgeSettings(BaseSettings):
    """Everything the pledge service needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prepended to every topic name (tests use a unique prefix per test on a shared broker).
    topic_prefix: str = ""
    #: Partition count shared by every campaign-keyed topic (co-partitioning).
    partitions: int = Field(default=6, ge=1)
    #: Consumer group of the processor on ``pledge-commands``.
    processor_group: str = "pledge-processor"
    #: Most commands decided and written in one Kafka transaction.
    processor_batch_max: int = Field(default=2000, ge=1)
    #: Write a snapshot of a partition's campaigns every this many events.
    snapshot_every_events: int = Field(default=50_000, ge=1)
    #: Seconds between deadline sweeps of open campaigns.
    deadline_sweep_seconds: float = Field(default=1.0, gt=0)
    #: Kickstarter's rule: refuse in the last 24 h a cancellation that drops the total below goal.
    refuse_late_cancellation_below_goal: bool = True
    #: Port of the Prometheus /metrics endpoint of workers (0 = don't serve).
    metrics_port: int = Field(default=0, ge=0)
    #: Static group membership id of this processor worker (e.g. the pod name): a restarted
    #: worker takes its partitions back at once instead of after a session timeout.
    processor_instance_id: str | None = None
    #: Longest wait of one poll of ``pledge-commands`` (also bounds the deadline sweep delay).
    processor_poll_ms: int = Field(default=100, ge=1)
    #: Kafka transaction timeout of the processor's producers.
    processor_transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    #: Consumer group session timeout (how soon a dead worker's partitions move).
    processor_session_timeout_ms: int = Field(default=10_000, ge=1000)
    #: Create the registry's missing topics when the processor starts (idempotent).
    processor_ensure_topics: bool = True
