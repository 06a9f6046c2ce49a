"""``pledgeflow schemas ...``: export the contract's JSON Schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.jsonschema import export_json_schemas

app = typer.Typer(name="schemas", no_args_is_help=True, help="The event contract.")


@app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Directory to write the *.json files into.")],
) -> None:
    """Write one JSON Schema per event type (plus envelope and commands) into DIRECTORY."""
    written = export_json_schemas(directory)
    typer.echo(f"wrote {len(written)} schemas to {directory}")


@app.command("topics")
def list_topics(
    prefix: Annotated[str, typer.Option(help="Topic name prefix.")] = "",
    partitions: Annotated[int, typer.Option(help="Partitions of every topic.")] = 6,
) -> None:
    """Print the topic registry (name, partitions, retention.ms, cleanup.policy, contents)."""
    from schemas.topics import Topics

    for spec in Topics(prefix=prefix, partitions=partitions):
        contents = ",".join(spec.event_types) or spec.kind
        typer.echo(
            f"{spec.name}\t{spec.partitions}\t{spec.retention_ms}\t{spec.cleanup_policy}\t{contents}"
        )
