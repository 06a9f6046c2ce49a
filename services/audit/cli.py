"""``pledgeflow audit``: export, replay, verify, report. Read-only towards Kafka and Redis.

Kept as one module: one Typer group whose commands are thin wiring over the audit modules;
the exit-code and one-line-error conventions live in one place.

Exit codes: 0 clean, 1 the log breaks a rule (the first bad event is named), 2 bad usage or an
unreachable source (one line naming the option).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from schemas.events import EVENT_TYPES
from schemas.topics import Topics
from services.audit.archive import DEFAULT_SEGMENT_EVENTS, ArchiveError
from services.audit.config import AuditSettings
from services.audit.rules import RULES
from services.audit.sources import AuditRun, KafkaSourceError, audit_archive, audit_kafka
from services.usage_errors import OneLineErrors as _OneLineErrors
from services.usage_errors import usage as _usage

__all__ = ["app"]


app = typer.Typer(
    name="audit",
    no_args_is_help=True,
    help="Auditors' tools: export topics to an archive, replay, verify, report (read-only).",
)
_err = Console(stderr=True)


# --- shared options ------------------------------------------------------------------------

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap (default PLEDGEFLOW_KAFKA_BOOTSTRAP)."),
]
Prefix = Annotated[
    str | None,
    typer.Option("--topic-prefix", help="Topic prefix (default PLEDGEFLOW_TOPIC_PREFIX)."),
]
TopicsOpt = Annotated[
    str | None,
    typer.Option("--topics", help="Comma-separated event types or topic names (default: all)."),
]
Campaign = Annotated[str | None, typer.Option("--campaign", help="Only this campaign.")]
FromDir = Annotated[Path | None, typer.Option("--from", help="Read this archive folder.")]
FromKafka = Annotated[bool, typer.Option("--from-kafka", help="Read the Kafka topics.")]
Workers = Annotated[
    int | None, typer.Option("--workers", help="Processes (default: one per core).")
]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary.")]


def _settings(bootstrap: str | None, prefix: str | None) -> tuple[str, str]:
    """The Kafka source; aiokafka's own log lines are muted (a failure is our one line)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings = AuditSettings()
    return bootstrap or settings.kafka_bootstrap, (
        settings.topic_prefix if prefix is None else prefix
    )


