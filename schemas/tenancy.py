"""Tenant-qualified campaign identity: ``"<tenant>/<campaign>"``.

Pledgeflow serves several platforms (tenants) from one deployment, and each chooses its own
campaign and pledge ids. Inside the system a campaign is always named by the pair, written
``"<tenant>/<campaign>"``: the envelope's and commands' ``campaign_id``, the Kafka key, the
processor's state and snapshots, the read model and every downstream service (settlement,
notify) see only that qualified id and treat it as opaque, so two tenants using the same ids
never meet. ``/`` is outside the id alphabet (:data:`schemas.pledge_fields.ID_PATTERN`) and
outside :data:`TENANT_PATTERN`, so the split is unambiguous. The API qualifies on the way in
(:func:`qualify`) and strips on the way out (:func:`local_id`); anything that shows a campaign
id to a tenant (webhooks, e-mails, statements) must strip it the same way.
"""

from __future__ import annotations

import re

from schemas.pledge_fields import PledgeFields

__all__ = [
    "SEPARATOR",
    "TENANT_PATTERN",
    "local_id",
    "pledge_key",
    "qualified_fields",
    "qualify",
    "split",
    "tenant_of",
    "valid_tenant",
]

SEPARATOR = "/"
#: A tenant id: 1-64 characters of ``A-Z a-z 0-9 . _ -`` (no ``:``, no ``/``). With a campaign
#: id of at most 128 characters a qualified id stays within the contract's 200.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TENANT = re.compile(TENANT_PATTERN).fullmatch


def valid_tenant(tenant_id: str) -> bool:
    """True when ``tenant_id`` may be used as a tenant (see :data:`TENANT_PATTERN`)."""
    return _TENANT(tenant_id) is not None


def qualify(tenant_id: str, campaign_id: str) -> str:
    """The internal id of a tenant's campaign."""
    return f"{tenant_id}{SEPARATOR}{campaign_id}"


def split(qualified: str) -> tuple[str, str]:
    """``(tenant, campaign)`` of a qualified id; ``("", id)`` for an unqualified (pre-tenancy)
    id."""
    tenant, sep, campaign = qualified.partition(SEPARATOR)
    return (tenant, campaign) if sep else ("", qualified)


def pledge_key(campaign_id: str, pledge_id: str) -> str:
    """A pledge's identity ``<tenant>/<campaign>/<pledge>`` from its qualified campaign id
    (the key of its payment token, see ``services.pledge.adapters.payment_tokens``)."""
    return f"{campaign_id}{SEPARATOR}{pledge_id}"


def tenant_of(qualified: str) -> str:
    """The tenant of a qualified id ('' when unqualified)."""
    return split(qualified)[0]


def local_id(qualified: str) -> str:
    """The campaign id as its tenant knows it."""
    return split(qualified)[1]


def qualified_fields(fields: PledgeFields, tenant_id: str, token_out: bool) -> PledgeFields:
    """A checked pledge's fields as its command carries them: the campaign id qualified by
    the tenant, and no payment token when it travels on its own store (``token_out``)."""
    campaign_id, backer_id, amount, currency, pledge_id, tier_id, token, locale = fields
    return (
        qualify(tenant_id, campaign_id),
        backer_id,
        amount,
        currency,
        pledge_id,
        tier_id,
        None if token_out else token,
        locale,
    )
