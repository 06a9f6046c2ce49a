"""The committed JSON Schemas under schemas/json/ must match the models."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from schemas import EVENT_TYPES
from schemas.cli import app
from schemas.jsonschema import JSON_DIR, REGENERATE_COMMAND, json_schemas, render


def test_committed_schemas_match_the_models() -> None:
    expected = {name: render(doc) for name, doc in json_schemas().items()}
    committed = {path.name: path.read_bytes() for path in JSON_DIR.glob("*.json")}
    drifted = sorted(
        name for name in expected.keys() | committed.keys()
        if expected.get(name) != committed.get(name)
    )  # fmt: skip
    assert not drifted, f"JSON Schemas drifted: {drifted}; regenerate with: {REGENERATE_COMMAND}"


def test_one_schema_per_event_type_at_its_current_version() -> None:
    names = set(json_schemas())
    for event_type, model in EVENT_TYPES.items():
        assert f"{event_type}.v{model.schema_version}.json" in names


def test_event_schema_pins_type_version_and_payload_fields() -> None:
    schema = json_schemas()["PledgeMade.v2.json"]
    assert schema["properties"]["event_type"]["const"] == "PledgeMade"
    assert schema["properties"]["schema_version"]["const"] == 2
    assert "tier_id" in schema["properties"]["payload"]["properties"]


def test_cli_export_writes_the_schemas(tmp_path: Path) -> None:
    stale = tmp_path / "Removed.v1.json"
    stale.write_text("{}")
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.glob("*.json")} == set(json_schemas())
