"""What ``/openapi.json`` says about each operation beyond its route: a description, and
examples of its request and answers (checked against their schemas by ``redocly lint``).

Kept apart from the routes so that the handlers stay short and the prose in one place;
:func:`services.pledge.api.openapi.build_openapi` merges it in by (method, path).
"""

from __future__ import annotations

from typing import Any

from services.settlement.api_docs import SETTLEMENT_OPERATIONS, SETTLEMENT_TAG

__all__ = ["LICENSE", "OPERATIONS", "SERVERS", "TAGS"]

SERVERS = [
    {"url": "http://127.0.0.1:8000", "description": "Local (`make run`)."},
]
LICENSE = {"name": "Proprietary", "url": "https://pledgeflow.dev/terms"}
TAGS = [
    {"name": "campaigns", "description": "Launch, read, list and close campaigns; their events."},
    {"name": "pledges", "description": "Make, read, list and cancel pledges."},
    {"name": "ops", "description": "Liveness, readiness and metrics (no API key)."},
    SETTLEMENT_TAG,
]

_DEADLINE = "2030-01-31T23:59:59Z"
_MONEY = {"amount_minor": 2500, "currency": "EUR"}
_PLEDGE_VIEW: dict[str, Any] = {
    "pledge_id": "p-1",
    "campaign_id": "c-42",
    "status": "accepted",
    "backer_id": "b-7",
    "amount": _MONEY,
    "tier_id": "t1",
    "seq": 2,
    "reason": None,
    "detail": None,
    "last_refusal": None,
    "payment": {
        "status": "captured",
        "attempts": 1,
        "retry_until": None,
        "captured_minor": 2500,
        "refunded_minor": 0,
        "method_updated": False,
        "reason": None,
    },
}
_CAMPAIGN_VIEW: dict[str, Any] = {
    "campaign_id": "c-42",
    "title": "My album",
    "creator_id": "u-9",
    "status": "open",
    "outcome": None,
    "funding_model": "all_or_nothing",
    "kind": "reward",
    "goal": {"amount_minor": 500000, "currency": "EUR"},
    "total": _MONEY,
    "pledge_count": 1,
    "goal_reached_at": None,
    "deadline": _DEADLINE,
    "tiers": [
        {
            "tier_id": "t1",
            "title": "Signed CD",
            "min_amount_minor": 2500,
            "quantity_limit": 100,
            "remaining": 99,
        }
    ],
    "seq": 2,
}
_EVENT: dict[str, Any] = {
    "event_id": "0b7e3c1e-3f5e-4f43-9d55-1d4b0f1e2a10",
    "event_type": "PledgeMade",
    "schema_version": 1,
    "campaign_id": "c-42",
    "stream": "campaign",
    "seq": 2,
    "occurred_at": "2026-11-29T21:00:00.000000Z",
    "causation_id": "cmd-3f1c",
    "correlation_id": "cmd-3f1c",
    "prev_hash": "a" * 64,
    "hash": "b" * 64,
    "payload": {"pledge_id": "p-1", "backer_id": "b-7", "amount": _MONEY, "tier_id": "t1"},
}
_CURSOR = "cC0x.3q2-7w9VbQ1nC8dH0kq3pA"

