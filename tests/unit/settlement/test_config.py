"""Settlement settings: the retry schedule from the environment, the command topic."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.settlement.config import SettlementSettings, parse_schedule


def test_the_default_schedule_is_one_three_and_seven_days() -> None:
    assert SettlementSettings().policy().retry_schedule == (
        timedelta(days=1), timedelta(days=3), timedelta(days=7),
    )  # fmt: skip


def test_the_schedule_is_shortened_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE", "500ms, 2s,1m")
    steps = SettlementSettings().policy().retry_schedule
    assert steps == (timedelta(milliseconds=500), timedelta(seconds=2), timedelta(minutes=1))


@pytest.mark.parametrize("text", ["1d,x", "3d,1d", "0s", ""])
def test_a_bad_schedule_is_one_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE", text)
    with pytest.raises(ValidationError, match="settlement_retry_schedule"):
        SettlementSettings()


def test_parse_schedule_names_the_bad_step() -> None:
    with pytest.raises(ValueError, match="'2 weeks'"):
        parse_schedule("1d,2 weeks")


def test_commands_have_their_own_topic() -> None:
    topics = SettlementSettings(topic_prefix="t1.").topics()
    assert topics.settlement_commands == "t1.settlement-commands"
    assert topics.get(topics.settlement_commands).kind == "command"
