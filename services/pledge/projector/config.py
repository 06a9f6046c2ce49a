"""Settings of the read-model projector (env ``PLEDGEFLOW_...``; the shared ones come from
:class:`~services.streams.StreamSettings`)."""

from __future__ import annotations

from pydantic import Field

from services.streams import StreamSettings

__all__ = ["ProjectorSettings"]


class ProjectorSettings(StreamSettings):
    """What the projector needs beyond Kafka, Redis, topics and metrics."""

    #: Consumer group of the read-model projector on the campaign event topics.
    readmodel_group: str = "pledge-readmodel"
    #: How long the projector keeps a command's decision for ``Prefer: wait`` (seconds).
    readmodel_decision_ttl_seconds: int = Field(default=600, ge=1)
    #: Static group membership id of this projector (e.g. the pod name): a restarted projector
    #: takes its partitions back without a rebalance. Two projectors must never share one;
    #: ``readmodel rebuild`` joins without it.
    readmodel_instance_id: str | None = None
    #: Least time between two offset commits while projecting: a redelivery after a restart
    #: is dropped by seq, and a commit per poll cost a round trip to the group coordinator
    #: before the next poll was applied (and the broker a commit per poll).
    readmodel_commit_interval_ms: int = Field(default=250, ge=0, le=60_000)
    #: Consumer group session timeout (how soon a dead or frozen projector's partitions move).
    readmodel_session_timeout_ms: int = Field(default=10_000, ge=1000)
