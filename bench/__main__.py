"""`python -m bench [NAME]`: run every bench/bench_*.py (or bench_NAME.py), then one summary table.

Each benchmark runs in its own process so one's memory and event loop never skew another's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def modules(name: str | None) -> list[str]:
    if name:
        path = HERE / f"bench_{name}.py"
        if not path.exists():
            raise SystemExit(f"bench: no benchmark named {name!r} (looked for {path.name})")
        return [path.stem]
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def summary(since: float) -> Table:
    table = Table(title="Pledgeflow benchmarks")
    for column in ("name", "metric", "value", "unit", "baseline", "ratio", "target", "met"):
        table.add_column(column)
    for path in sorted(RESULTS.glob("*.json")):
        if path.stat().st_mtime < since:
            continue
        r = orjson.loads(path.read_bytes())
        base = r["baseline"]
        target = r["target"]
        wanted = " · ".join(
            part
            for part in (
                f"value {target['value']}" if target.get("value") is not None else "",
                f"ratio ≥ {target['ratio']}" if target.get("ratio") is not None else "",
            )
            if part
        )
        table.add_row(
            r["name"],
            r["metric"],
            f"{r['value']:,}",
            r["unit"],
            f"{base['name']}: {base['value']:,}" if base else "—",
            "—" if r["ratio"] is None else f"{r['ratio']}x",
            wanted or "—",
            "[green]yes[/]" if r["met"] else "[red]no[/]",
        )
    return table


def main(argv: list[str]) -> int:
    started = time.time()
    failed = []
    for module in modules(argv[0] if argv else None):
        print(f"== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{module}"]).returncode != 0:
            failed.append(module)
    Console(width=200).print(summary(started))
    if failed:
        print(f"bench: failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
