"""Settings of the campaign processor (env ``PLEDGEFLOW_...``; the shared ones come from
:class:`~services.streams.StreamSettings`)."""

from __future__ import annotations

from pydantic import Field

from services.streams import StreamSettings

__all__ = ["ProcessorSettings"]


class ProcessorSettings(StreamSettings):
    """What a processor worker needs beyond Kafka, topics and metrics."""

    #: Consumer group of the processor on ``pledge-commands``.
    processor_group: str = "pledge-processor"
    #: Most commands decided and written in one Kafka transaction.
    processor_batch_max: int = Field(default=2000, ge=1)
    #: Write a snapshot of a partition's campaigns every this many events.
    snapshot_every_events: int = Field(default=50_000, ge=1)
    #: Rebuild from the latest snapshot round (false: fold every partition from its first
    #: event, e.g. to rule out a suspect snapshot; ``bench_recovery`` measures both).
    processor_use_snapshots: bool = True
    #: Seconds between deadline sweeps of open campaigns.
    deadline_sweep_seconds: float = Field(default=1.0, gt=0)
    #: Kickstarter's rule: refuse in the last 24 h a cancellation that drops the total below goal.
    refuse_late_cancellation_below_goal: bool = True
    #: Static group membership id of this processor worker (e.g. the pod name): a restarted
    #: worker takes its partitions back at once instead of after a session timeout.
    processor_instance_id: str | None = None
    #: Longest wait of one poll of ``pledge-commands`` (also bounds the deadline sweep delay).
    processor_poll_ms: int = Field(default=100, ge=1)
    #: Least pause between a partition's committed transaction and its next one when
    #: commands are waiting: the previous commit's markers are written meanwhile (a
    #: transaction begun before that is refused once and retried 20 ms later), and what
    #: arrives meanwhile joins the next transaction (fewer, larger transactions).
    processor_transaction_gap_ms: float = Field(default=2.0, ge=0, le=1000)
    #: Kafka transaction timeout of the processor's producers.
    processor_transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    #: Consumer group session timeout (how soon a dead worker's partitions move).
    processor_session_timeout_ms: int = Field(default=10_000, ge=1000)
    #: Generation-0 threshold of Python's cyclic GC set by a started processor (0 = leave the
    #: interpreter's): the hot path allocates many short-lived acyclic objects, and the
    #: default 700 runs a collection every few commands. The processor also freezes what a
    #: rebuild loaded (``gc.freeze``) so that full collections don't rescan it.
    processor_gc_gen0_threshold: int = Field(default=50_000, ge=0)
    #: Largest command decided; a bigger one is dead-lettered unread (``oversized``).
    processor_max_command_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Create the registry's missing topics when the processor starts (idempotent).
    processor_ensure_topics: bool = True
