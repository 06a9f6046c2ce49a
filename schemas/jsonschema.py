"""JSON Schema documents of the contract, for integrators and non-Python consumers.

One file per event type and version still on a log (``<EventType>.v<N>.json``: the envelope
with that payload), the envelope of any event (``Envelope.json``) and the command union
(``Command.json``). They are as strict as the codec: what ``schemas.codec.decode`` or
``decode_command`` refuses, a JSON Schema 2020-12 validator with format checking refuses too
(required fields, ISO 4217 codes, ``date-time`` timestamps, integers within the 64 bits the
codec reads). Plain ``oneOf`` + ``const`` select a variant (no OpenAPI ``discriminator``), so
strict validators (ajv ``--strict``) accept them. The files under ``schemas/json/`` are
committed; a unit test fails when they drift from the models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from schemas.commands import Command
from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES
from schemas.money import CURRENCY_EXPONENTS

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "JSON_DIR",
    "PAST_VERSIONS",
    "REGENERATE_COMMAND",
    "export_json_schemas",
    "json_schemas",
    "render",
]

#: Where the committed schemas live (shipped as package data).
JSON_DIR = Path(__file__).parent / "json"
REGENERATE_COMMAND = "pledgeflow schemas export schemas/json"
_BASE_ID = "https://pledgeflow.dev/schemas/"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: The integers the codec reads (orjson: i64 min .. u64 max; beyond, a float StrictInt refuses).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Payload = dict[str, Any]


def _without(*fields: str) -> Callable[[Payload], Payload]:
    def older(schema: Payload) -> Payload:
        schema = copy.deepcopy(schema)
        for name in fields:
            schema["properties"].pop(name, None)
            if name in schema.get("required", []):
                schema["required"].remove(name)
        return schema

    return older


def _payment_method_v1(schema: Payload) -> Payload:
    """v1 carried the new token (v2 keeps tokens off the log)."""
    schema = copy.deepcopy(schema)
    schema["properties"]["payment_token"] = {
        "anyOf": [{"maxLength": 500, "type": "string"}, {"type": "null"}],
        "title": "Payment Token",
    }
    schema["required"] = [*schema.get("required", []), "payment_token"]
    return schema


#: Payload schemas of versions older than the model's that records on a log may still have:
#: ``(event_type, version) -> derive it from the current payload schema`` (mirrors
#: ``schemas.upcasters``; a test checks every upcast version has its schema).
PAST_VERSIONS: dict[tuple[str, int], Callable[[Payload], Payload]] = {
    ("PledgeMade", 1): _without("tier_id"),  # v2 added tier_id
    # v2 added the ledger lines (schemas.ledger)
    ("PledgeCaptured", 1): _without("ledger"),
    ("PledgeRefunded", 1): _without("ledger"),
    ("CampaignSettled", 1): _without("ledger"),
    ("PaymentMethodUpdated", 1): _payment_method_v1,  # v2 dropped payment_token
}


class _AsStrictAsTheCodec(GenerateJsonSchema):
    """Pydantic's generator plus the bounds the codec enforces outside the model's schema."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        out = super().int_schema(schema)
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = INT_MIN
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = INT_MAX
        return out


def _model_schema(model: Any) -> Payload:
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema: Payload = adapter.json_schema(
        mode="validation", schema_generator=_AsStrictAsTheCodec, ref_template="#/$defs/{model}"
    )
    return schema


def _tighten_defs(defs: dict[str, Payload]) -> dict[str, Payload]:
    """Money's currency is validated by code (an ISO 4217 code we know): list them."""
    money = defs.get("Money")
    if money is not None:
        money["properties"]["currency"]["enum"] = sorted(CURRENCY_EXPONENTS)
    return defs


def _merge_defs(into: dict[str, Payload], defs: dict[str, Payload]) -> None:
    for name, schema in defs.items():
        if into.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas named {name!r}")


def _envelope_parts() -> tuple[dict[str, Payload], list[str]]:
    """The envelope's own properties (payload excluded) and its required fields."""
    envelope = _model_schema(Envelope)
    properties = {k: v for k, v in envelope["properties"].items() if k != "payload"}
    return properties, list(envelope["required"])


