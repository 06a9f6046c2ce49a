"""``pledgeflow simulate``: a launch-day crowd against a running Pledgeflow API.

Exit codes: 0 the run kept every promise and the audit is clean; 1 something broke (named in
the output); 2 a bad flag or no API to talk to (one line naming the flag).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from services.simulate.config import SimulateOptions, default_api, default_api_key
from services.usage_errors import OneLineErrors as _OneLineErrors
from services.usage_errors import usage as _usage

__all__ = ["simulate"]


def _console() -> Console:
    """The terminal's width; piped into a file or a CI log, wide enough for the table."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def options_from(flags: dict[str, Any]) -> SimulateOptions:
    """The options, or exit 2 with one line naming the first bad flag."""
    try:
        return SimulateOptions(**flags)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "options"
        message = str(first["msg"]).removeprefix("Value error, ")
        _usage(f"--{field.replace('_', '-')}: {message}")


def simulate(
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the crowd (same seed, same run).")
    ] = 1,
    api: Annotated[
        str | None, typer.Option("--api", help="API base URL (default: make run's).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (default: make run's dev key).")
    ] = None,
    rate: Annotated[float, typer.Option("--rate", help="Average requests per second.")] = 20.0,
    duration: Annotated[float, typer.Option("--duration", help="Seconds of pledging.")] = 60.0,
    campaigns: Annotated[int, typer.Option("--campaigns", help="Number of campaigns.")] = 8,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Prefix of the run's ids (default: seed+time).")
    ] = None,
    settle_timeout: Annotated[
        float, typer.Option("--settle-timeout", help="Seconds to wait for settlement.")
    ] = 60.0,
    mailpit: Annotated[
        str | None, typer.Option("--mailpit", help="mailpit URL, to count e-mails per campaign.")
    ] = None,
    webhooks: Annotated[
        bool, typer.Option("--webhooks/--no-webhooks", help="Register a local webhook receiver.")
    ] = True,
    audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="Run `pledgeflow audit verify` at the end.")
    ] = True,
) -> None:
    """Launch-day traffic through the typed client: campaigns of every kind, a surging crowd,
    refusals, retries, cancellations, failing cards; live figures, then a table per campaign
    and the auditor's verdict."""
    from services.simulate.app import run

    options = options_from(
        {
            "seed": seed, "api": api or default_api(), "api_key": api_key or default_api_key(),
            "rate": rate, "duration": duration, "campaigns": campaigns, "run_id": run_id,
            "settle_timeout": settle_timeout, "mailpit": mailpit, "webhooks": webhooks,
            "audit": audit,
        }
    )  # fmt: skip
    try:
        result = asyncio.run(run(options, _console()))
    except ConnectionError as exc:
        _usage(str(exc))
    raise typer.Exit(0 if result.ok else 1)


def register(app: typer.Typer) -> None:
    """Attach ``simulate`` to the ``pledgeflow`` group."""
    app.command("simulate", cls=_OneLineErrors)(simulate)
