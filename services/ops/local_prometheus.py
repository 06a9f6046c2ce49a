"""The local Prometheus's configuration for the ports a run actually uses.

``deploy/local/prometheus.yml`` is the reviewed file (default ports, ``namespace="local"``);
``make run`` (deploy/local/prometheus/serve.sh) and the live dashboard test write a copy with
the run's ports, namespace and scrape interval, and the rule file by absolute path, so the
copy can live anywhere. Jobs are matched by name, so a job added to the file is kept as is.

    python -m services.ops.local_prometheus --api 8000 --processor 9101 --projector 9102
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

__all__ = ["LOCAL_CONFIG", "local_config"]

_REPO = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = _REPO / "deploy" / "local" / "prometheus.yml"


def local_config(
    ports: dict[str, int],
    *,
    namespace: str = "local",
    scrape_interval: str | None = None,
    source: Path = LOCAL_CONFIG,
) -> str:
    """``source`` with each job of ``ports`` (job name -> port) scraping 127.0.0.1:port."""
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    config["rule_files"] = [str((source.parent / rule).resolve()) for rule in config["rule_files"]]
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    unknown = set(ports) - {job["job_name"] for job in config["scrape_configs"]}
    if unknown:
        raise ValueError(f"no scrape job named {sorted(unknown)} in {source}")
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            if job["job_name"] in ports:
                static["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
            static.setdefault("labels", {})["namespace"] = namespace
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", type=int, required=True)
    parser.add_argument("--processor", type=int, required=True)
    parser.add_argument("--projector", type=int, required=True)
    parser.add_argument("--notify", type=int, default=None)
    parser.add_argument("--settlement", type=int, default=None)
    parser.add_argument("--settlement-readmodel", type=int, default=None)
    parser.add_argument("--namespace", default="local")
    args = parser.parse_args()
    ports = {
        "pledgeflow-api": args.api,
        "pledgeflow-processor": args.processor,
        "pledgeflow-projector": args.projector,
    }
    # The workers `make run` starts beside them (their jobs keep the file's default port
    # when not given).
    for job, port in (
        ("pledgeflow-notify", args.notify),
        ("pledgeflow-settlement", args.settlement),
        ("pledgeflow-settlement-readmodel", args.settlement_readmodel),
    ):
        if port is not None:
            ports[job] = port
    print(local_config(ports, namespace=args.namespace), end="")


if __name__ == "__main__":
    main()
