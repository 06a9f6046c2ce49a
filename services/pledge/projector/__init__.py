"""The read-model projector (one deployable): campaign topics -> Redis.

``projection`` (the pure event -> rows function), ``projector`` (the stream-runtime reader
and the Lua apply), ``metrics``, ``config``, and ``app`` (composition root and
``pledgeflow readmodel run|rebuild``).
"""

from services.pledge.projection import initial_summary, project
from services.pledge.projector.app import readmodel_cli, rebuild
from services.pledge.projector.config import ProjectorSettings
from services.pledge.projector.projector import Projector

__all__ = [
    "Projector",
    "ProjectorSettings",
    "initial_summary",
    "project",
    "readmodel_cli",
    "rebuild",
]
