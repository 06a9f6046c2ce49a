"""Settings of the pledge service: the ingest API's, on top of the processor's and the
projector's (``processor/config.py``, ``projector/config.py``, both extending the stream
runtime's :class:`~services.streams.StreamSettings`).

Env prefix ``PLEDGEFLOW_``; built once at the entry point and passed down, never read from
globals deep inside.
"""

from __future__ import annotations

from services.pledge.api.config import ApiSettings
from services.pledge.processor.config import ProcessorSettings
from services.pledge.projector.config import ProjectorSettings


class PledgeSettings(ProcessorSettings, ProjectorSettings, ApiSettings):
    """Everything the pledge service's processes know about their surroundings: the API's
    settings plus the processor's and the projector's (tests build this one; each process
    reads only its own). Each field is declared once, in its process's settings."""
