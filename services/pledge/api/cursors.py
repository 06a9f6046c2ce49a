"""Opaque, tamper-evident listing cursors.

A cursor is ``<position>.<mac>``, both base64url: the position (the last id or seq a page
showed) and an HMAC-SHA256 (truncated to 128 bits) over the tenant, the listing (route, its
campaign and status filter) and the position. A cursor is accepted only by the listing and
the tenant it was issued for: another tenant's cursor, a cursor of another listing or
filter, or an edited one fails the MAC and is answered with an ``invalid-cursor`` problem.
The position itself is not secret (it is an id the page showed); the MAC only makes it
unforgeable, so one key serves every API replica (it is derived from the API keys unless set).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from services.pledge.api.problems import ProblemError

__all__ = ["CursorCodec"]

_MAC_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Issues and checks the cursors of one API deployment (one secret)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, tenant_id: str, listing: str, position: bytes) -> bytes:
        message = b"%s\n%s\n%s" % (tenant_id.encode(), listing.encode(), position)
        return hmac.digest(self._secret, message, hashlib.sha256)[:_MAC_BYTES]

    def encode(self, tenant_id: str, listing: str, position: str) -> str:
        """The cursor that resumes ``listing`` after ``position`` for ``tenant_id``."""
        raw = position.encode()
        return f"{_b64(raw)}.{_b64(self._mac(tenant_id, listing, raw))}"

    def decode(self, tenant_id: str, listing: str, cursor: str) -> str:
        """The position in ``cursor``; a problem when it was not issued for this tenant and
        listing (or was altered)."""
        head, dot, tail = cursor.partition(".")
        try:
            if not dot or len(cursor) > 512:
                raise ValueError
            raw = _unb64(head)
            mac = _unb64(tail)
        except (ValueError, binascii.Error):
            raise _invalid("malformed cursor") from None
        if not hmac.compare_digest(mac, self._mac(tenant_id, listing, raw)):
            raise _invalid("this cursor was not issued for this listing (or was altered)")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise _invalid("malformed cursor") from None


def _invalid(detail: str) -> ProblemError:
    return ProblemError(
        "invalid-cursor",
        detail + "; start again without `cursor`",
        errors=[{"field": "cursor", "message": detail}],
    )
