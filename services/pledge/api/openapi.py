"""The API's OpenAPI document: response and header descriptions, the models it publishes.

Handlers read and validate bodies themselves (see ``ingest.py``), so FastAPI does not see the
request models; this module adds them (and the response models, the bearer scheme and the
write headers) to ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from services.pledge.api.models import (
    BatchRequest,
    BatchResponse,
    CampaignAccepted,
    CampaignDecided,
    CampaignPage,
    CampaignView,
    CancelAccepted,
    CancelDecided,
    CancelRequest,
    CloseAccepted,
    CloseDecided,
    CloseRequest,
    EventPage,
    EventView,
    LaunchRequest,
    PledgeAccepted,
    PledgeDecided,
    PledgePage,
    PledgeRequest,
    PledgeView,
    Problem,
    json_schema_of,
)
from services.pledge.api.openapi_docs import LICENSE, OPERATIONS, PROBLEM_EXAMPLE, SERVERS, TAGS
from services.pledge.api.problems import PROBLEM_MEDIA_TYPE
from services.settlement.api_docs import SETTLEMENT_MODELS

__all__ = [
    "COMMON",
    "TEXT",
    "WRITE",
    "build_openapi",
    "json_content",
    "problem_content",
    "request_body",
]

_SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    LaunchRequest,
    PledgeRequest,
    BatchRequest,
    CancelRequest,
    CloseRequest,
    Problem,
)

_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "description": "Unique per operation (1-255 visible ASCII). A retry with the same key "
        "and body gets the first response; another body with the same key gets 422. "
        "Kept 24 h.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait=N`: wait up to N s (at most 10) for the processor's decision; "
        "201/200 when accepted, 409 when refused, 202 when N elapsed first. Other "
        "preferences, and a `wait` that is not 1-6 digits, are ignored (RFC 7240): the "
        "write is answered 202 as without the header.",
        # No pattern: the server accepts any value (a client must be free to send other
        # preferences), so the schema must not call a request with one invalid.
        "schema": {"type": "string"},
    },
]


def problem_content(description: str) -> dict[str, Any]:
    """A response documented as a problem document."""
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _ref(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


def json_content(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A response documented as ``model``."""
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


TEXT = {
    "description": "text exposition",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
COMMON: dict[int | str, dict[str, Any]] = {
    401: problem_content("Missing or unknown API key."),
    404: problem_content("No such campaign or pledge for this tenant."),
    422: problem_content("Invalid field(s), named in `errors`."),
    429: problem_content("Rate limit of the API key exceeded (see Retry-After)."),
    500: problem_content("Unexpected server error."),
    503: problem_content("Kafka or Redis unavailable; retry."),
}
WRITE: dict[int | str, dict[str, Any]] = {
    **COMMON,
    400: problem_content("Missing or malformed Idempotency-Key."),
    409: problem_content(
        "Refused by the processor (`reason`), or same Idempotency-Key in progress."
    ),
    413: problem_content("Body larger than 1 MiB."),
    415: problem_content("Body is not application/json."),
}


def request_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """A write's headers and JSON body (``openapi_extra``)."""
    return {
        "parameters": _HEADERS,
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": {"$ref": _ref(model)}}},
        },
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, plus every body model and the bearer scheme."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (
        *_SCHEMA_MODELS,
        CampaignAccepted,
        CampaignDecided,
        PledgeAccepted,
        PledgeDecided,
        CancelAccepted,
        CancelDecided,
        CloseAccepted,
        CloseDecided,
        BatchResponse,
        CampaignView,
        PledgeView,
        CampaignPage,
        PledgePage,
        EventPage,
        EventView,
        *SETTLEMENT_MODELS,
    )
    for model in models:
        model_schema = json_schema_of(model)
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key"}
    }
    schema["servers"] = SERVERS
    schema["tags"] = TAGS
    schema["info"]["license"] = LICENSE
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            # The ops probes take no API key (``security: []`` overrides nothing global).
            operation["security"] = [{"bearerAuth": []}] if path.startswith("/v1/") else []
            _document(operation, OPERATIONS.get((method, path), {}))
    app.openapi_schema = schema
    return schema


def _document(operation: dict[str, Any], docs: dict[str, Any]) -> None:
    """Merge an operation's description and examples (``openapi_docs.OPERATIONS``) in."""
    if docs.get("description"):
        operation["description"] = docs["description"]
    operation.setdefault("description", operation.get("summary", ""))
    if "request" in docs:
        for media in operation.get("requestBody", {}).get("content", {}).values():
            media["example"] = docs["request"]
    for status, response in operation.get("responses", {}).items():
        for media_type, media in response.get("content", {}).items():
            if media_type == PROBLEM_MEDIA_TYPE:
                media["example"] = {**PROBLEM_EXAMPLE, "status": int(status)}
                if status != "422":
                    media["example"].pop("errors")
                    media["example"]["type"] = "https://pledgeflow.dev/problems/unavailable"
                    media["example"]["title"] = response["description"]
                    media["example"]["detail"] = response["description"]
            elif status in docs.get("responses", {}):
                media["example"] = docs["responses"][status]
