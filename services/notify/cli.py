"""``pledgeflow notify``: the worker, and ``redrive`` of the dead-letter topic.

Exit codes of ``redrive``: 0 done, 2 an unreachable Kafka/Redis or a missing topic (one line).
"""

from __future__ import annotations

import asyncio
import logging

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Webhooks and e-mail (the notify worker).")


@app.command()
def worker(
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="crit|error|warn|info|debug"),
) -> None:
    """Run the notify worker (faust) with PLEDGEFLOW_* settings."""
    from services.notify.app import main

    main(["worker", "-l", loglevel])


@app.command()
def redrive() -> None:
    """Queue what notify.dlq holds for delivery again (the worker sends it, same ids)."""
    from aiokafka.errors import KafkaConnectionError

    from services.notify.config import NotifySettings
    from services.notify.redrive import redrive as run
    from services.streams import SourceError

    settings = NotifySettings()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures: our one line below
    try:
        report = asyncio.run(run(settings))
    except KafkaConnectionError:
        bootstrap = settings.kafka_bootstrap
        typer.echo(
            f"notify redrive: PLEDGEFLOW_KAFKA_BOOTSTRAP: cannot reach Kafka at {bootstrap}",
            err=True,
        )
        raise typer.Exit(2) from None
    except (SourceError, LookupError, OSError, ConnectionError) as exc:
        typer.echo(f"notify redrive: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # an unreachable broker surfaces as a KafkaError
        typer.echo(f"notify redrive: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"requeued {report.requeued} dead letter(s); {report.unreadable} not redrivable "
        "(records the worker could not apply: see their dlq.cause header)"
    )
