"""The stream runtime: what every Pledgeflow service that reads or writes campaign streams
uses, so that a service is its domain plus a few lines of wiring.

Reading (``OrderedStreamReader``)
    A consumer group over one or more streams' event topics (``Topics.for_stream(...)``),
    ``read_committed``, no auto-commit, co-partitioned assignment (partition *p* of every
    topic to one member: :class:`CoPartitionedAssignor`). Each campaign's events are handed to
    your async ``handler(runs)`` in ``seq`` order per (campaign, stream), a run being the
    consecutive events that one poll released. Bad records (malformed, oversized, unknown
    type, future schema version, wrong key or topic, written outside a transaction) go to
    ``<consumer>.dlq`` with ``dlq.cause``/``dlq.detail``/``dlq.topic``/``dlq.partition``/
    ``dlq.offset`` headers and are counted; the reader goes on. Offsets are committed after
    the handler returned, only below the first event still held back. A handler that raises
    gets the same runs again on the next step. ``seed(keys)`` tells the reader the last seq
    you already applied for campaigns it meets first (your store's truth);
    ``on_assigned``/``on_revoked(partitions)`` let you build or drop per-partition state.
    A service that writes its own stream passes ``commit=False`` and commits the input inside
    its output transaction: ``writer.write(records, consumed=reader.consumed_offsets(p))``
    (exactly once; seed from the state rebuilt from your own log)::

        reader = OrderedStreamReader(
            bootstrap=s.kafka_bootstrap, group_id=s.topic_prefix + "settlement",
            topics=topics.for_stream("campaign"), topic_of=topics.event_topics(),
            dead_letter_topic=topics.dead_letter("settlement"), handler=apply_runs,
        )
        await serve(ReaderWorker(reader), metrics_host=s.metrics_host,
                    metrics_port=s.metrics_port)  # until SIGTERM, then drain

Ordering (``SeqOrderer``)
    The one hold-back: ``push(key, seq, item) -> (Pushed, run)``; ``seed``/``last``/``gaps``;
    a bound (``limit``, :attr:`SeqOrderer.full`) and an ``on_held(count)`` metric hook. Pure.

Writing (``PartitionWriter``, ``ChainHeads``, ``stamp_chain``)
    Per owned partition *p*, ``PartitionWriter(bootstrap, group, p)``: transactional id
    ``<group>-<p>``; ``start()`` fences older writers; ``write({topic: [(key, value,
    headers)]}, consumed={tp: next_offset})`` is one transaction (records + consumed offsets),
    aborted and raised on any failure — then rebuild *p* with ``replay_partition`` (your own
    stream's topics, partition *p*, in seq order; seed its orderer from a snapshot) and read
    again from the committed offset. ``ChainHeads.stamp(events, ...)`` stamps ``seq`` and the
    hash chain per (campaign, stream) with the schemas' optimised ``stamp_chain``.

Process (``serve``, ``configure_logging``, ``ProcessServer``, ``Readiness``, ``run_cli``)
    JSON logs with ``correlation_id`` (``extra=`` or the :data:`correlation_id` context
    variable), ``/metrics`` + ``/ready`` + ``/live`` on ``metrics_host:metrics_port``
    (loopback by default), SIGTERM/SIGINT → ``worker.stop()`` drains and commits.

Settings (``StreamSettings``)
    Kafka bootstrap, Redis URL, topic prefix, partitions, metrics host/port, event size and
    hold-back limits; env ``PLEDGEFLOW_*``. Each process's settings class extends it.

Metrics (``StreamMetrics``): ``pledgeflow_consumer_lag_records{group,topic,partition}``,
``pledgeflow_stream_held_events{group}``, ``pledgeflow_stream_dead_letters_total{group,cause}``,
``pledgeflow_stream_records_read_total{group}``.
"""

from services.streams.assignor import CoPartitionedAssignor
from services.streams.config import StreamSettings
from services.streams.dead_letters import (
    Cause,
    DeadLetter,
    DeadLetterSender,
    Rejected,
    dead_letter,
    judge_event,
    outside_transaction,
)
from services.streams.kafka_log import key_partition, read_to_end, transactional_producer
from services.streams.metrics import StreamMetrics, stream_metrics
from services.streams.orderer import Gap, Pushed, SeqOrderer, StreamKey
from services.streams.preflight import SourceError, check_redis, topic_partitions
from services.streams.process import (
    JsonFormatter,
    ProcessServer,
    ReaderWorker,
    Readiness,
    Worker,
    configure_logging,
    correlation_id,
    run_cli,
    serve,
)
from services.streams.reader import OrderedStreamReader, Run, RunHandler, Seeder, StreamEvent
from services.streams.replay import Replayed, replay_partition
from services.streams.writer import (
    BeforeCommit,
    ChainHeads,
    OutRecord,
    PartitionWriter,
    stamp_chain,
)

__all__ = [
    "BeforeCommit",
    "Cause",
    "ChainHeads",
    "CoPartitionedAssignor",
    "DeadLetter",
    "DeadLetterSender",
    "Gap",
    "JsonFormatter",
    "OrderedStreamReader",
    "OutRecord",
    "PartitionWriter",
    "ProcessServer",
    "Pushed",
    "ReaderWorker",
    "Readiness",
    "Rejected",
    "Replayed",
    "Run",
    "RunHandler",
    "Seeder",
    "SeqOrderer",
    "SourceError",
    "StreamEvent",
    "StreamKey",
    "StreamMetrics",
    "StreamSettings",
    "Worker",
    "check_redis",
    "configure_logging",
    "correlation_id",
    "dead_letter",
    "judge_event",
    "key_partition",
    "outside_transaction",
    "read_to_end",
    "replay_partition",
    "run_cli",
    "serve",
    "stamp_chain",
    "stream_metrics",
    "topic_partitions",
    "transactional_producer",
]
