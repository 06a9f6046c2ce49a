"""The `pledgeflow` console script: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

app = typer.Typer(name="pledgeflow", no_args_is_help=True, help="Pledgeflow command line.")


def _register() -> None:
    """Attach each concern's sub-commands; imported lazily so `--help` stays fast."""
    from schemas.cli import app as schemas_app

    app.add_typer(schemas_app, name="schemas")
    from services.pledge.app import processor_app

    app.add_typer(processor_app, name="processor")
    from services.pledge.api.cli import cli as api_cli
    from services.pledge.readmodel import readmodel_cli

    app.add_typer(api_cli, name="api")
    app.add_typer(readmodel_cli(), name="readmodel")
    app.add_typer(__import__("services.audit.cli", fromlist=["app"]).app, name="audit")


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