def _topics(prefix: str, selection: str | None) -> list[str]:
    """Full topic names of the selection (event types or topic names), all event topics by
    default; an unknown name is a usage error."""
    registry = Topics(prefix=prefix)
    by_type = registry.event_topics()
    if selection is None:
        return list(by_type.values())
    chosen: list[str] = []
    for name in (part.strip() for part in selection.split(",")):
        if not name:
            continue
        if name in by_type:
            chosen.append(by_type[name])
        elif name in by_type.values():
            chosen.append(name)
        else:
            _usage(f"--topics: unknown event topic {name!r} (known: {', '.join(EVENT_TYPES)})")
    if not chosen:
        _usage("--topics: no topic given")
    return list(dict.fromkeys(chosen))


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr (only on a terminal, so pipes and --json stay clean)."""
    if not enabled or not _err.is_terminal:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _run_source(
    from_dir: Path | None,
    from_kafka: bool,
    bootstrap: str | None,
    prefix: str | None,
    topics: str | None,
    campaign: str | None,
    workers: int | None,
    keep_folds: bool,
    show_progress: bool,
) -> AuditRun:
    if (from_dir is None) == (not from_kafka):
        _usage("--from/--from-kafka: give exactly one source")
    if workers is not None and workers < 1:
        _usage("--workers: must be >= 1")
    with _progress("reading", show_progress) as progress:
        try:
            if from_dir is not None:
                if not from_dir.is_dir():
                    _usage(f"--from: {from_dir} is not a folder")
                return audit_archive(
                    from_dir, workers=workers, campaign=campaign, keep_folds=keep_folds,
                    progress=progress,
                )  # fmt: skip
            server, topic_prefix = _settings(bootstrap, prefix)
            return audit_kafka(
                server, _topics(topic_prefix, topics), workers=workers, campaign=campaign,
                keep_folds=keep_folds, progress=progress,
            )  # fmt: skip
        except ArchiveError as exc:
            _usage(f"--from: {exc}")
        except KafkaSourceError as exc:
            _usage(str(exc))


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _rate(run: AuditRun) -> float:
    return run.events / run.seconds if run.seconds else 0.0


# --- commands ------------------------------------------------------------------------------


@app.command(cls=_OneLineErrors)
def export(
    folder: Annotated[Path, typer.Argument(help="Archive folder (created or continued).")],
    topics: TopicsOpt = None,
    campaign: Campaign = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant's campaigns (all streams).")
    ] = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
    segment_events: Annotated[
        int, typer.Option("--segment-events", help="Lines per segment.")
    ] = DEFAULT_SEGMENT_EVENTS,
    json: Json = False,
) -> None:
    """Copy the event topics (from the beginning, or from where the last export stopped)
    into FOLDER: gzip JSON Lines segments + manifest.json with SHA-256s and offsets."""
    from services.audit.checkpoints import CheckpointError
    from services.audit.export import ExportOptionError, export_archive

    if tenant is not None and not tenant:
        _usage("--tenant: must not be empty")
    if segment_events < 1:
        _usage("--segment-events: must be >= 1")
    if folder.exists() and not folder.is_dir():
        _usage(f"FOLDER: {folder} exists and is not a folder")
    server, prefix = _settings(bootstrap, topic_prefix)
    chosen = _topics(prefix, topics)
    with _progress("exporting", not json) as progress:
        try:
            result = asyncio.run(
                export_archive(
                    server, folder, chosen, topic_prefix=prefix, campaign=campaign,
                    tenant=tenant, segment_events=segment_events, progress=progress,
                )
            )  # fmt: skip
        except (ExportOptionError, KafkaSourceError, ArchiveError) as exc:
            _usage(str(exc))
        except CheckpointError as exc:
            _usage(f"FOLDER: {exc}")
    if json:
        _print_json(result.as_dict())
    else:
        total = result.manifest.events if result.manifest else result.events
        _err.print(
            f"exported {result.events:,} new events into {len(result.segments)} segment(s) "
            f"of {folder} ({total:,} in the archive) in {result.seconds:.1f}s"
            + (f"; {result.gaps} event(s) after a seq gap" if result.gaps else "")
        )


@app.command(cls=_OneLineErrors)
def replay(
    from_dir: FromDir = None,
    from_kafka: FromKafka = False,
    campaign: Campaign = None,
    topics: TopicsOpt = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
    workers: Workers = None,
    limit: Annotated[int, typer.Option("--limit", help="Table rows shown (0 = all).")] = 50,
    json: Json = False,
) -> None:
    """Fold every campaign's events and print status, goal, total, pledges, outcome and
    settlement totals."""
    run = _run_source(
        from_dir, from_kafka, bootstrap, topic_prefix, topics, campaign, workers, False, not json
    )
    summaries = run.summaries
    if campaign is not None:
        summaries = {k: v for k, v in summaries.items() if k == campaign}
    if json:
        _print_json(
            {
                "source": run.source,
                "events": run.events,
                "seconds": round(run.seconds, 3),
                "events_per_second": round(_rate(run)),
                "campaigns": list(summaries.values()),
                "findings": sum(run.rule_counts.values()) + len(run.archive_findings),
            }
        )
        return
    from services.audit.report import replay_table

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a file or a pipe: no need to squeeze into 80 columns
    out.print(replay_table(summaries, limit=limit or None))
    _err.print(
        f"{run.events:,} events, {len(summaries):,} campaigns in {run.seconds:.2f}s "
        f"({_rate(run):,.0f} events/s)"
        + ("" if run.ok else "; the log breaks rules: run `pledgeflow audit verify`")
    )


@app.command(cls=_OneLineErrors)
def verify(
    from_dir: FromDir = None,
    from_kafka: FromKafka = False,
    against_readmodel: Annotated[
        bool, typer.Option("--against-readmodel", help="Also compare with the live read model.")
    ] = False,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Read model (default PLEDGEFLOW_REDIS_URL).")
    ] = None,
    campaign: Campaign = None,
    topics: TopicsOpt = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
    workers: Workers = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoints", help="Signed checkpoints (JSON Lines) the archive must extend."
        ),
    ] = None,
    public_keys: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="Checkpoint public key PEM (repeat across rotations)."),
    ] = None,
    json: Json = False,
) -> None:
    """Check every rule (gapless seq, hash chain, unique pledges, goal, close, settlement,
    ledger, optionally the read model). Exit 0 when clean, else 1 naming the first bad event."""
    if (checkpoints is None) != (public_keys is None):
        _usage("--checkpoints/--public-key: give both")
    if checkpoints is not None and from_dir is None:
        _usage("--checkpoints: needs --from (an archive)")
    signed = None
    if checkpoints is not None and public_keys is not None:
        from services.audit.checkpoints import CheckpointError, check_archive, load_signed

        try:
            signed = load_signed(checkpoints, public_keys)
        except CheckpointError as exc:
            _usage(f"--checkpoints/--public-key: {exc}")
    run = _run_source(
        from_dir, from_kafka, bootstrap, topic_prefix, topics, campaign, workers, False, not json
    )
    if from_dir is not None:
        from services.audit.archive import sidecar_findings

        run.archive_findings.extend(sidecar_findings(from_dir))
    signed_heads = None
    if signed is not None and from_dir is not None:
        problems, signed_heads = check_archive(from_dir, *signed)
        run.archive_findings.extend(problems)
    if against_readmodel:
        from services.audit.readmodel_check import ReadModelUnavailable, compare_readmodel

        settings = AuditSettings()
        prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
        try:
            run.add_findings(
                asyncio.run(
                    compare_readmodel(run.summaries, redis_url or settings.redis_url, prefix)
                )
            )
        except ReadModelUnavailable as exc:
            _usage(str(exc))
    first = run.first
    if json:
        _print_json(
            {
                "ok": run.ok,
                "source": run.source,
                "events": run.events,
                "campaigns": len(run.summaries),
                "seconds": round(run.seconds, 3),
                "events_per_second": round(_rate(run)),
                "rules": list(RULES),
                "first": None if first is None else first.as_dict(),
                "counts_by_rule": dict(run.rule_counts),
                "findings": [f.as_dict() for f in run.findings[:100]],
                "archive_findings": run.archive_findings,
                "signed_heads_checked": signed_heads,
            }
        )
    elif run.ok:
        _err.print(
            f"OK: {run.events:,} events of {len(run.summaries):,} campaigns pass {len(RULES)} "
            f"rules ({run.seconds:.2f}s, {_rate(run):,.0f} events/s)"
            + ("" if signed_heads is None else f"; extends {signed_heads:,} signed chain heads")
        )
    else:
        if first is not None:
            typer.echo(f"FAIL first bad event: {first.describe()}", err=True)
        for problem in run.archive_findings:
            typer.echo(f"FAIL archive: {problem}", err=True)
        counts = ", ".join(f"{rule} {n}" for rule, n in run.rule_counts.most_common())
        if counts:
            typer.echo(f"findings by rule: {counts}", err=True)
    raise typer.Exit(0 if run.ok else 1)


@app.command(cls=_OneLineErrors)
def report(
    campaign: Campaign = None,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or md.")] = "md",
    from_dir: FromDir = None,
    from_kafka: FromKafka = False,
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file.")] = None,
    topics: TopicsOpt = None,
    bootstrap: Bootstrap = None,
    topic_prefix: Prefix = None,
) -> None:
    """A campaign statement: pledges, cancellations, captures, fees, payout, ledger."""
    from services.audit.report import FORMATS, render_statement, statement

    if campaign is None:
        _usage("--campaign: required")
    if fmt not in FORMATS:
        _usage(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    run = _run_source(
        from_dir, from_kafka, bootstrap, topic_prefix, topics, campaign, 1, True, False
    )
    fold = run.folds.get(campaign)
    if fold is None:
        _usage(f"--campaign: no event of campaign {campaign!r} in {run.source}")
    text = render_statement(statement(fold, run.findings), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    if not run.ok:
        _err.print(f"warning: the log breaks rules ({sum(run.rule_counts.values())} findings)")


def _register_checkpoint() -> None:
    from services.audit.checkpoint_cli import app as checkpoint_app

    app.add_typer(checkpoint_app, name="checkpoint")


_register_checkpoint()


def main() -> None:  # pragma: no cover - `python -m services.audit.cli`
    app(prog_name=os.path.basename(sys.argv[0]))
