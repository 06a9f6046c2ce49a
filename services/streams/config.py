"""Settings every stream process shares; each process's settings class extends it.

Env prefix ``PLEDGEFLOW_`` (``PLEDGEFLOW_KAFKA_BOOTSTRAP``, ``PLEDGEFLOW_TOPIC_PREFIX``...),
built once at the entry point and passed down.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topics
from services.streams.kafka_security import KafkaSecurity

__all__ = ["StreamSettings"]


class StreamSettings(BaseSettings):
    """Where Kafka and Redis are, how topics are named, where metrics are served."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: TLS + SCRAM client security (``PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL`` etc., own prefix).
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prepended to every topic name (tests use a unique prefix per test on a shared broker).
    topic_prefix: str = ""
    #: Partition count shared by every campaign-keyed topic (co-partitioning).
    partitions: int = Field(default=6, ge=1)
    #: Address the ``/metrics`` and ``/ready`` server binds (loopback unless exposed on purpose,
    #: e.g. ``0.0.0.0`` in a pod).
    metrics_host: str = "127.0.0.1"
    #: Port of the ``/metrics`` and ``/ready`` server (0 = don't serve).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Largest event a stream reader accepts (bigger ones are dead-lettered, not parsed).
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Most events a stream reader holds back waiting for their predecessor, per partition.
    hold_limit: int = Field(default=100_000, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        # Caught here, one line naming the variable; redis-py's own refusal is a traceback.
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    def topics(self) -> Topics:
        """The topic registry under this prefix and partition count."""
        return Topics(prefix=self.topic_prefix, partitions=self.partitions)
