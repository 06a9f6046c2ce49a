"""The batch endpoint's per-item work on plain dicts: body shape, item checks, result texts.

A batch carries up to 1,000 pledges, so per-item costs decide its throughput. Validating each
item into a pydantic model and dumping a dict per result cost about as much as the rest of the
request together. Here items stay the dicts orjson parsed:
:func:`schemas.pledge_fields.plain_pledge` accepts an item when it certainly satisfies
:class:`~services.pledge.api.models.BatchItem`; pydantic judges only the others, and names
their faults. The command bytes come from
:class:`schemas.commands.MakePledgeTemplate`; each result is written as text equal to
``orjson.dumps`` of its dict (tests pin both).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from schemas.pledge_fields import PledgeFields, plain_pledge
from services.pledge.api.models import BatchItem
from services.pledge.api.problems import field_errors, problem_body, validation_problem

__all__ = [
    "batch_items",
    "check_items",
    "model_fields",
    "not_found_result",
    "payload_text",
    "pending_result",
]


def batch_items(raw: bytes, max_items: int) -> list[Any]:
    """The ``pledges`` list of a batch body, or a 422 naming what is wrong with its shape."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_problem([{"field": "body", "message": f"malformed JSON: {exc}"}]) from None
    if not isinstance(doc, dict) or set(doc) != {"pledges"} or not isinstance(doc["pledges"], list):
        raise validation_problem(
            [
                {
                    "field": "pledges",
                    "message": "expected an object with one member 'pledges' (a list)",
                }
            ]
        )
    items: list[Any] = doc["pledges"]
    if not 1 <= len(items) <= max_items:
        raise validation_problem([{"field": "pledges", "message": f"1 to {max_items} items"}])
    return items


def check_items(
    items: list[Any], results: list[str | None]
) -> tuple[list[tuple[int, PledgeFields]], int]:
    """The valid items with their index; each invalid one gets its result in ``results``.
    Returns the valid items and how many were invalid."""
    valid: list[tuple[int, PledgeFields]] = []
    invalid = 0
    for index, item in enumerate(items):
        fields = plain_pledge(item)
        if fields is not None:
            valid.append((index, fields))
            continue
        try:
            checked = BatchItem.model_validate(item)
        except ValidationError as exc:
            invalid += 1
            errors = field_errors(exc, f"pledges.{index}")
            results[index] = _json_text(
                {
                    "index": index,
                    "status": "invalid",
                    "problem": problem_body(
                        "validation-error",
                        errors=errors,
                        detail="invalid field(s): "
                        + ", ".join(dict.fromkeys(e["field"] for e in errors)),
                    ),
                }
            )
        else:
            valid.append((index, model_fields(checked)))
    return valid, invalid


def model_fields(item: BatchItem) -> PledgeFields:
    """:data:`~schemas.pledge_fields.PledgeFields` of an item pydantic validated."""
    return (
        item.campaign_id,
        item.backer_id,
        item.amount_minor,
        item.currency,
        item.pledge_id,
        item.tier_id,
        item.payment_token,
        item.locale,
    )


def not_found_result(index: int, campaign_id: str) -> str:
    """The result of an item whose campaign belongs to another tenant (JSON text)."""
    return _json_text(
        {
            "index": index,
            "status": "not_found",
            "campaign_id": campaign_id,
            "problem": problem_body("not-found", detail="no such campaign"),
        }
    )


def pending_result(index: int, campaign_id: str, pledge_id: str) -> str:
    """The ``pending`` result of item ``index`` (JSON text)."""
    return (
        f'{{"index":{index},"status":"pending","pledge_id":"{pledge_id}"'
        f',"campaign_id":"{campaign_id}"'
        f',"status_url":"/v1/campaigns/{campaign_id}/pledges/{pledge_id}"}}'
    )


def payload_text(results: list[str], accepted: int) -> bytes:
    """The batch's 202 body; equals ``orjson.dumps({"results": [...], "accepted": n,
    "refused": m})``."""
    return (
        f'{{"results":[{",".join(results)}],"accepted":{accepted}'
        f',"refused":{len(results) - accepted}}}'
    ).encode()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
