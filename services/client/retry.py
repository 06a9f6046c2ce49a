"""When the client retries: capped exponential back-off with full jitter, or the server's
``Retry-After`` (delta-seconds or an HTTP date) when it gives one."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

__all__ = ["RetryPolicy", "retry_after"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry: ``attempts`` in all, back-off ``base * 2**n`` capped
    at ``cap`` seconds with full jitter; a ``Retry-After`` is honoured up to ``max_wait``."""

    attempts: int = 5
    base: float = 0.1
    cap: float = 5.0
    max_wait: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to sleep before attempt ``attempt + 1``."""
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent/invalid."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
