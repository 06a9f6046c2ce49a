"""The simulation's webhook receiver (Standard Webhooks verification, de-duplication) and its
command line (a bad flag is one line naming it)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import pytest
import typer
from standardwebhooks import Webhook
from typer.testing import CliRunner

from services.simulate.cli import register
from services.simulate.receiver import WebhookReceiver, serve_receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed(webhook_id: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, now, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


async def test_the_receiver_verifies_counts_per_campaign_and_drops_repeats() -> None:
    body = orjson.dumps({"type": "PledgeMade", "data": {"campaign_id": "c-1", "seq": 2}})
    async with (
        serve_receiver(WebhookReceiver(secrets={"sim": SECRET})) as receiver,
        httpx.AsyncClient() as http,
    ):
        first = await http.post(receiver.url("sim"), content=body, headers=signed("m1", body))
        again = await http.post(receiver.url("sim"), content=body, headers=signed("m1", body))
        forged = await http.post(
            receiver.url("sim"), content=body, headers=signed("m2", body, "whsec_" + "A" * 32)
        )
        unsigned = await http.post(f"{receiver.base}/hook/bench/1", content=b"{}")
    assert (first.status_code, again.status_code, forged.status_code) == (200, 200, 400)
    assert unsigned.status_code == 200
    assert receiver.verified_ids == {"m1"} and receiver.repeats == 1
    assert receiver.unverified == ["m2"]
    assert receiver.by_campaign == {"c-1": 1} and receiver.by_type == {"PledgeMade": 1}
    assert receiver.accepted_unsigned == 1


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def group() -> None:
        """A group, so that ``simulate`` is a sub-command as in ``pledgeflow``."""

    register(app)
    return app


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "fast"], "--rate"),
        (["--duration", "1"], "--duration"),
        (["--campaigns", "0"], "--campaigns"),
        (["--api", "localhost:8000"], "--api"),
        (["--run-id", "no spaces"], "--run-id"),
        (["--mailpit", "8025"], "--mailpit"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(args: list[str], field: str) -> None:
    result = CliRunner().invoke(cli(), ["simulate", "--api-key", "k", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], result.output


@pytest.mark.parametrize(
    "args",
    [["--duration", "nan"], ["--rate", "nan"], ["--settle-timeout", "nan"],
     ["--settle-timeout", "inf"]],
)  # fmt: skip
def test_a_number_that_is_not_finite_is_named_so(args: list[str]) -> None:
    result = CliRunner().invoke(cli(), ["simulate", "--api-key", "k", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {args[0]}: Input should be a finite number"], result.output


def test_no_key_anywhere_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("PLEDGEFLOW_API_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    result = CliRunner().invoke(cli(), ["simulate"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --api-key: required"), result.output


def test_an_api_that_does_not_answer_is_one_line() -> None:
    result = CliRunner().invoke(
        cli(), ["simulate", "--api-key", "k", "--api", "http://127.0.0.1:9", "--no-audit"]
    )
    assert result.exit_code == 2
    assert result.output.strip() == "error: --api: no ready Pledgeflow API at http://127.0.0.1:9"


def test_a_plan_too_large_to_hold_is_refused_before_it_is_built() -> None:
    # The whole plan is built in memory before the run: --rate 10000 --duration 86400 (both
    # within their own bounds) was 864 million requests, a MemoryError or the box's OOM killer.
    from pydantic import ValidationError

    from services.simulate.config import MAX_REQUESTS, SimulateOptions

    SimulateOptions(api="http://a", api_key="k", rate=MAX_REQUESTS / 100, duration=100)
    with pytest.raises(ValidationError, match="at most"):
        SimulateOptions(api="http://a", api_key="k", rate=10_000, duration=86_400)
    result = CliRunner().invoke(
        cli(), ["simulate", "--api-key", "k", "--rate", "10000", "--duration", "86400"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --duration: ") and "--rate" in lines[0]
