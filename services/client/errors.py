"""Problem documents (RFC 9457) as typed exceptions.

The API names every kind of error by a stable ``type`` URI; the client raises one exception
class per type (falling back on the status), each carrying the parsed problem, so callers
catch :class:`Refused` or :class:`NotFound` rather than compare status codes.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from services.pledge.api.models import FieldError, Problem
from services.pledge.api.problems import PROBLEM_BASE

__all__ = [
    "IdempotencyKeyRequired",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidCursor",
    "NotFound",
    "PayloadTooLarge",
    "PledgeflowError",
    "RateLimited",
    "Refused",
    "RequestInProgress",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_for",
]


class PledgeflowError(Exception):
    """An error answer of the API (``problem`` is its problem document)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail or problem.type}")
        self.problem = problem

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def detail(self) -> str | None:
        return self.problem.detail

    @property
    def errors(self) -> list[FieldError]:
        """The offending fields (validation problems)."""
        return self.problem.errors or []


class ValidationFailed(PledgeflowError):
    """422: invalid field(s), named in :attr:`errors`."""


class IdempotencyKeyRequired(PledgeflowError):
    """400: missing or malformed Idempotency-Key."""


class IdempotencyKeyReused(PledgeflowError):
    """422: the Idempotency-Key was used before with another request."""


class InvalidCursor(PledgeflowError):
    """400: a cursor of another tenant or listing, or an altered one."""


class Unauthorized(PledgeflowError):
    """401: missing or unknown API key."""


class NotFound(PledgeflowError):
    """404: no such campaign or pledge for this tenant."""


class Refused(PledgeflowError):
    """409: the processor refused the command; :attr:`reason` is its stable code."""

    @property
    def reason(self) -> str | None:
        return self.problem.reason


class RequestInProgress(PledgeflowError):
    """409: a request with the same Idempotency-Key is still in flight (retried)."""


class PayloadTooLarge(PledgeflowError):
    """413: body over the API's limit."""


class UnsupportedMediaType(PledgeflowError):
    """415: body not JSON."""


class RateLimited(PledgeflowError):
    """429: the API key's rate limit (retried, honouring Retry-After)."""


class Unavailable(PledgeflowError):
    """503: Kafka or Redis unavailable (retried, honouring Retry-After)."""


class InternalError(PledgeflowError):
    """500: unexpected server error."""


_BY_TYPE: dict[str, type[PledgeflowError]] = {
    "validation-error": ValidationFailed,
    "idempotency-key-required": IdempotencyKeyRequired,
    "idempotency-key-reused": IdempotencyKeyReused,
    "invalid-cursor": InvalidCursor,
    "unauthorized": Unauthorized,
    "not-found": NotFound,
    "refused": Refused,
    "request-in-progress": RequestInProgress,
    "payload-too-large": PayloadTooLarge,
    "unsupported-media-type": UnsupportedMediaType,
    "rate-limited": RateLimited,
    "unavailable": Unavailable,
    "internal-error": InternalError,
}
_BY_STATUS: dict[int, type[PledgeflowError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    404: NotFound,
    409: Refused,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    500: InternalError,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_for(status: int, body: bytes) -> PledgeflowError:
    """The exception of an error answer (a body that is no problem document still gives one)."""
    try:
        problem = Problem.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        text = body[:200].decode("utf-8", "replace")
        problem = Problem(type="about:blank", title=f"HTTP {status}", status=status, detail=text)
    slug = problem.type.removeprefix(PROBLEM_BASE)
    cls = _BY_TYPE.get(slug) or _BY_STATUS.get(problem.status) or PledgeflowError
    return cls(problem)
