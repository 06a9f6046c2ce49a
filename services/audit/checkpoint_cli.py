"""``pledgeflow audit checkpoint``: make a signing key, sign the chain heads once, or run the
checkpointer process. Errors are one line naming the option, exit 2."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.topics import Topics
from services.audit.checkpoints import (
    CheckpointError,
    key_id,
    load_private_key,
    private_pem,
    public_pem,
    write_checkpoints,
)
from services.audit.config import AuditSettings
from services.audit.sources import KafkaSourceError

__all__ = ["app"]

app = typer.Typer(
    name="checkpoint", no_args_is_help=True, help="Signed checkpoints of every chain head."
)

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap (default PLEDGEFLOW_KAFKA_BOOTSTRAP)."),
]
Prefix = Annotated[
    str | None,
    typer.Option("--topic-prefix", help="Topic prefix (default PLEDGEFLOW_TOPIC_PREFIX)."),
]
KeyFile = Annotated[
    Path | None,
    typer.Option("--key", help="Ed25519 private key PEM (default PLEDGEFLOW_CHECKPOINT_KEY_FILE)."),
]


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _setup(
    bootstrap: str | None, prefix: str | None, key: Path | None
) -> tuple[AuditSettings, str, Topics, Ed25519PrivateKey]:
    settings = AuditSettings()
    path = key or settings.checkpoint_key_file
    if path is None:
        _usage("--key: required (or set PLEDGEFLOW_CHECKPOINT_KEY_FILE)")
    try:
        private = load_private_key(path)
    except CheckpointError as exc:
        _usage(f"--key: {exc}")
    topics = Topics(prefix=settings.topic_prefix if prefix is None else prefix)
    return settings, bootstrap or settings.kafka_bootstrap, topics, private


@app.command()
def keygen(
    private: Annotated[Path, typer.Option("--private", help="Write the private key here.")],
    public: Annotated[Path, typer.Option("--public", help="Write the public key here.")],
) -> None:
    """Make an Ed25519 key pair (PKCS#8 / SubjectPublicKeyInfo PEM); refuses to overwrite."""
    for option, path in (("--private", private), ("--public", public)):
        if path.exists():
            _usage(f"{option}: {path} exists (never overwrite a signing key)")
    key = Ed25519PrivateKey.generate()
    private.write_bytes(private_pem(key))
    private.chmod(0o600)
    public.write_bytes(public_pem(key))
    typer.echo(f"key id {key_id(key.public_key())}")


@app.command()
def make(
    key: KeyFile = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Also write them to this JSON Lines file.")
    ] = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
) -> None:
    """Read every event topic to its end, sign each tenant's chain heads and publish them."""
    from services.audit.checkpointer import make_checkpoints

    _, server, topics, private = _setup(bootstrap, topic_prefix, key)
    try:
        made = asyncio.run(make_checkpoints(server, topics, private, tenant=tenant))
    except KafkaSourceError as exc:
        _usage(str(exc))
    if tenant is not None and not made:
        _usage(f"--tenant: no campaign of tenant {tenant!r} in the log")
    if output is not None:
        write_checkpoints(output, made)
    for checkpoint in made:
        typer.echo(f"{checkpoint.describe()}: {len(checkpoint.chains)} chain(s)", err=True)


@app.command()
def run(
    key: KeyFile = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval", help="Seconds (default PLEDGEFLOW_CHECKPOINT_INTERVAL_SECONDS)."
        ),
    ] = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
) -> None:
    """The checkpointer process: follow the log, sign at an interval and on close/settle."""
    from services.audit.checkpointer import run_checkpointer
    from services.audit.metrics import checkpointer_metrics
    from services.streams import ProcessServer, configure_logging

    settings, server, topics, private = _setup(bootstrap, topic_prefix, key)
    every = settings.checkpoint_interval_seconds if interval is None else interval
    if every <= 0:
        _usage("--interval: must be > 0")
    configure_logging("info")
    if settings.metrics_port:
        ProcessServer(settings.metrics_host, settings.metrics_port).start().readiness.set()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_checkpointer(
            server, topics, private, interval=every, stop=stop, metrics=checkpointer_metrics()
        )

    try:
        asyncio.run(main())
    except KafkaSourceError as exc:
        _usage(str(exc))