def _payloads() -> dict[tuple[str, int], tuple[str, Payload, dict[str, Payload]]]:
    """``(event_type, version) -> (stream, payload schema, its $defs)``, current and past."""
    found = {}
    for event_type, model in sorted(EVENT_TYPES.items()):
        payload = _model_schema(model)
        defs = _tighten_defs(payload.pop("$defs", {}))
        found[(event_type, model.schema_version)] = (model.stream, payload, defs)
        for (past_type, version), derive in PAST_VERSIONS.items():
            if past_type == event_type:
                older = derive(payload)
                older["title"] = f"{event_type} v{version}"
                found[(event_type, version)] = (model.stream, older, defs)
    return dict(sorted(found.items()))


def _pinned(event_type: str, version: int, stream: str) -> dict[str, Payload]:
    return {
        "event_type": {"const": event_type, "title": "Event Type", "type": "string"},
        "schema_version": {"const": version, "title": "Schema Version", "type": "integer"},
        "stream": {"const": stream, "title": "Stream", "type": "string"},
    }


def _event_schema(event_type: str, version: int) -> Payload:
    stream, payload, defs = _payloads()[(event_type, version)]
    properties, required = _envelope_parts()
    properties.update(_pinned(event_type, version, stream))
    properties["payload"] = payload
    return {
        "$schema": _DRAFT,
        "$id": f"{_BASE_ID}{event_type}.v{version}.json",
        "title": f"{event_type} v{version}",
        "description": (EVENT_TYPES[event_type].__doc__ or "").strip(),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "$defs": defs,
    }


def _envelope_schema() -> Payload:
    """Any event: the common envelope, then exactly one (type, version) with its payload."""
    properties, required = _envelope_parts()
    properties["payload"] = {"title": "Payload", "type": "object"}
    defs: dict[str, Payload] = {}
    variants = []
    for (event_type, version), (stream, payload, payload_defs) in _payloads().items():
        _merge_defs(defs, payload_defs)
        name = f"{event_type}.v{version}"
        _merge_defs(defs, {name: payload})
        pinned = _pinned(event_type, version, stream)
        pinned["payload"] = {"$ref": f"#/$defs/{name}"}
        variants.append({"properties": pinned})
    return {
        "$schema": _DRAFT,
        "$id": f"{_BASE_ID}Envelope.json",
        "title": "Envelope",
        "description": (Envelope.__doc__ or "").strip(),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "oneOf": variants,
        "$defs": dict(sorted(defs.items())),
    }


def _command_schema() -> Payload:
    schema = _model_schema(TypeAdapter(Command))
    schema.pop("discriminator", None)  # an OpenAPI keyword; the consts select the variant
    defs = _tighten_defs(schema.pop("$defs"))
    for ref in schema["oneOf"]:
        variant = defs[ref["$ref"].removeprefix("#/$defs/")]
        # The codec needs the tag (the models' default only serves Python callers).
        variant["properties"]["command_type"].pop("default", None)
        variant["required"] = ["command_type", *variant["required"]]
    return {
        "$schema": _DRAFT,
        "$id": f"{_BASE_ID}Command.json",
        "title": "Command",
        "description": "A command on pledge-commands; command_type selects the variant.",
        **schema,
        "$defs": defs,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """``file name -> JSON Schema`` for every event type and version, the envelope and the
    commands."""
    documents = {
        f"{event_type}.v{version}.json": _event_schema(event_type, version)
        for event_type, version in _payloads()
    }
    documents["Envelope.json"] = _envelope_schema()
    documents["Command.json"] = _command_schema()
    return documents


def render(document: dict[str, Any]) -> bytes:
    """Stable text of a schema document (sorted keys, 2-space indent, final newline)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if needed), removing stale ``*.json``
    files there so a renamed or bumped event leaves no orphan behind; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = json_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in documents:
            stale.unlink()
    written = []
    for name, document in documents.items():
        path = directory / name
        path.write_bytes(render(document))
        written.append(path)
    return written
