"""Settings of the pledge service: the ingest API's, on top of the processor's and the
projector's (``processor/config.py``, ``projector/config.py``, both extending the stream
runtime's :class:`~services.streams.StreamSettings`).

Env prefix ``PLEDGEFLOW_``; built once at the entry point and passed down, never read from
globals deep inside.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from services.pledge.processor.config import ProcessorSettings
from services.pledge.projector.config import ProjectorSettings


class PledgeSettings(ProcessorSettings, ProjectorSettings):
    """Everything the pledge service's processes know about their surroundings: the API's
    settings plus the processor's and the projector's (tests and the API build this one;
    each worker process reads only its own)."""

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
    #: Longest wait for the broker's acknowledgement of a command: past it the write answers
    #: 503 with Retry-After and keeps its Idempotency-Key for a retry of the same request.
    api_send_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    #: A pledge still pending this long after its command was appended is shown ``expired``
    #: (``reason: no_decision``): the processor recorded no decision for it in time. It turns
    #: into the decision if one comes later.
    api_pending_expiry_seconds: int = Field(default=3600, ge=1)
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
