"""A real Prometheus and promtool for tests (Debian's ``prometheus`` package).

``deploy/local/prometheus/install.sh`` installs the package when missing (as root), the same
way ``make run`` and ``make deploy-check`` get it, so a fresh clone's ``make test`` has it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "local" / "prometheus" / "install.sh"


def ensure_prometheus() -> None:
    """Make ``prometheus`` and ``promtool`` available on PATH (installing them when missing)."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    subprocess.run([str(INSTALL)], check=True, timeout=600)
