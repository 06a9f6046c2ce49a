"""Composition root of the read-model projector, and ``pledgeflow readmodel run|rebuild``.

``run`` projects the campaign topics into Redis until SIGTERM/SIGINT (JSON logs, ``/metrics``
and ``/ready`` from the stream runtime); ``rebuild`` wipes this prefix's read model and
replays the topics from the beginning (stop the running projector first).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from schemas.topics import ensure_topics
from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
from services.pledge.projector.config import ProjectorSettings
from services.pledge.projector.projector import Projector
from services.pledge.projector.rebuilding import ProjectorWorker, replay
from services.streams import (
    SourceError,
    check_redis,
    configure_logging,
    run_cli,
    serve,
    topic_partitions,
)

__all__ = ["ProjectorProcess", "readmodel_cli", "rebuild", "run_projector"]

log = logging.getLogger("pledgeflow.readmodel")


async def rebuild(settings: ProjectorSettings) -> int:
    """Wipe this prefix's read model and replay every campaign topic from the beginning.

    Stop the running projector first. Returns the number of events applied; raises
    :class:`~services.streams.SourceError`, wiping nothing, when it could not replay.
    """
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        # Wipe only once the replay can run: Redis answers, Kafka is in reach, the topics exist.
        await check_redis(client, settings.redis_url)
        await topic_partitions(
            settings.kafka_bootstrap,
            settings.topics().for_stream("campaign"),
            settings.topic_prefix,
        )
        store = ReadModelStore(client, Keys(settings.topic_prefix))
        await store.wipe()
        # A one-off member: never under the running projector's static id.
        one_off = settings.model_copy(update={"readmodel_instance_id": None})
        return await replay(Projector(one_off, client, from_beginning=True))
    finally:
        await client.aclose()


class ProjectorProcess(ProjectorWorker[Projector]):
    """The projector as a stream-runtime worker: its Redis client, its loop, its drain."""

    def __init__(self, settings: ProjectorSettings) -> None:
        self.settings = settings
        client = aioredis.Redis.from_url(settings.redis_url)
        super().__init__(client, Projector(settings, client), "projector")

    def _started(self) -> None:
        log.info(
            "projecting %s* into Redis (group %s)",
            self.settings.topic_prefix,
            self.projector.group,
        )


async def run_projector(settings: ProjectorSettings) -> None:
    """Create missing topics, then project until SIGTERM/SIGINT."""
    await ensure_topics(settings.kafka_bootstrap, settings.topics())
    await serve(
        ProjectorProcess(settings),
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
    )


def readmodel_cli() -> Any:
    """``pledgeflow readmodel run|rebuild``."""
    import typer

    cli = typer.Typer(name="readmodel", no_args_is_help=True, help="Read-model projector.")

    @cli.command("run")
    def run_command(
        log_level: str = typer.Option("info", help="Log level (debug, info, warning)."),
    ) -> None:
        """Project the campaign topics into Redis until interrupted."""
        configure_logging(log_level)
        settings = ProjectorSettings()
        run_cli("projector", lambda: run_projector(settings), bootstrap=settings.kafka_bootstrap)

    @cli.command("rebuild")
    def rebuild_command() -> None:
        """Wipe the read model (this topic prefix) and replay the topics from the beginning."""
        settings = ProjectorSettings()
        configure_logging("info")
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures: one line below
        try:
            applied = asyncio.run(rebuild(settings))
        except SourceError as exc:
            typer.echo(f"readmodel rebuild: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"read model rebuilt: {applied} events applied")

    return cli
