"""The frame the multi-worker fault tests share (``tests/support/fleet.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fleet import FaultRun, fault_run


@pytest.fixture
async def run(
    request: pytest.FixtureRequest, bootstrap: str, redis_server: str, unique: str, tmp_path: Path
) -> AsyncIterator[FaultRun]:
    """A :class:`FaultRun` under ``<unique>.`` on the test module's ``PARTITIONS``; its
    teardown stops every worker first."""
    partitions: int = request.module.PARTITIONS
    async with fault_run(
        bootstrap, redis_server, tmp_path, prefix=f"{unique}.", partitions=partitions
    ) as frame:
        yield frame
