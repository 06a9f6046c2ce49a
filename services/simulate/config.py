"""``pledgeflow simulate``'s options: flags, with defaults from the environment ``make run``
sets up (env prefix ``PLEDGEFLOW_``). Validated in one place so that a bad flag is one line
naming it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from schemas.pledge_fields import ID_PATTERN

__all__ = ["DEV_KEY_FILE", "SimulateOptions", "default_api", "default_api_key"]

#: Where ``make run`` keeps its dev API key (deploy/local/run.sh).
DEV_KEY_FILE = Path(".local/dev-api-key")


def default_api() -> str:
    """``make run``'s API: ``http://127.0.0.1:$PLEDGEFLOW_API_PORT`` (8000)."""
    return f"http://127.0.0.1:{os.environ.get('PLEDGEFLOW_API_PORT', '8000')}"


def default_api_key() -> str:
    """``make run``'s key: the first key of ``PLEDGEFLOW_API_KEYS`` (``tenant:key,...``),
    else the dev key kept in ``.local/dev-api-key``; empty when neither exists."""
    keys = os.environ.get("PLEDGEFLOW_API_KEYS", "")
    if keys.strip():
        first = keys.split(",", 1)[0]
        return first.partition(":")[2].strip()
    try:
        return DEV_KEY_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


#: Most requests a run may plan (``rate`` × ``duration``): the whole plan is built in memory
#: before the run (about 330 MB and half a minute of CPU for a million).
MAX_REQUESTS = 1_000_000


class SimulateOptions(BaseModel):
    """Every knob of a simulation; the field names are the flags' (``--max-in-flight``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    api: str
    seed: int = 1
    #: Average requests per second over the run (launch and deadline surges go above it).
    rate: float = Field(default=20.0, gt=0, le=10_000)
    #: Seconds of pledging; every deadline falls in the last quarter of it.
    duration: float = Field(default=60.0, ge=5, le=24 * 3600)
    campaigns: int = Field(default=8, ge=1, le=10_000)
    #: Names the run's ids (default: from the seed and the time), so runs never collide.
    run_id: Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=40)] | None = None
    #: ``Prefer: wait`` seconds of each write (the decision comes back with the answer).
    wait: int = Field(default=5, ge=1, le=10)
    max_in_flight: int = Field(default=256, ge=1, le=10_000)
    #: Seconds to wait, after the last deadline, for every campaign to close and settle.
    settle_timeout: float = Field(default=60.0, ge=0)
    #: mailpit's web UI/API, to count each campaign's e-mails (None: not counted).
    mailpit: str | None = None
    #: Register a webhook endpoint on a local receiver that verifies every delivery.
    webhooks: bool = True
    receiver_host: str = "127.0.0.1"
    #: Run ``pledgeflow audit verify --from-kafka --against-readmodel`` at the end.
    audit: bool = True
    #: Last, so that a bad flag is named before a missing key.
    api_key: str

    @field_validator("duration")
    @classmethod
    def _plan_fits(cls, duration: float, info: ValidationInfo) -> float:
        rate = info.data.get("rate")
        if rate is not None and round(rate * duration) > MAX_REQUESTS:
            raise ValueError(
                f"--rate × --duration is {round(rate * duration):,} requests, at most "
                f"{MAX_REQUESTS:,} (the plan is built in memory): lower one of them"
            )
        return duration

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                f"required (no PLEDGEFLOW_API_KEYS, no make run key in {DEV_KEY_FILE})"
            )
        return value.strip()

    @field_validator("api", "mailpit")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value
