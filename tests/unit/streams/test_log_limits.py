"""Repeated log lines while a dependency is down: one per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from services.streams.log_limits import RepeatedLogFilter, limit_repeated_root_logs


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeated_message_passes_once_per_interval_and_says_how_many_were_held() -> None:
    clock = Clock()
    limit = RepeatedLogFilter(every_s=10.0, clock=clock)
    passed = []
    for second in range(25):
        for _ in range(100):  # a hundred reconnect errors a second
            clock.now = float(second)
            rec = record("Unable connect to node with id %s: %s", 1, "refused")
            if limit.filter(rec):
                passed.append(rec.getMessage())
    assert len(passed) == 3  # at 0 s, 10 s and 20 s
    assert passed[0] == "Unable connect to node with id 1: refused"
    assert passed[1].endswith("[999 like it in the last 10 s]")


def test_different_messages_are_never_held_back() -> None:
    limit = RepeatedLogFilter(every_s=10.0, clock=Clock())
    assert limit.filter(record("broker down"))
    assert limit.filter(record("redis down"))
    assert limit.filter(record("broker down", name="pledgeflow.api"))
    assert not limit.filter(record("broker down"))


def test_a_root_logger_without_handlers_gets_a_limited_one_and_a_configured_one_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    limit_repeated_root_logs()
    [handler] = root.handlers
    assert handler.level == logging.WARNING
    assert any(isinstance(f, RepeatedLogFilter) for f in handler.filters)
    limit_repeated_root_logs()
    assert root.handlers == [handler]
