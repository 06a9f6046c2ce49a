"""The ingest API (FastAPI): validates, authenticates, records idempotency, appends commands.

``create_app(settings)`` builds the ASGI app; ``pledgeflow api run`` serves it with uvicorn.
Errors are RFC 9457 problem documents (``services.pledge.api.problems``).
"""

from services.pledge.api.app import create_app
from services.pledge.api.auth import ApiKeys, Principal
from services.pledge.api.config import ApiSettings
from services.pledge.api.problems import PROBLEM_BASE, ProblemError

__all__ = ["PROBLEM_BASE", "ApiKeys", "ApiSettings", "Principal", "ProblemError", "create_app"]
