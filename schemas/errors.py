"""The contract's exceptions, in one place.

``SchemaError``
  base of everything raised by ``schemas`` about bad data.
``DecodeError(SchemaError, ValueError)``
  bytes from Kafka or an archive that cannot become a valid envelope or command: malformed
  JSON, unknown ``event_type``/``command_type``, unreadable ``schema_version``, invalid field.
  Consumers catch exactly this and route the message to their dead-letter topic; the message
  is one line naming the offending field.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["DecodeError", "SchemaError", "describe_validation_error"]


class SchemaError(Exception):
    """Base of the contract's data errors."""


class DecodeError(SchemaError, ValueError):
    """A message that cannot be decoded; send it to the dead-letter topic, do not crash."""


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line naming the first bad field: ``payload.amount.currency: unknown currency ...``."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    if not location and first["type"].startswith("union_tag"):
        # A bad or missing discriminator: name the tag field itself (e.g. "command_type").
        location = str(first.get("ctx", {}).get("discriminator", "")).strip("'")
    if prefix:
        location = f"{prefix}.{location}" if location else prefix
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    suffix = f" (+{more} more)" if more else ""
    if not location:
        # Model-level checks already start with the field they are about ("stream: ...").
        return f"{message}{suffix}" if ": " in message else f"<root>: {message}{suffix}"
    return f"{location}: {message}{suffix}"
