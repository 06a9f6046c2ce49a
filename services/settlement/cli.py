"""``pledgeflow settlement run`` (the worker) and ``pledgeflow ledger --campaign ID`` (a
campaign's ledger balances, read from the settlement stream)."""

from __future__ import annotations

import asyncio
import logging

import typer

__all__ = ["app", "ledger"]

app = typer.Typer(no_args_is_help=True, help="The settlement worker (captures, refunds, ledger).")


def _settings() -> object:
    """The settings; a bad PLEDGEFLOW_* value raises, answered as one line naming it by the
    root group (services.usage_errors.OneLineGroup)."""
    from services.settlement.config import SettlementSettings

    return SettlementSettings()


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
    from services.streams import SourceError, configure_logging

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    configure_logging("info")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures: our one line below
    try:
        applied = asyncio.run(rebuild(settings))
    except SourceError as exc:
        typer.echo(f"settlement readmodel rebuild: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"settlement read model rebuilt: {applied} events applied")


def ledger(
    campaign: str = typer.Option(..., "--campaign", help="Campaign id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    api_url: str = typer.Option(
        "",
        "--api-url",
        envvar="PLEDGEFLOW_API_URL",
        help="Read GET /v1/campaigns/{id}/settlement of this API (the campaign id as the "
        "tenant knows it); without it the settlement stream is read from Kafka (the "
        "tenant-qualified id).",
    ),
    api_key: str = typer.Option(
        "", "--api-key", envvar="PLEDGEFLOW_API_KEY", help="API key (with --api-url)."
    ),
) -> None:
    """Print a campaign's ledger balances (and its settlement, once settled)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    if api_url:
        _ledger_from_api(campaign, as_json, api_url, api_key)
        return
    from services.settlement.config import SettlementSettings
    from services.settlement.statement import read_statement
    from services.streams import SourceError

    settings = _settings()
    assert isinstance(settings, SettlementSettings)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures: our one line below
    try:
        statement = asyncio.run(read_statement(settings, campaign))
    except SourceError as exc:
        typer.echo(f"ledger: {exc}", err=True)
        raise typer.Exit(2) from None
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


def _ledger_from_api(campaign: str, as_json: bool, api_url: str, api_key: str) -> None:
    """``ledger --api-url``: the settlement read model through the typed client; every
    failure is one line naming what is wrong."""
    import re

    import httpx
    from rich.console import Console
    from rich.table import Table

    from schemas.money import Money, format_money
    from schemas.pledge_fields import ID_PATTERN
    from services.client import (
        NotFound,
        PledgeflowClient,
        PledgeflowError,
        RetryPolicy,
        Unauthorized,
    )
    from services.settlement.api_models import SettlementView

    def fail(message: str) -> None:
        typer.echo(f"ledger: {message}", err=True)
        raise typer.Exit(2 if message.startswith(("campaign:", "api-key:", "api-url:")) else 1)

    if not re.fullmatch(ID_PATTERN, campaign):
        fail(f"campaign: {campaign!r} is not a campaign id ({ID_PATTERN})")
    if not api_key:
        fail("api-key: required with --api-url (or PLEDGEFLOW_API_KEY)")
    if not api_url.startswith(("http://", "https://")):
        fail(f"api-url: {api_url!r} is not an http(s) URL")

    async def read() -> SettlementView:
        retry = RetryPolicy(attempts=2)
        async with PledgeflowClient(api_url, api_key, timeout=10.0, retry=retry) as client:
            return await client.get_settlement(campaign)

    try:
        view = asyncio.run(read())
    except NotFound:
        fail(f"campaign: no campaign {campaign!r} for this API key")
    except Unauthorized:
        fail(f"api-key: the API at {api_url} does not accept this key")
    except PledgeflowError as exc:
        fail(f"api: {exc}")
    except httpx.HTTPError as exc:
        fail(f"api-url: {api_url} not reachable ({type(exc).__name__})")
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return

    def money(minor: int) -> str:
        return format_money(Money(amount_minor=minor, currency=view.gross.currency))

    table = Table(title=f"Ledger of {campaign} ({view.gross.currency}, seq {view.seq})")
    for column in ("account", "debits", "credits", "balance"):
        table.add_column(column, justify="left" if column == "account" else "right")
    for line in view.ledger:
        debit, credit = line.debit_minor, line.credit_minor
        balance = debit - credit if line.account == "backer_funds" else credit - debit
        table.add_row(line.account, money(debit), money(credit), money(balance))
    console = Console()
    console.print(table)
    console.print(
        f"{view.status}{f' {view.outcome}' if view.outcome else ''}: gross "
        f"{money(view.gross.amount_minor)}, commission {money(view.commission.amount_minor)}, "
        f"fees {money(view.fees.amount_minor)}, payout {money(view.payout.amount_minor)}"
    )
    console.print(
        f"captured {view.captured_count}, failed {view.failed_count}, released "
        f"{view.released_count}, refunded {view.refunded_count}"
    )
