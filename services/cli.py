"""The `pledgeflow` console script: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

from services.usage_errors import OneLineGroup

app = typer.Typer(
    name="pledgeflow", cls=OneLineGroup, no_args_is_help=True, help="Pledgeflow command line."
)


def _register() -> None:
    """Attach each concern's sub-commands; imported here so importing this module stays cheap."""
    from schemas.cli import app as schemas_app
    from services.audit.cli import app as audit_app
    from services.notify.cli import app as notify_app
    from services.ops.cli import app as deploy_app
    from services.pledge.api.cli import cli as api_app
    from services.pledge.processor.app import processor_app
    from services.pledge.projector import readmodel_cli
    from services.settlement.cli import app as settlement_app
    from services.settlement.cli import ledger
    from services.simulate.cli import register as register_simulate

    app.add_typer(schemas_app, name="schemas")
    app.add_typer(processor_app, name="processor")
    app.add_typer(api_app, name="api")
    app.add_typer(readmodel_cli(), name="readmodel")
    app.add_typer(audit_app, name="audit")
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(notify_app, name="notify")
    app.add_typer(settlement_app, name="settlement")
    app.command("ledger")(ledger)
    register_simulate(app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
