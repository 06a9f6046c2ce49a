"""API keys per platform (tenant), held only as SHA-256 digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas.tenancy import TENANT_PATTERN, valid_tenant
from services.pledge.api.problems import ProblemError

__all__ = ["ApiKeys", "Principal", "anonymous_bucket"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pledgeflow"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and the digest of the key used (rate limits are per key)."""

    tenant_id: str
    key_hash: str


class ApiKeys:
    """``{sha256(key): tenant}``; the clear keys are dropped once hashed."""

    def __init__(self, digests: dict[str, str]) -> None:
        self._by_digest = dict(digests)

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        """``"tenant-a:key-a,tenant-b:key-b"`` -> keys; ValueError names a malformed entry."""
        digests: dict[str, str] = {}
        for index, entry in enumerate(part.strip() for part in spec.split(",")):
            if not entry:
                continue
            tenant, sep, key = entry.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise ValueError(f"PLEDGEFLOW_API_KEYS entry {index + 1}: expected tenant:key")
            if not valid_tenant(tenant.strip()):
                raise ValueError(
                    f"PLEDGEFLOW_API_KEYS entry {index + 1}: tenant must match {TENANT_PATTERN}"
                )
            digests[_digest(key.strip())] = tenant.strip()
        return cls(digests)

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an ``Authorization: Bearer <key>`` header, or a 401 problem."""
        if not authorization:
            raise ProblemError(
                "unauthorized", "Authorization: Bearer <api key> is required", headers=_CHALLENGE
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ProblemError(
                "unauthorized", "expected Authorization: Bearer <api key>", headers=_CHALLENGE
            )
        digest = _digest(token)
        tenant = self._by_digest.get(digest)
        if tenant is None:
            # The lookup is on a digest, so its timing tells nothing about the stored keys.
            raise ProblemError("unauthorized", "unknown API key", headers=_CHALLENGE)
        return Principal(tenant, digest)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def anonymous_bucket(address: str) -> str:
    """The rate-limit bucket of requests without a valid key, per client address (a digest,
    like a key's: bucket names never hold an address in clear)."""
    return "anon" + _digest(address)
