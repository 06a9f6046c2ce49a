"""``pledgeflow settlement run`` (the worker) and ``pledgeflow ledger --campaign ID`` (a
campaign's ledger balances, read from the settlement stream)."""

from __future__ import annotations

import asyncio

import typer
from pydantic import ValidationError

from schemas.errors import describe_validation_error

__all__ = ["app", "ledger"]

app = typer.Typer(no_args_is_help=True, help="The settlement worker (captures, refunds, ledger).")


def _settings() -> object:
    from services.settlement.config import SettlementSettings

    try:
        return SettlementSettings()
    except ValidationError as exc:
        typer.echo(f"settlement: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None


@app.command("run")
def run() -> None:
    """Run the settlement worker until SIGTERM/SIGINT (settings from PLEDGEFLOW_* variables)."""
    from services.settlement.app import SettlementWorker, build_gateway
    from services.settlement.config import SettlementSettings
    from services.streams import configure_logging, run_cli, serve

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    configure_logging()
    try:
        gateway = build_gateway(settings)
    except ValueError as exc:
        typer.echo(f"settlement: {exc}", err=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        worker = SettlementWorker(settings, gateway)
        await serve(worker, metrics_host=settings.metrics_host, metrics_port=settings.metrics_port)

    run_cli("settlement", main, bootstrap=settings.kafka_bootstrap)


readmodel_app = typer.Typer(
    no_args_is_help=True, help="The settlement read model (GET .../settlement, payment status)."
)
app.add_typer(readmodel_app, name="readmodel")


@readmodel_app.command("run")
def readmodel_run() -> None:
    """Project the settlement stream into Redis until SIGTERM/SIGINT."""
    from services.settlement.config import SettlementSettings
    from services.settlement.projector import run_projector
    from services.streams import configure_logging, run_cli

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    configure_logging()
    run_cli(
        "settlement-readmodel",
        lambda: run_projector(settings),
        bootstrap=settings.kafka_bootstrap,
    )


@readmodel_app.command("rebuild")
def readmodel_rebuild() -> None:
    """Wipe the settlement read model (this topic prefix) and replay the settlement stream
    (stop the running projector first)."""
    from services.settlement.config import SettlementSettings
    from services.settlement.projector import rebuild
    from services.streams import configure_logging

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    configure_logging("info")
    applied = asyncio.run(rebuild(settings))
    typer.echo(f"settlement read model rebuilt: {applied} events applied")


def ledger(
    campaign: str = typer.Option(..., "--campaign", help="Campaign id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a campaign's ledger balances (and its settlement, once settled)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from services.settlement.config import SettlementSettings
    from services.settlement.statement import read_statement

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    statement = asyncio.run(read_statement(settings, campaign))
    if statement is None:
        typer.echo(f"ledger: no settlement events for campaign {campaign!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(orjson.dumps(statement.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"Ledger of {campaign} ({statement.currency}, seq {statement.seq})")
    for column in ("account", "debits", "credits", "balance"):
        table.add_column(column, justify="left" if column == "account" else "right")
    for row in statement.rows():
        table.add_row(*row)
    console = Console()
    console.print(table)
    for line in statement.summary():
        console.print(line)
