"""A small seeded launch day against the real stack, end to end.

Starts every process as ``make run`` would (the API, processor, projector, settlement and
notify workers, on this test's topics, free ports and Redis namespace), a private mailpit and
the simulation's own webhook receiver, then plays ``pledgeflow simulate``'s scenario through
the typed client (the same code the command runs) and checks, from the outside:

* every pledge the API accepted is a ``PledgeMade`` in the log, and nothing else is; the read
  model lists exactly those (cancelled ones as cancelled);
* every closed campaign is settled: funded ones captured (or dropped after declines) with a
  balanced ledger and payout = gross - commission - fees; failed ones and the one its creator
  called off released or refunded; the API's settlement read model says the same;
* each backer got exactly one receipt e-mail per accepted pledge (mailpit, by Message-ID);
* every webhook verified (Standard Webhooks) and every one owed arrived, once;
* ``pledgeflow audit verify --from-kafka --against-readmodel`` exits 0.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from schemas import Envelope, decode
from schemas.events import CampaignClosed, CampaignSettled, PledgeCancelled, PledgeMade
from schemas.tenancy import local_id
from schemas.topics import Topics, ensure_topics
from services.client import PledgeflowClient
from services.notify.domain import notification_id
from services.simulate.app import SimulationResult, run
from services.simulate.config import SimulateOptions
from services.simulate.driver import WEBHOOK_EVENT_TYPES
from services.simulate.receiver import WebhookReceiver, serve_receiver
from tests.support.api import free_port
from tests.support.infra import REPO, kafka_bootstrap, redis_url
from tests.support.invariants import wipe_namespace
from tests.support.mailpit import Mailpit, running_mailpit
from tests.support.processor import read_topics
from tests.support.subprocesses import process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEY = "sim-key-0123456789abcdef"
RECEIPT_SUBJECTS = ("Your pledge to ", "Votre contribution à ")


async def eventually(
    probe: Callable[[], bool], what: str, procs: list[subprocess.Popen[bytes]], within: float
) -> None:
    """Poll ``probe`` without blocking the event loop (the webhook receiver runs on it)."""
    deadline = time.monotonic() + within
    while not probe():
        for proc in procs:
            assert proc.poll() is None, f"{proc.args!r} exited while waiting for {what}"
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.3)


def processor_recovered(metrics_port: int) -> bool:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith("pledgeflow_processor_recovery_seconds_count"):
            return float(line.split()[-1]) > 0
    return False


async def read_log(topics: Topics) -> list[Envelope]:
    """Every event of the campaign and settlement streams, each chain in seq order."""
    names = topics.for_stream("campaign") + topics.for_stream("settlement")
    records = await read_topics(kafka_bootstrap(), names, topics.partitions)
    events = [decode(value) for *_, value, _headers in records]
    return sorted(events, key=lambda e: (e.campaign_id, e.stream, e.seq))


def all_messages(mail: Mailpit) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = httpx.get(
            f"{mail.api}/api/v1/messages", params={"start": len(out), "limit": 500}, timeout=10
        ).json()
        out.extend(page["messages"])
        if not page["messages"] or len(out) >= page["total"]:
            return out


def receipt_ids(mail: Mailpit) -> Counter[str]:
    """Message-IDs (the notification ids) of the pledge receipts in mailpit, with repeats."""
    return Counter(
        m["MessageID"].strip("<>").split("@")[0]
        for m in all_messages(mail)
        if m["Subject"].startswith(RECEIPT_SUBJECTS)
    )


def check_settlement(events: list[Envelope]) -> None:
    """Per closed campaign: settled once, ledger balanced, every active pledge resolved as
    its outcome requires."""
    by_campaign: dict[str, list[Envelope]] = defaultdict(list)
    for event in events:
        by_campaign[event.campaign_id].append(event)
    for campaign_id, stream in by_campaign.items():
        payloads = [e.payload for e in stream]
        closed = [p for p in payloads if isinstance(p, CampaignClosed)]
        assert len(closed) == 1, f"{campaign_id}: not closed once"
        outcome = closed[0].outcome
        settled = [p for p in payloads if isinstance(p, CampaignSettled)]
        assert len(settled) == 1, f"{campaign_id} ({outcome}): settled {len(settled)} times"
        made = {p.pledge_id for p in payloads if isinstance(p, PledgeMade)}
        active = made - {p.pledge_id for p in payloads if isinstance(p, PledgeCancelled)}
        by_type: dict[str, set[str]] = defaultdict(set)
        debits = credits = 0
        for event in stream:
            if event.stream != "settlement":
                continue
            pledge_id = getattr(event.payload, "pledge_id", None)
            if pledge_id is not None:
                by_type[event.event_type].add(pledge_id)
            for line in getattr(event.payload, "ledger", ()):
                debits += line.debit_minor
                credits += line.credit_minor
        assert debits == credits, f"{campaign_id}: ledger debits {debits} != credits {credits}"
        s = settled[0]
        assert s.payout.amount_minor == (
            s.gross.amount_minor - s.commission.amount_minor - s.fees.amount_minor
        ), campaign_id
        captured = by_type["PledgeCaptured"]
        ended = by_type["PledgeReleased"] | by_type["PledgeRefunded"]
        if outcome == "funded":
            # Captured, or dropped (released) after its card was declined to the last try.
            assert active <= captured | by_type["PledgeReleased"], campaign_id
            assert s.captured_count > 0, campaign_id
        else:
            assert active <= ended, f"{campaign_id} ({outcome}): not all released or refunded"
            assert captured <= by_type["PledgeRefunded"], f"{campaign_id}: kept a charge"


async def test_a_seeded_launch_day_keeps_every_promise(
    broker: object, redis_server: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    topics = Topics(prefix=prefix, partitions=2)
    await ensure_topics(kafka_bootstrap(), topics)
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_PARTITIONS": "2",
        "PLEDGEFLOW_API_KEYS": f"platform-sim:{KEY}",
        "PLEDGEFLOW_PROCESSOR_POLL_MS": "50",
        "PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "true",
        "PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE": "1s,2s,3s",
        "PLEDGEFLOW_SANDBOX_PREFIX": f"{prefix}sandbox:",
    }
    cli = str(REPO / ".venv" / "bin" / "pledgeflow")
    with ExitStack() as stack:
        mail = stack.enter_context(running_mailpit(tmp_path / "mailpit.log", max_messages=0))
        workers: dict[str, tuple[list[str], dict[str, str]]] = {
            "processor": (["processor", "run"], {}),
            "projector": (["readmodel", "run"], {}),
            "settle": (["settlement", "run"], {}),
            "settle-rm": (["settlement", "readmodel", "run"], {}),
            "notify": (
                ["notify", "worker", "-l", "warn"],
                {
                    "PLEDGEFLOW_NOTIFY_SMTP_PORT": str(mail.smtp_port),
                    "PLEDGEFLOW_NOTIFY_DATA_DIR": str(tmp_path / "notify-data"),
                    "PLEDGEFLOW_NOTIFY_MESSAGE_ID_DOMAIN": "pf.test",
                },
            ),
        }
        ports = {name: free_port() for name in ("api", *workers)}
        procs = [
            stack.enter_context(
                process(
                    [cli, "api", "run"],
                    {**env, "PLEDGEFLOW_API_PORT": str(ports["api"])},
                    tmp_path / "api.log",
                )
            ),
            *(
                stack.enter_context(
                    process(
                        [cli, *args],
                        {**env, **extra, "PLEDGEFLOW_METRICS_PORT": str(ports[name])},
                        tmp_path / f"{name}.log",
                    )
                )
                for name, (args, extra) in workers.items()
            ),
        ]
        api = f"http://127.0.0.1:{ports['api']}"
        wait_until(lambda: httpx.get(f"{api}/readyz").status_code == 200, "API", procs, 40)
        wait_until(lambda: processor_recovered(ports["processor"]), "processor", procs, 40)

        options = SimulateOptions(
            api=api, api_key=KEY, seed=7, run_id="e2e7", rate=6, duration=15, campaigns=6,
            settle_timeout=45, mailpit=mail.api, audit=False,
        )  # fmt: skip
        out = io.StringIO()
        async with serve_receiver() as receiver:
            result = await run(options, Console(file=out, width=140), receiver=receiver)
            report = out.getvalue()
            events = await read_log(topics)
            owed = owed_webhooks(result, events)
            # Served by this event loop: wait without blocking it.
            await eventually(lambda: owed <= receiver.verified_ids, "every webhook", procs, 30)
        check_webhooks(receiver, owed)
        await check_pledges(result, events, api, report)
        check_settlement(events)
        check_settlement_read_back(result, events)

        expected = Counter(
            notification_id(e.event_id, "backer", e.payload.backer_id, "email")
            for e in events
            if isinstance(e.payload, PledgeMade)
        )
        await eventually(
            lambda: set(receipt_ids(mail)) >= set(expected), "every receipt e-mail", procs, 30
        )
        assert receipt_ids(mail) == expected, "a backer got a receipt twice, or one never owed"
        assert all(row.emails for row in result.rows), report

        audit = await asyncio.to_thread(
            subprocess.run,
            [cli, "audit", "verify", "--from-kafka", "--against-readmodel"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout + audit.stderr
    await wipe_namespace(redis_url(), prefix)  # the read model, notify's and the sandbox's keys


def check_settlement_read_back(result: SimulationResult, events: list[Envelope]) -> None:
    """What the API's settlement read model answered is what the log says."""
    settled = {
        local_id(e.campaign_id): e.payload for e in events if isinstance(e.payload, CampaignSettled)
    }
    assert result.driver.tally.settled == set(settled), "settled in the log, not in the API"
    for campaign_id, s in settled.items():
        view = result.driver.settlements[campaign_id]
        assert view.status == "settled" and view.outcome == s.outcome, campaign_id
        assert (view.gross.amount_minor, view.payout.amount_minor) == (
            s.gross.amount_minor,
            s.payout.amount_minor,
        ), campaign_id
        assert sum(b.debit_minor for b in view.ledger) == sum(b.credit_minor for b in view.ledger)
    rows = {r.campaign_id: r for r in result.rows}
    assert all(rows[c].payout.endswith(settled[c].payout.currency) for c in settled)


