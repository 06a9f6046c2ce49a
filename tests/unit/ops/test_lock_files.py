"""The hash-locked requirements agree with pyproject.toml's pins (`make lock` regenerates them):
the image installs requirements.lock with --require-hashes, `make install` (and so CI)
requirements-dev.lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        pins[_name(name.split("[")[0].strip())] = version.strip()
    return pins


def _locked(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    entries = re.findall(
        r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)",
        text,
        flags=re.MULTILINE,
    )
    assert entries, f"{path.name}: no hashed entry"
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, flags=re.MULTILINE)
    assert len(names) == len(entries), f"{path.name}: an entry without --hash"
    return {_name(name): version for name, version, _ in entries}


def test_the_lock_files_hold_every_pin_of_pyproject_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _pins(project["dependencies"])
    extras = _pins(
        [r for group in ("dev", "bench") for r in project["optional-dependencies"][group]]
    )
    image, dev = _locked(REPO / "requirements.lock"), _locked(REPO / "requirements-dev.lock")
    stale = {n: v for n, v in runtime.items() if image.get(n) != v}
    stale |= {n: v for n, v in {**runtime, **extras}.items() if dev.get(n) != v}
    assert stale == {}, f"run `make lock`: pyproject.toml pins not in the lock files: {stale}"
