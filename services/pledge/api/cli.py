"""``pledgeflow api run``: serve the ingest API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import typer

from services.pledge.api.config import ApiSettings

__all__ = ["cli"]

cli = typer.Typer(name="api", no_args_is_help=True, help="Ingest API (FastAPI).")


@cli.command("run")
def run(
    host: str | None = typer.Option(None, help="Bind address (PLEDGEFLOW_API_HOST)."),
    port: int | None = typer.Option(None, help="Port (PLEDGEFLOW_API_PORT)."),
    workers: int | None = typer.Option(None, help="Processes (PLEDGEFLOW_API_WORKERS)."),
) -> None:
    """Serve the API; topics are created first if missing."""
    import asyncio

    import uvicorn

    from schemas.topics import Topics, ensure_topics

    settings = ApiSettings()
    if not settings.api_keys:
        raise typer.BadParameter("PLEDGEFLOW_API_KEYS is empty: set tenant:key pairs")
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            Topics(prefix=settings.topic_prefix, partitions=settings.partitions),
        )
    )
    uvicorn.run(
        "services.pledge.api:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        workers=workers or settings.api_workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