def owed_webhooks(result: SimulationResult, events: list[Envelope]) -> set[str]:
    endpoint = result.driver.endpoint_id
    assert endpoint is not None, result.driver.notes
    return {
        notification_id(e.event_id, "platform", endpoint, "webhook")
        for e in events
        if e.event_type in WEBHOOK_EVENT_TYPES
    }


def check_webhooks(receiver: WebhookReceiver, owed: set[str]) -> None:
    assert receiver.unverified == [], "a webhook did not verify"
    assert receiver.accepted_unsigned == 0
    assert receiver.verified_ids == owed, "a webhook delivered that was never owed"


async def check_pledges(
    result: SimulationResult, events: list[Envelope], api: str, report: str
) -> None:
    tally = result.driver.tally
    assert tally.unexpected == [], report
    assert result.settled_in_time, report
    assert tally.pending == set(), report
    made = {
        (local_id(e.campaign_id), e.payload.pledge_id)
        for e in events
        if isinstance(e.payload, PledgeMade)
    }
    cancelled = {
        (local_id(e.campaign_id), e.payload.pledge_id)
        for e in events
        if isinstance(e.payload, PledgeCancelled)
    }
    # The scenario exercised what it should: invalid requests, retries, cancellations.
    assert len(made) > 30 and tally.invalid and tally.replayed and tally.cancelled, report
    assert tally.accepted == made, "the API's accepted pledges and the log's differ"
    async with PledgeflowClient(api, KEY) as client:
        listed: set[tuple[str, str]] = set()
        listed_cancelled: set[tuple[str, str]] = set()
        for plan in result.scenario.campaigns:
            async for pledge in client.pledges(plan.campaign_id):
                if pledge.status in ("accepted", "cancelled"):
                    listed.add((plan.campaign_id, pledge.pledge_id))
                if pledge.status == "cancelled":
                    listed_cancelled.add((plan.campaign_id, pledge.pledge_id))
            view = await client.get_campaign(plan.campaign_id)
            assert view.status == "closed", plan.campaign_id
    assert listed == made, "the read model's pledges and the log's differ"
    assert listed_cancelled == cancelled
    # Every campaign closed with an outcome, and the table read it back.
    assert {r.outcome for r in result.rows} == {"funded", "failed", "cancelled"}, report
