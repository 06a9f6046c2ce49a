"""Every ``pledgeflow`` command's usage error is one line naming the command and the option,
exit 2: never click's usage box (the CLI's promise; audit and simulate kept it on their own,
the ledger, settlement, notify, read-model and api commands printed the box)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli import _register, app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["ledger", "--bogus"], ["pledgeflow ledger", "--bogus"]),
        (["ledger"], ["pledgeflow ledger", "--campaign"]),
        (["ledger", "--campaign"], ["pledgeflow ledger", "--campaign"]),
        (["settlement", "readmodel", "run", "--bogus"], ["settlement readmodel run", "--bogus"]),
        (["settlement", "readmodel", "rebuild", "-x"], ["settlement readmodel rebuild", "-x"]),
        (["settlement", "readmodel", "frob"], ["settlement readmodel", "frob"]),
        (["settlement", "run", "--bogus"], ["settlement run", "--bogus"]),
        (["notify", "redrive", "--limit", "3"], ["notify redrive", "--limit"]),
        (["notify", "worker", "--loglevel"], ["notify worker", "--loglevel"]),
        (["readmodel", "rebuild", "--bogus"], ["readmodel rebuild", "--bogus"]),
        (["api", "run", "--port", "abc"], ["api run", "--port"]),
        (["audit", "frob"], ["pledgeflow audit", "frob"]),
        (["frob"], ["pledgeflow", "frob"]),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command_and_option(
    runner: CliRunner, args: list[str], names: list[str]
) -> None:
    result = runner.invoke(app, args, prog_name="pledgeflow")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for name in names:
        assert name in lines[0], result.output


def test_help_and_a_bare_group_still_show_the_help(runner: CliRunner) -> None:
    assert "redrive" in runner.invoke(app, ["notify", "--help"], prog_name="pledgeflow").output
    bare = runner.invoke(app, ["settlement", "readmodel"], prog_name="pledgeflow")
    assert "rebuild" in bare.output and len(bare.output.splitlines()) > 3


def test_the_audit_and_simulate_messages_are_unchanged(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "verify", "--bogus"], prog_name="pledgeflow")
    assert (result.exit_code, result.output.strip()) == (2, "error: No such option: --bogus")


@pytest.mark.parametrize(
    "args",
    [
        ["notify", "redrive"],
        ["readmodel", "rebuild"],
        ["processor", "run"],
        ["api", "run"],
        ["deploy", "wait-topics"],
        ["settlement", "readmodel", "rebuild"],
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(runner: CliRunner, args: list[str]) -> None:
    env = {"PLEDGEFLOW_PARTITIONS": "abc"}
    result = runner.invoke(app, args, prog_name="pledgeflow", env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "PLEDGEFLOW_PARTITIONS" in lines[0], result.output
    assert "Traceback" not in result.output and "abc" in lines[0]


@pytest.mark.parametrize(
    "args",
    [["readmodel", "rebuild"], ["settlement", "readmodel", "rebuild"], ["notify", "redrive"]],
)
def test_a_redis_url_without_a_redis_scheme_is_one_line(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args, prog_name="pledgeflow", env={"PLEDGEFLOW_REDIS_URL": "nope"})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "PLEDGEFLOW_REDIS_URL" in lines[0], result.output
    assert "nope" not in lines[0]  # a URL may hold a password: never repeated


def test_a_bad_secret_setting_is_named_not_repeated(runner: CliRunner) -> None:
    env = {"PLEDGEFLOW_API_KEYS": "no-colon-sup3r-secret"}  # checked before Kafka is asked
    result = runner.invoke(app, ["api", "run"], prog_name="pledgeflow", env=env)
    assert result.exit_code == 2, result.output
    assert "PLEDGEFLOW_API_KEYS" in result.output and "sup3r" not in result.output
