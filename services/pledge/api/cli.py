"""``pledgeflow api run``: serve the ingest API with uvicorn (uvloop + httptools) or granian
(``PLEDGEFLOW_API_SERVER``; both on uvloop, access log off; ``bench/bench_api.py`` measures
the real endpoint's CPU per request under each)."""

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
    server: str | None = typer.Option(None, help="uvicorn or granian (PLEDGEFLOW_API_SERVER)."),
) -> None:
    """Serve the API; topics are created first if missing."""
    import asyncio

    import uvicorn

    from schemas.topics import Topics, ensure_topics
    from services.pledge.api.auth import ApiKeys

    settings = ApiSettings()
    if not settings.api_keys:
        raise typer.BadParameter("PLEDGEFLOW_API_KEYS is empty: set tenant:key pairs")
    try:  # before anything is started: the app factory would raise it inside uvicorn
        ApiKeys.parse(settings.api_keys)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            Topics(prefix=settings.topic_prefix, partitions=settings.partitions),
        )
    )
    chosen = server or settings.api_server
    if chosen not in ("uvicorn", "granian"):
        raise typer.BadParameter(f"--server: uvicorn or granian, not {chosen!r}")
    bind_host = host or settings.api_host
    bind_port = port if port is not None else settings.api_port
    processes = workers or settings.api_workers
    if chosen == "granian":
        _granian(bind_host, bind_port, processes)
        return
    uvicorn.run(
        "services.pledge.api:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=processes,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


def _granian(host: str, port: int, workers: int) -> None:
    """Serve under granian (Rust HTTP, the app on uvloop); blocks until stopped."""
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    Server(
        "services.pledge.api:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        log_access=False,
        factory=True,
    ).serve()
