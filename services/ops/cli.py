"""``pledgeflow deploy ...``: keep the generated deployment files in step with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.ops.manifests import render

app = typer.Typer(name="deploy", no_args_is_help=True, help="Deployment files.")

_REPO = Path(__file__).resolve().parents[2]


@app.command("render")
def render_command(
    repo: Annotated[Path, typer.Option(help="Repository root.")] = _REPO,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when a file is stale.")
    ] = False,
) -> None:
    """Write the KafkaTopic manifests and the dashboard copy under deploy/k8s/base."""
    stale = [item for item in render(repo) if not item.is_current()]
    if check:
        for item in stale:
            typer.echo(f"stale: {item.path} (run `pledgeflow deploy render`)", err=True)
        raise typer.Exit(1 if stale else 0)
    for item in stale:
        item.path.parent.mkdir(parents=True, exist_ok=True)
        item.path.write_text(item.text, encoding="utf-8")
        typer.echo(f"wrote {item.path}")
    if not stale:
        typer.echo("deployment files are current")


@app.command("wait-topics")
def wait_topics_command(
    within: Annotated[float, typer.Option(help="Seconds to wait before giving up.")] = 300.0,
) -> None:
    """Wait until Kafka serves every registry topic (an init container of each process).

    In Kubernetes the topic operator creates the topics with their production replication;
    a process starting first would otherwise create a missing one itself, unreplicated.
    """
    import asyncio
    import logging

    from services.ops.config import OpsSettings
    from services.ops.topics_ready import TopicsNotReady, wait_for_topics

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the outcome is our one line
    settings = OpsSettings()
    topics = settings.topics()
    try:
        asyncio.run(wait_for_topics(settings.kafka_bootstrap, topics, within))
    except TopicsNotReady as exc:
        typer.echo(f"topics: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"all {len(topics.all())} topics are served")


@app.command("validate")
def validate_command(
    overlays: Annotated[list[Path], typer.Argument(help="Kustomize overlay directories.")],
    kustomize: Annotated[Path, typer.Option(help="The kustomize binary.")] = Path(
        ".local/bin/kustomize"
    ),
    kubernetes_version: Annotated[
        str, typer.Option(help="Kubernetes release whose API schemas apply.")
    ] = "1.33",
) -> None:
    """Validate the rendered overlays offline: built-in kinds (strict) and the CRD kinds
    that have a schema in a registry; say which kinds were checked."""
    from services.ops.overlays import validate_overlay

    failed = False
    for overlay in overlays:
        try:
            report = validate_overlay(kustomize, overlay, kubernetes_version)
        except ValueError as exc:
            typer.echo(f"{overlay}: {exc}", err=True)
            failed = True
            continue
        typer.echo(f"{overlay}:")
        typer.echo(
            f"  Kubernetes {kubernetes_version} schemas, strict: "
            + ", ".join(sorted(report.builtin))
        )
        typer.echo("  CRD schemas (npm @kubernetes-models): " + ", ".join(sorted(report.crds)))
        if report.unchecked:
            typer.echo("  no schema available: " + ", ".join(sorted(report.unchecked)))
        for error in report.errors:
            typer.echo(f"  error: {error}", err=True)
        failed = failed or bool(report.errors)
    raise typer.Exit(1 if failed else 0)
