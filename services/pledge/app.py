"""Wiring of the campaign processor: settings -> topics -> worker, signals, metrics endpoint.

``pledgeflow processor run`` reads :class:`PledgeSettings` from the environment and runs one
worker until SIGTERM/SIGINT (which finish the in-flight batch before leaving the group).
No business rule lives here: deciding is ``services.pledge.domain``, Kafka is
``services.pledge.processor`` and its adapters.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import orjson
import typer

from schemas.topics import Topics, ensure_topics
from services.pledge.config import PledgeSettings
from services.pledge.metrics import processor_metrics, serve_metrics
from services.pledge.processor import Clock, Processor, utc_now

__all__ = ["build_processor", "processor_app", "run_processor"]

processor_app = typer.Typer(
    name="processor",
    no_args_is_help=True,
    help="The campaign processor: the single writer of campaign events.",
)


def build_processor(settings: PledgeSettings, *, clock: Clock = utc_now) -> Processor:
    """A processor worker for ``settings`` reporting to the default metrics registry."""
    return Processor(settings, clock=clock, metrics=processor_metrics())


async def run_processor(settings: PledgeSettings, *, clock: Clock = utc_now) -> None:
    """Run one worker until SIGTERM/SIGINT; serve metrics when ``metrics_port`` > 0."""
    if settings.processor_ensure_topics:
        topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
        await ensure_topics(settings.kafka_bootstrap, topics)
    serve_metrics(settings.metrics_port)
    processor = build_processor(settings, clock=clock)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await processor.start()
    assert processor._task is not None
    done = asyncio.ensure_future(stop.wait())
    await asyncio.wait({done, processor._task}, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    await processor.stop()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@processor_app.command("run")
def run(log_level: str = typer.Option("info", help="Log level (debug, info, warning).")) -> None:
    """Run one processor worker (settings from PLEDGEFLOW_* environment variables)."""
    from aiokafka.errors import KafkaConnectionError

    _configure_logging(log_level)
    settings = PledgeSettings()
    try:
        asyncio.run(run_processor(settings))
    except KafkaConnectionError as exc:
        # One line, no traceback: its supervisor (honcho, Kubernetes) restarts it.
        typer.echo(f"processor: Kafka at {settings.kafka_bootstrap} unreachable: {exc}", err=True)
        raise typer.Exit(1) from None
