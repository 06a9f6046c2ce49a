"""The Pledgeflow API's typed async client: ``from services.client import PledgeflowClient``."""

from services.client.client import PledgeflowClient, RetryPolicy
from services.client.errors import (
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    InternalError,
    InvalidCursor,
    NotFound,
    PayloadTooLarge,
    PledgeflowError,
    RateLimited,
    Refused,
    RequestInProgress,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

__all__ = [
    "IdempotencyKeyRequired",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidCursor",
    "NotFound",
    "PayloadTooLarge",
    "PledgeflowClient",
    "PledgeflowError",
    "RateLimited",
    "Refused",
    "RequestInProgress",
    "RetryPolicy",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]
