"""``pledgeflow ledger --api-url``: bad input is one line naming the field, never a traceback
(the table itself is proven against a real API in tests/integration/test_settlement_api.py)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from services.settlement.cli import ledger


def main_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as under ``pledgeflow``
    app.command("ledger")(ledger)
    return app


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (
            ["--campaign", "bad id!", "--api-url", "http://127.0.0.1:9", "--api-key", "k"],
            "campaign",
        ),
        (["--campaign", "c-1", "--api-url", "http://127.0.0.1:9"], "api-key"),
        (["--campaign", "c-1", "--api-url", "ftp://x", "--api-key", "k"], "api-url"),
        (["--campaign", "c-1", "--api-url", "http://127.0.0.1:9", "--api-key", "k"], "api-url"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(args: list[str], field: str) -> None:
    result = CliRunner().invoke(main_app(), ["ledger", *args], env={"PLEDGEFLOW_API_KEY": ""})
    assert result.exit_code in (1, 2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ledger: {field}:"), result.output
    assert "Traceback" not in result.output
