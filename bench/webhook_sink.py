"""A webhook receiver for the notify benchmark, run as its own process (so its CPU is not the
dispatcher's): ``POST /hook/<name>/<delay_ms>`` answers 200 after ``delay_ms`` (a network and
receiver latency stand-in). ``python -m bench.webhook_sink PORT``. The app is the simulation's
receiver (services/simulate/receiver.py); with no secret registered it accepts unsigned."""

from __future__ import annotations

import sys

import uvicorn

from services.simulate.receiver import WebhookReceiver

app = WebhookReceiver()

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
