"""Settings of the ops commands (``pledgeflow deploy ...``): only where Kafka is and how topics
are named, from the stream runtime's :class:`~services.streams.StreamSettings`."""

from __future__ import annotations

from services.streams import StreamSettings

__all__ = ["OpsSettings"]


class OpsSettings(StreamSettings):
    """What ``pledgeflow deploy wait-topics`` reads from ``PLEDGEFLOW_*``."""
