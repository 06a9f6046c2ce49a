"""Usage errors of ``pledgeflow``: one line naming the option on stderr, exit 2, never click's
usage box (the CLI's promise). :class:`OneLineGroup` (the root group) does it for every
sub-command, naming the command; :class:`OneLineErrors` keeps the shorter ``error: message``
of ``pledgeflow audit`` and ``pledgeflow simulate``."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

# typer 0.29 bundles its own click: its exceptions live here (typer exports only their base).
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup

__all__ = ["OneLineErrors", "OneLineGroup", "setting_error", "usage"]


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


class OneLineGroup(TyperGroup):
    """The root group: any usage error below it (an unknown option, command or a bad value)
    is ``error: <command path>: <message>`` on one line, exit 2. ``--help`` and a bare group
    still print the help."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else _path(prog_name, args)
            message = exc.format_message().replace("\n", " ")
            typer.echo(f"error: {where}: {message}", err=True)
            sys.exit(2)
        except typer.TyperException as exc:  # the rest of click's exceptions (a file error)
            typer.echo(f"error: {exc}".replace("\n", " "), err=True)
            sys.exit(getattr(exc, "exit_code", 1))
        except ValidationError as exc:
            if not exc.title.endswith("Settings"):
                raise  # not the environment's fault: a bug, keep its traceback
            typer.echo(f"error: {_path(prog_name, args)}: {setting_error(exc)}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _path(prog_name: str | None, args: Any) -> str:
    """The command path typed (the words before the first option), for an error click raised
    without its context (a missing option value)."""
    words = list(sys.argv[1:] if args is None else args)
    first = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
    return " ".join([prog_name or "pledgeflow", *words[:first]])


#: Settings whose value is not repeated in an error (it may hold a credential).
_SECRET_WORDS = ("key", "secret", "password", "token", "url", "sasl", "credential")


def setting_error(error: ValidationError) -> str:
    """A settings class's validation error as one line naming the environment variable and
    the value it had: ``PLEDGEFLOW_PARTITIONS: Input should be a valid integer (got 'abc')``."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = f"PLEDGEFLOW_{field.upper()}" if field else error.title
    more = error.error_count() - 1
    suffix = f" (+{more} more)" if more else ""
    got = first.get("input")
    secret = any(word in field for word in _SECRET_WORDS)  # never echo a key or a password
    shown = f" (got {got!r})" if isinstance(got, str | int | float) and not secret else ""
    return f"{name}: {first['msg'].removeprefix('Value error, ')}{shown}{suffix}"
