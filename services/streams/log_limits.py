"""A log filter that lets a repeated message through once per interval.

While a dependency is down, every client retry (API) or reconnect attempt (aiokafka, about
a hundred a second per process) logs the same line; megabytes of it hide the first and the
last line, which are the ones an operator needs. :class:`RepeatedLogFilter` passes the first
record of each (logger, message template, level) and then at most one per ``every_s``
seconds, which says how many like it were held back. Different messages are never held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RepeatedLogFilter", "limit_repeated_root_logs"]

_MAX_KINDS = 1024


class RepeatedLogFilter(logging.Filter):
    """Passes each kind of record (logger, template, level) at most once per ``every_s``."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        #: kind -> (when last passed, records held back since)
        self._kinds: dict[tuple[str, object, int], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.msg, record.levelno)
        now = self._clock()
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.every_s:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        if len(self._kinds) >= _MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if last is not None and last[1]:
            # Say how many were held back, in the message itself (every formatter shows it).
            record.msg = f"{record.msg} [{last[1]} like it in the last {now - last[0]:.0f} s]"
        return True


def limit_repeated_root_logs(every_s: float = 10.0) -> None:
    """For a process whose root logger has no handler (the API under uvicorn: aiokafka's
    connection errors would go to Python's last-resort handler one by one): a stderr handler
    at WARNING, as that one, passing each repeated message once per ``every_s``. Left alone
    when logging is configured already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.addFilter(RepeatedLogFilter(every_s=every_s))
    root.addHandler(handler)
