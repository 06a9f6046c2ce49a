"""Settings of the pledge service (processor, read-model projector, ingest API).

One pydantic-settings class, env prefix ``PLEDGEFLOW_``; built once at the entry point and
passed down, never read from globals deep inside.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
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
    #: Generation-0 threshold of Python's cyclic GC set by a started processor (0 = leave the
    #: interpreter's): the hot path allocates many short-lived acyclic objects, and the
    #: default 700 runs a collection every few commands. The processor also freezes what a
    #: rebuild loaded (``gc.freeze``) so that full collections don't rescan it.
    processor_gc_gen0_threshold: int = Field(default=50_000, ge=0)
    #: Create the registry's missing topics when the processor starts (idempotent).
    processor_ensure_topics: bool = True

    # --- ingest API and read model (issue 6) ------------------------------------------------
    #: ``tenant:key`` pairs, comma separated; keys are hashed (SHA-256) when loaded.
    api_keys: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    #: uvicorn worker processes of ``pledgeflow api run``.
    api_workers: int = Field(default=1, ge=1)
    #: ASGI server of ``pledgeflow api run``: ``uvicorn`` (uvloop + httptools) or ``granian``.
    api_server: Literal["uvicorn", "granian"] = "uvicorn"
    #: Largest request body accepted (bytes); larger answers 413.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Token bucket per API key: sustained requests per second and burst size.
    api_rate_per_second: float = Field(default=20_000.0, gt=0)
    api_rate_burst: int = Field(default=40_000, ge=1)
    #: How long a finished request's response is replayed for the same Idempotency-Key.
    api_idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    #: How long an in-flight request holds its Idempotency-Key (a crashed request frees it).
    api_idempotency_lock_seconds: int = Field(default=30, ge=1)
    #: Upper bound of ``Prefer: wait=N``.
    api_max_wait_seconds: int = Field(default=10, ge=0, le=60)
    #: Least time between two produce requests of one API process (ms): under load the
    #: requests of this period share one produce request; after a quiet period a command is
    #: sent at once. Caps the produce-request rate, whose cost barely depends on its size.
    api_produce_interval_ms: float = Field(default=4.0, ge=0, le=1000)
    #: Most items in one ``POST /v1/pledges/batch``.
    api_batch_max_items: int = Field(default=1000, ge=1)
    #: Key of the listing cursors' HMAC (unset: derived from ``api_keys``).
    api_cursor_secret: SecretStr | None = None
    #: Consumer group of the read-model projector on the campaign event topics.
    readmodel_group: str = "pledge-readmodel"
    #: How long the projector keeps a command's decision for ``Prefer: wait`` (seconds).
    readmodel_decision_ttl_seconds: int = Field(default=600, ge=1)
