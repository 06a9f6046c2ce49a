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
