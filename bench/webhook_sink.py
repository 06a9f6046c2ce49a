"""A webhook receiver for the notify and end-to-end benchmarks, run as its own process (so its
CPU is not the dispatcher's): ``POST /hook/<name>/<delay_ms>`` answers 200 after ``delay_ms``
(a network and receiver latency stand-in). ``python -m bench.webhook_sink PORT [ARRIVALS]``:
with ``ARRIVALS``, each request's arrival time and body are appended to that file. The app is
the simulation's receiver (services/simulate/receiver.py); with no secret registered it accepts
unsigned deliveries."""

from __future__ import annotations

import sys

import uvicorn

from services.simulate.receiver import WebhookReceiver

app = WebhookReceiver()

if __name__ == "__main__":
    if len(sys.argv) > 2:
        app.arrivals = open(sys.argv[2], "ab")  # noqa: SIM115  # open for the process's life
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
