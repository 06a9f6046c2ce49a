"""Usage errors of the typer sub-commands (``pledgeflow audit``, ``pledgeflow simulate``): one
line naming the option on stderr, exit 2, never click's usage box (the CLI's promise)."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from typer.core import TyperCommand

__all__ = ["OneLineErrors", "usage"]


def usage(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class OneLineErrors(TyperCommand):
    """Usage errors as one line naming the option, exit 2 (no usage box)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:  # click's UsageError family, as typer bundles it
            usage(exc.format_message().replace("\n", " "))
