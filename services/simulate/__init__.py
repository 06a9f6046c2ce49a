"""``pledgeflow simulate``: a seeded launch-day crowd against a running Pledgeflow.

:mod:`~services.simulate.scenario` (pure: the crowd as data, from a seed) is kept apart from
:mod:`~services.simulate.driver` (plays it through the typed client and keeps the tally);
:mod:`~services.simulate.receiver` is the local webhook receiver that verifies every delivery;
:mod:`~services.simulate.app` wires them with the live display and the audit.
"""

from services.simulate.config import SimulateOptions
from services.simulate.receiver import WebhookReceiver, serve_receiver
from services.simulate.scenario import Scenario, generate

__all__ = ["Scenario", "SimulateOptions", "WebhookReceiver", "generate", "serve_receiver"]
