"""JSON Schema documents of the contract, for integrators and non-Python consumers.

One file per event type (``<EventType>.v<N>.json``: the envelope with that payload), plus the
envelope and the command union. The files under ``schemas/json/`` are committed; a unit test
fails when they drift from the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from schemas.commands import Command
from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES

__all__ = ["JSON_DIR", "REGENERATE_COMMAND", "export_json_schemas", "json_schemas", "render"]

#: Where the committed schemas live (shipped as package data).
JSON_DIR = Path(__file__).parent / "json"
REGENERATE_COMMAND = "pledgeflow schemas export schemas/json"
_BASE_ID = "https://pledgeflow.dev/schemas/"


def _event_schema(event_type: str) -> dict[str, Any]:
    model = EVENT_TYPES[event_type]
    envelope = Envelope.model_json_schema(mode="serialization")
    payload = model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    defs = {**envelope.pop("$defs", {}), **payload.pop("$defs", {})}
    defs.pop("Event", None)
    properties = dict(envelope["properties"])
    properties["event_type"] = {"const": event_type, "title": "Event Type", "type": "string"}
    properties["schema_version"] = {
        "const": model.schema_version,
        "title": "Schema Version",
        "type": "integer",
    }
    properties["stream"] = {"const": model.stream, "title": "Stream", "type": "string"}
    properties["payload"] = payload
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE_ID}{event_type}.v{model.schema_version}.json",
        "title": f"{event_type} v{model.schema_version}",
        "description": (model.__doc__ or "").strip(),
        "type": "object",
        "properties": properties,
        "required": envelope["required"],
        "additionalProperties": False,
        "$defs": defs,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """``file name -> JSON Schema`` for every event type, the envelope and the commands."""
    documents = {
        f"{event_type}.v{model.schema_version}.json": _event_schema(event_type)
        for event_type, model in sorted(EVENT_TYPES.items())
    }
    envelope = Envelope.model_json_schema(mode="serialization")
    envelope.update({"$id": f"{_BASE_ID}Envelope.json", "title": "Envelope"})
    documents["Envelope.json"] = envelope
    commands: dict[str, Any] = TypeAdapter(Command).json_schema(mode="validation")
    commands.update({"$id": f"{_BASE_ID}Command.json", "title": "Command"})
    documents["Command.json"] = commands
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
