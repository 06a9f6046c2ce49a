"""Composition root of the campaign processor: settings -> topics -> worker -> process.

``pledgeflow processor run`` reads :class:`ProcessorSettings` from the environment and runs
one worker until SIGTERM/SIGINT (which finish the in-flight batch before leaving the group),
with JSON logs and ``/metrics`` + ``/ready`` from the stream runtime. No business rule lives
here: deciding is ``services.pledge.domain``, Kafka is the worker and the runtime.
"""

from __future__ import annotations

import typer

from schemas.topics import ensure_topics
from services.pledge.processor.config import ProcessorSettings
from services.pledge.processor.metrics import processor_metrics
from services.pledge.processor.worker import Clock, Processor, utc_now
from services.streams import configure_logging, run_cli, serve

__all__ = ["build_processor", "processor_app", "run_processor"]

processor_app = typer.Typer(
    name="processor",
    no_args_is_help=True,
    help="The campaign processor: the single writer of campaign events.",
)


def build_processor(settings: ProcessorSettings, *, clock: Clock = utc_now) -> Processor:
    """A processor worker for ``settings`` reporting to the default metrics registry."""
    return Processor(settings, clock=clock, metrics=processor_metrics())


async def run_processor(settings: ProcessorSettings, *, clock: Clock = utc_now) -> None:
    """Run one worker until SIGTERM/SIGINT; serve metrics when ``metrics_port`` > 0."""
    if settings.processor_ensure_topics:
        await ensure_topics(settings.kafka_bootstrap, settings.topics())
    await serve(
        build_processor(settings, clock=clock),
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
    )


@processor_app.command("run")
def run(log_level: str = typer.Option("info", help="Log level (debug, info, warning).")) -> None:
    """Run one processor worker (settings from PLEDGEFLOW_* environment variables)."""
    configure_logging(log_level)
    settings = ProcessorSettings()
    run_cli("processor", lambda: run_processor(settings), bootstrap=settings.kafka_bootstrap)
