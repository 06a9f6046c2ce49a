"""Every error of the API as an RFC 9457 problem document, built in one place.

``type`` is a stable URI per kind of problem (clients key on it, never on ``title`` or
``detail``); validation problems list the offending fields in ``errors``; refusals by the
processor carry its stable ``reason`` code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "ProblemError",
    "field_errors",
    "problem_body",
    "problem_response",
    "redis_unavailable",
    "refusal",
    "validation_problem",
]

PROBLEM_BASE = "https://pledgeflow.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

#: slug -> (status, title): the catalogue of problem types.
TYPES: dict[str, tuple[int, str]] = {
    "validation-error": (422, "The request is not valid"),
    "bad-request": (400, "Malformed request header"),
    "idempotency-key-required": (400, "Idempotency-Key header required"),
    "idempotency-key-reused": (422, "Idempotency-Key reused with a different request"),
    "request-in-progress": (409, "A request with this Idempotency-Key is still in progress"),
    "unauthorized": (401, "Missing or unknown API key"),
    "not-found": (404, "Not found"),
    "invalid-cursor": (400, "Cursor not issued for this listing"),
    "method-not-allowed": (405, "Method not allowed"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "rate-limited": (429, "Too many requests"),
    "refused": (409, "Refused by the campaign's rules"),
    "unavailable": (503, "A dependency is unavailable; retry later"),
    "internal-error": (500, "Internal error"),
}


def problem_body(
    slug: str,
    *,
    detail: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
    reason: str | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    """The problem document for ``slug`` (a key of :data:`TYPES`)."""
    default_status, title = TYPES[slug]
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status or default_status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    if reason is not None:
        body["reason"] = reason
    return body


class ProblemError(Exception):
    """Raised anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        slug: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail or slug)
        self.slug = slug
        self.detail = detail
        self.errors = errors
        self.reason = reason
        self.headers = dict(headers or {})
        self.status = status or TYPES[slug][0]

    def body(self, instance: str | None) -> dict[str, Any]:
        return problem_body(
            self.slug,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
            reason=self.reason,
            status=self.status,
        )


def problem_response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def _field(loc: tuple[int | str, ...], prefix: str) -> str:
    parts = [str(part) for part in loc if part not in ("body", "function-after")]
    # Tagged-union and constrained-type steps are pydantic internals, not field names.
    parts = [p for p in parts if not p.startswith(("function-", "constrained-"))]
    path = ".".join(parts)
    if prefix:
        return f"{prefix}.{path}" if path else prefix
    return path or "body"


def field_errors(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """``[{field, message}]`` for every error of a pydantic validation."""
    out: list[dict[str, str]] = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        field = _field(tuple(item["loc"]), prefix)
        if item["type"] == "json_invalid":
            field, message = "body", f"malformed JSON: {message}"
        out.append({"field": field, "message": message})
    return out


def validation_problem(
    error: ValidationError | list[dict[str, str]], prefix: str = ""
) -> ProblemError:
    """422 naming every offending field."""
    errors = error if isinstance(error, list) else field_errors(error, prefix)
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return ProblemError("validation-error", f"invalid field(s): {fields}", errors=errors)


def refusal(reason: str, detail: str) -> ProblemError:
    """409 for a command the processor refused, with its stable reason code."""
    return ProblemError("refused", detail or reason, reason=reason)


def redis_unavailable(instance: str | None = None) -> Response:
    """The 503 of a request that could not reach Redis. Retrying with the same
    Idempotency-Key is safe: a command that did reach Kafka is never decided twice."""
    body = problem_body("unavailable", detail="Redis is unavailable; retry", instance=instance)
    return problem_response(body, {"Retry-After": "1"})
