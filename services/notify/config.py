"""Settings of the notify worker (pydantic-settings, ``PLEDGEFLOW_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from services.streams.config import StreamSettings

__all__ = ["NotifySettings"]


class NotifySettings(StreamSettings):
    """Everything the notify worker needs beyond the shared stream settings (Kafka, Redis,
    topic prefix, which also prefixes notify's Redis keys, and the metrics address)."""

    #: Consumer group (faust app id) of the notify worker.
    notify_group: str = "notify"
    #: faust's data directory (it keeps nothing there with the memory store, but creates it).
    notify_data_dir: str = ".local/notify-data"
    #: Consumer group session timeout of the worker (how soon a dead worker's partitions move).
    notify_session_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Static group membership (``group.instance.id``; the pod name in deploy/k8s): a worker
    #: restarted within the session timeout gets its partitions back without a rebalance.
    notify_instance_id: str | None = None

    #: Most records applied per batch (one Redis round trip for all of them); 1 = one at a
    #: time, as before 30 Nov 2026. A batch is what faust has buffered within the next setting.
    notify_apply_batch: int = Field(default=256, ge=1)
    #: How long a batch waits for more records before it is applied.
    notify_apply_within_seconds: float = Field(default=0.005, gt=0)

    # --- webhooks ---------------------------------------------------------------------------
    #: Let webhook URLs resolve to loopback/private/link-local addresses. On for `make run`
    #: and tests (receivers on 127.0.0.1); off by default and in deploy/k8s (SSRF).
    notify_allow_private_urls: bool = False
    #: Most webhook endpoints one tenant may hold (each is a delivery per event and a row of
    #: the unpaged listing); one more is refused 409 ``endpoint_limit_reached``.
    notify_max_endpoints_per_tenant: int = Field(default=50, ge=1)
    #: Bound of one webhook POST.
    notify_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Concurrent deliveries per webhook endpoint (a slow one holds only its own slots).
    notify_endpoint_concurrency: int = Field(default=8, ge=1)
    #: Concurrent e-mails to the SMTP relay.
    notify_email_concurrency: int = Field(default=16, ge=1)

    # --- retries, circuit breaker ---------------------------------------------------------
    #: First retry delay; each further one doubles (with jitter), up to the max.
    notify_retry_initial_seconds: float = Field(default=5.0, gt=0)
    notify_retry_max_seconds: float = Field(default=3600.0, gt=0)
    #: Attempts before the dead-letter topic (about a day with the defaults) ...
    notify_max_attempts: int = Field(default=30, ge=1)
    #: ... or this long after the first attempt, whichever comes first.
    notify_retry_window_seconds: float = Field(default=86_400.0, gt=0)
    #: Consecutive failures that open an endpoint's circuit, and how long it stays open.
    notify_breaker_threshold: int = Field(default=5, ge=1)
    notify_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    #: A claimed notification is due again after this long if its worker died mid-send.
    notify_lease_seconds: float = Field(default=60.0, gt=0)
    #: Pause of the dispatcher when nothing is due.
    notify_poll_seconds: float = Field(default=0.05, gt=0)

    # --- e-mail ---------------------------------------------------------------------------
    notify_smtp_host: str = "127.0.0.1"
    notify_smtp_port: int = Field(default=1025, ge=1, le=65535)
    notify_smtp_username: str | None = None
    notify_smtp_password: str | None = None
    notify_smtp_starttls: bool | None = None
    notify_mail_sender: str = "Pledgeflow <notify@pledgeflow.local>"
    #: Right-hand side of every ``Message-ID`` (``<notification id@domain>``).
    notify_message_id_domain: str = "notify.pledgeflow.local"