#: (method, path) -> description, request example, {status: response example}.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/campaigns"): {
        "description": "Send a `LaunchCampaign` command. 202 once it is durably in Kafka; with "
        "`Prefer: wait=N`, 201 when the processor opened the campaign within N s, 409 when "
        "it refused it. Retry with the same `Idempotency-Key` on 503/429.",
        "request": {
            "campaign_id": "c-42",
            "title": "My album",
            "creator_id": "u-9",
            "goal": {"amount_minor": 500000, "currency": "EUR"},
            "deadline": _DEADLINE,
            "funding_model": "all_or_nothing",
            "tiers": [
                {
                    "tier_id": "t1",
                    "title": "Signed CD",
                    "min_amount_minor": 2500,
                    "quantity_limit": 100,
                }
            ],
        },
        "responses": {
            "202": {
                "campaign_id": "c-42",
                "status": "pending",
                "status_url": "/v1/campaigns/c-42",
            },
            "201": {"campaign_id": "c-42", "status": "open", "seq": 1},
        },
    },
    ("get", "/v1/campaigns"): {
        "description": None,  # the route's own
        "responses": {"200": {"data": [_CAMPAIGN_VIEW], "next_cursor": _CURSOR}},
    },
    ("get", "/v1/campaigns/{campaign_id}"): {
        "description": "The campaign's summary as projected from its events (totals, tiers "
        "left, status). The `ETag` is its `seq`: send it as `If-None-Match` to get a 304 "
        "while nothing changed.",
        "responses": {"200": _CAMPAIGN_VIEW},
    },
    ("post", "/v1/campaigns/{campaign_id}/pledges"): {
        "description": "Send a `MakePledge` command. 202 once it is durably in Kafka (the "
        "pledge is then listed as `pending`); with `Prefer: wait=N`, 201 when accepted, 409 "
        "with a `reason` (`tier_sold_out`, `campaign_closed`, ...) when refused.",
        "request": {
            "pledge_id": "p-1",
            "backer_id": "b-7",
            "amount_minor": 2500,
            "currency": "EUR",
            "tier_id": "t1",
            "payment_token": "tok_visa",
            "locale": "fr",
        },
        "responses": {
            "202": {
                "pledge_id": "p-1",
                "campaign_id": "c-42",
                "status": "pending",
                "status_url": "/v1/campaigns/c-42/pledges/p-1",
            },
            "201": {"pledge_id": "p-1", "campaign_id": "c-42", "status": "accepted", "seq": 2},
        },
    },
    ("get", "/v1/campaigns/{campaign_id}/pledges"): {
        "responses": {"200": {"data": [_PLEDGE_VIEW], "next_cursor": None}},
    },
    ("get", "/v1/campaigns/{campaign_id}/events"): {
        "responses": {"200": {"data": [_EVENT], "next_cursor": None}},
    },
    ("post", "/v1/pledges/batch"): {
        "description": "Up to 1,000 pledges on any of the tenant's campaigns in one request; "
        "each valid item's command is durably in Kafka when this answers 202, the others say "
        "why not (`invalid` with a problem, `not_found`).",
        "request": {
            "pledges": [
                {
                    "campaign_id": "c-42",
                    "pledge_id": "p-2",
                    "backer_id": "b-8",
                    "amount_minor": 2500,
                    "currency": "EUR",
                    "tier_id": "t1",
                    "payment_token": "tok_visa",
                    "locale": "fr",
                }
            ]
        },
        "responses": {
            "202": {
                "results": [
                    {
                        "index": 0,
                        "status": "pending",
                        "pledge_id": "p-2",
                        "campaign_id": "c-42",
                        "status_url": "/v1/campaigns/c-42/pledges/p-2",
                    }
                ],
                "accepted": 1,
                "refused": 0,
            }
        },
    },
    ("get", "/v1/campaigns/{campaign_id}/pledges/{pledge_id}"): {
        "description": "The pledge's status: `pending` until the processor decided, then "
        "`accepted`, `rejected` (with `reason`) or `cancelled`. `ETag` / `If-None-Match` "
        "answer 304 while it is unchanged.",
        "responses": {"200": _PLEDGE_VIEW},
    },
    ("post", "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel"): {
        "description": "Send a `CancelPledge` command (within the campaign's cancellation "
        "window). 202 once in Kafka; with `Prefer: wait=N`, 200 when cancelled, 409 when "
        "refused (`cancellation_window_closed`, ...).",
        "request": {"reason": "backer_request"},
        "responses": {
            "202": {
                "pledge_id": "p-1",
                "campaign_id": "c-42",
                "status": "pending",
                "status_url": "/v1/campaigns/c-42/pledges/p-1",
            },
            "200": {"pledge_id": "p-1", "campaign_id": "c-42", "status": "cancelled", "seq": 3},
        },
    },
    ("post", "/v1/campaigns/{campaign_id}/close"): {
        "description": "Close a campaign before its deadline: its creator cancels it or the "
        "platform suspends it. 202 once in Kafka; with `Prefer: wait=N`, 200 when closed.",
        "request": {"reason": "creator_cancelled"},
        "responses": {
            "202": {
                "campaign_id": "c-42",
                "status": "pending",
                "status_url": "/v1/campaigns/c-42",
            },
            "200": {"campaign_id": "c-42", "status": "closed", "outcome": "cancelled", "seq": 4},
        },
    },
    ("get", "/healthz"): {
        "description": "200 while the process serves HTTP (no dependency is checked).",
        "responses": {"200": {"status": "ok"}},
    },
    ("get", "/readyz"): {
        "description": "200 when Kafka and Redis answer; 503 naming the one that does not "
        "(take the replica out of the load balancer).",
        "responses": {"200": {"kafka": "ok", "redis": "ok"}},
    },
    ("get", "/metrics"): {
        "description": "Prometheus text exposition of the process's metrics (`pledgeflow_api_*`).",
        "responses": {"200": "pledgeflow_api_requests_total 1.0\n"},
    },
}

#: An example of the problem document, on every problem answer.
PROBLEM_EXAMPLE = {
    "type": "https://pledgeflow.dev/problems/validation-error",
    "title": "The request is not valid",
    "status": 422,
    "detail": "invalid field(s): amount_minor",
    "instance": "/v1/campaigns/c-42/pledges",
    "errors": [{"field": "amount_minor", "message": "Input should be greater than 0"}],
}

OPERATIONS.update(SETTLEMENT_OPERATIONS)  # services/settlement/api_docs.py
