"""The API process's settings read the same ``PLEDGEFLOW_`` variables as before."""

from __future__ import annotations

import pytest

from services.pledge.api.config import ApiSettings, api_settings
from services.pledge.config import PledgeSettings
from services.streams.config import StreamSettings


def test_every_api_setting_keeps_its_name_and_default_of_the_service_wide_settings() -> None:
    pledge_fields = PledgeSettings.model_fields
    own = ApiSettings.model_fields.keys() - StreamSettings.model_fields.keys()
    assert own and all(name.startswith("api_") for name in own)
    for name in own | {"kafka_bootstrap", "redis_url", "topic_prefix", "partitions"}:
        info = ApiSettings.model_fields[name]
        assert name in pledge_fields, name
        assert info.default == pledge_fields[name].default, name
        assert info.metadata == pledge_fields[name].metadata, name


def test_api_settings_are_read_from_the_pledgeflow_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_API_RATE_BURST", "7")
    monkeypatch.setenv("PLEDGEFLOW_TOPIC_PREFIX", "t.")
    settings = api_settings()
    assert (settings.api_rate_burst, settings.topic_prefix) == (7, "t.")


def test_service_wide_settings_are_taken_over_field_by_field() -> None:
    settings = api_settings(PledgeSettings(api_keys="t:k", api_max_wait_seconds=2, partitions=3))
    assert isinstance(settings, ApiSettings)
    assert (settings.api_keys, settings.api_max_wait_seconds, settings.partitions) == (
        "t:k",
        2,
        3,
    )


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEFLOW_API_PORT", "70000")
    with pytest.raises(ValueError, match="api_port"):
        ApiSettings()
