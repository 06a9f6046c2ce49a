"""Standard Webhooks signing: the headers a receiver verifies with any Standard Webhooks library.

``webhook-id`` is the notification id (the same on every retry and repeat, so a receiver can
de-duplicate), ``webhook-timestamp`` the send time in Unix seconds (receivers reject old ones:
replays), ``webhook-signature`` ``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body`` with each
active secret of the endpoint (space separated during a secret rotation).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from standardwebhooks import Webhook

__all__ = ["SECRET_PREFIX", "body_bytes", "new_secret", "signed_headers"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in a stable order."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def signed_headers(
    message_id: str, sent_at: datetime, body: bytes, secrets_: Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers plus the content type."""
    if not secrets_:
        raise ValueError("an endpoint needs at least one signing secret")
    text = body.decode()
    signatures = [Webhook(s).sign(message_id, sent_at, text) for s in secrets_]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }
