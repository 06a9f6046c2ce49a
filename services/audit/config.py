"""Settings of the auditors' CLI (env prefix ``PLEDGEFLOW_``); options override them."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    """Where the auditor looks when no option says otherwise."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: Prepended to every topic name (and read-model key namespace).
    topic_prefix: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
