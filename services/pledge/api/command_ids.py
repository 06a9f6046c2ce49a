"""What the API stamps a command with: its deterministic id and its issue time, both cheap.

The command id is ``uuid5(tenant, Idempotency-Key)`` (plus the item's index in a batch), and
generated pledge/campaign ids derive from it, so a retried request produces the very same
command, which the processor ignores the second time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from uuid import UUID, uuid5

__all__ = [
    "COMMAND_NAMESPACE",
    "batch_command_ids",
    "command_id_for",
    "issued_at",
    "timestamp_text",
]

#: uuid5 namespace of command ids (uuid5(NAMESPACE_URL, "https://pledgeflow.dev/ns/commands")).
COMMAND_NAMESPACE = uuid5(
    UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "https://pledgeflow.dev/ns/commands"
)
_NAMESPACE_BYTES = COMMAND_NAMESPACE.bytes

#: The RFC 4122 variant bits (10xx) set on the first hex digit of the clock sequence.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def command_id_for(tenant_id: str, idempotency_key: str, index: int | None = None) -> str:
    """Deterministic command id: the same tenant + key (+ batch index) always gives the same."""
    name = (
        f"{tenant_id}\n{idempotency_key}"
        if index is None
        else f"{tenant_id}\n{idempotency_key}\n{index}"
    )
    return _uuid5(hashlib.sha1(_NAMESPACE_BYTES + name.encode()))


def batch_command_ids(tenant_id: str, idempotency_key: str, indexes: list[int]) -> list[str]:
    """``command_id_for(tenant_id, idempotency_key, i)`` for every ``i``, hashing the shared
    prefix once."""
    copy = hashlib.sha1(_NAMESPACE_BYTES + f"{tenant_id}\n{idempotency_key}\n".encode()).copy
    variant = _VARIANT
    out = []
    for index in indexes:
        digest = copy()
        digest.update(b"%d" % index)
        x = digest.hexdigest()  # as _uuid5, inlined: this runs for every item of a batch
        out.append(f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}")
    return out


def _uuid5(digest: Any) -> str:
    """``str(uuid.uuid5(...))`` from the SHA-1 of namespace + name, without building a UUID
    object (a third of a batch item's CPU): version 5 and the variant set on the hex text."""
    x = digest.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


#: (Unix second, its canonical text up to the seconds) of the last :func:`issued_at` call.
_clock: tuple[int, str] = (-1, "")


def timestamp_text(ns: int) -> str:
    """``format_timestamp`` of the UTC instant ``ns`` nanoseconds after the epoch, truncated to
    microseconds (a test pins the two); the seconds' text is reused within a second."""
    global _clock
    second, rest = divmod(ns, 1_000_000_000)
    if second != _clock[0]:
        _clock = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_clock[1]}.{rest // 1000:06d}Z"


def issued_at() -> str:
    """The canonical text of now (a command's ``issued_at``) without a datetime round trip."""
    return timestamp_text(time.time_ns())
