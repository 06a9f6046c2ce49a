"""Settings of the auditors' CLI (env prefix ``PLEDGEFLOW_``); options override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.streams.kafka_security import KafkaSecurity


class AuditSettings(BaseSettings):
    """Where the auditor looks when no option says otherwise."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: TLS + SCRAM client security (``PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL`` etc., own prefix).
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    #: Prepended to every topic name (and read-model key namespace).
    topic_prefix: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Ed25519 private key (PKCS#8 PEM) the checkpointer signs with; see docs/audit.md.
    checkpoint_key_file: Path | None = None
    #: Seconds between interval checkpoints of the tenants whose chains moved.
    checkpoint_interval_seconds: float = Field(default=300.0, gt=0)
    #: Address the checkpointer's ``/metrics`` server binds (``0.0.0.0`` in a pod).
    metrics_host: str = "127.0.0.1"
    #: The checkpointer's ``/metrics`` port (0: not served).
    metrics_port: int = Field(default=0, ge=0)
