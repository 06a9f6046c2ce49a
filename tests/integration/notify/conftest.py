"""Fixtures of notify's integration tests: a private mailpit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mailpit import Mailpit, running_mailpit


@pytest.fixture(scope="session")
def mailpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailpit]:
    with running_mailpit(tmp_path_factory.mktemp("mailpit") / "mailpit.log") as server:
        yield server
