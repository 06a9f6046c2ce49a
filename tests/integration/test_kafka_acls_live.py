"""The prod Kafka users and ACLs, exercised on a live broker that enforces them.

A private broker (tests/support/secured_broker.py) serves SCRAM-SHA-512 over TLS with
``allow.everyone.if.no.acl.found=false``; it gets one SCRAM user per ``KafkaUser`` of the
rendered prod overlay (``deploy/k8s/overlays/prod/kafka-users.yaml``) and exactly the ACLs those
documents declare, so a role-table change in ``services/ops/kafka_users.py`` is tested once
rendered. Then every process runs as its own user with the project's client settings
(``PLEDGEFLOW_KAFKA_*``): the API, the processor, the projector, settlement and its read
model, notify (faust) and the checkpointer, plus ``pledgeflow audit export`` and ``notify
redrive``. A short flow (launch, pledges with payment tokens, webhooks, notify and processor
restarts, early close, releases, checkpoint, export, forged records dead-lettered by every
consumer, redrive) must go through with no authorization denial in the broker's log. Then each
user is refused one thing it must not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from schemas.topics import Topics, ensure_topics
from services.ops.topics_ready import wait_for_topics
from services.streams.kafka_security import kafka_client_kwargs
from tests.support.api import free_port
from tests.support.infra import REPO, ScriptRedis
from tests.support.secured_broker import (
    ADMIN,
    SecuredBroker,
    acl_bindings,
    rendered_kafka_users,
)
from tests.support.subprocesses import process
from tests.support.webhook_receiver import receiver_in_thread

pytestmark = pytest.mark.integration

KEY = "acl-key-0123456789abcdef"
PARTITIONS = 1
PLEDGEFLOW = str(REPO / ".venv" / "bin" / "pledgeflow")
#: KafkaUser -> the long-running process that runs as it (keda is KEDA's, not ours).
PROCESSES = {
    "pledgeflow-api": ["api", "run"],
    "pledgeflow-processor": ["processor", "run"],
    "pledgeflow-projector": ["readmodel", "run"],
    "pledgeflow-settlement": ["settlement", "run"],
    "pledgeflow-settlement-readmodel": ["settlement", "readmodel", "run"],
    "pledgeflow-notify": ["notify", "worker", "-l", "warn"],
    "pledgeflow-checkpointer": ["audit", "checkpoint", "run"],
}
AUTHORIZATION_ERRORS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """The broker with the rendered users, their ACLs and the registry's topics."""
    users = rendered_kafka_users()
    broker = SecuredBroker(
        tmp_path_factory.mktemp("secured-kafka"), [u["metadata"]["name"] for u in users]
    )
    broker.start()
    try:
        broker.create_acls([binding for user in users for binding in acl_bindings(user)])
        # In prod Strimzi's topic operator creates the topics; here the super user does.
        with pytest.MonkeyPatch.context() as env:
            for name, value in broker.env(ADMIN).items():
                env.setenv(name, value)
            asyncio.run(ensure_topics(broker.bootstrap, Topics(partitions=PARTITIONS)))
        yield broker
    finally:
        broker.stop()


@contextmanager
def running(
    user: str, broker: SecuredBroker, extra: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``pledgeflow <process of user>`` with only ``user``'s Kafka credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
    env.update(broker.env(user), PLEDGEFLOW_PARTITIONS=str(PARTITIONS), **extra)
    with process([PLEDGEFLOW, *PROCESSES[user]], env, log) as proc:
        yield proc


def wait_for(
    probe: Callable[[], Any],
    what: str,
    procs: dict[str, subprocess.Popen[bytes]],
    logs: Path,
    broker: SecuredBroker,
) -> Any:
    """``probe()``'s first truthy value; fails at once if a process exited (with its log), and
    names the broker's authorization denials if it times out."""
    deadline = time.monotonic() + 45
    while True:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        for user, proc in procs.items():
            if proc.poll() is not None:
                log = (logs / f"{user}.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"{user} exited while waiting for {what}:\n{log}")
        if time.monotonic() > deadline:
            denied = "\n".join(broker.authorizer_denials()[-20:])
            pytest.fail(f"{what}: not within 45 s; authorization denials:\n{denied}")
        time.sleep(0.2)


def cli(
    broker: SecuredBroker, user: str, args: list[str], extra: dict[str, str] | None = None
) -> str:
    """``pledgeflow <args>`` as ``user``; its output (fails the test on a non-zero exit)."""
    return clis(broker, [(user, args)], extra)[0]


def clis(
    broker: SecuredBroker, runs: list[tuple[str, list[str]]], extra: dict[str, str] | None = None
) -> list[str]:
    """Several ``pledgeflow`` commands at once, each as its user; their outputs."""
    procs = []
    for user, args in runs:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
        env.update(broker.env(user), PLEDGEFLOW_PARTITIONS=str(PARTITIONS), **(extra or {}))
        procs.append(
            subprocess.Popen(
                [PLEDGEFLOW, *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for (user, args), proc in zip(runs, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"pledgeflow {args} as {user}: {err[-3000:]}"
        outputs.append(out)
    return outputs


async def produce_as_admin(broker: SecuredBroker, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, **kafka_client_kwargs(broker.security(ADMIN))
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"t/c-acl", value=value)
    finally:
        await producer.stop()


async def committed_records(broker: SecuredBroker, topics: list[str]) -> dict[str, int]:
    """Committed records per topic (every partition), read as the super user."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        isolation_level="read_committed",
        **kafka_client_kwargs(broker.security(ADMIN)),
    )
    await consumer.start()
    counts = dict.fromkeys(topics, 0)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # the last stable offsets (read_committed)
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                counts[tp.topic] += len(records)
    finally:
        await consumer.stop()
    return counts


class Flow:
    """The platform's side of the smoke flow, over HTTP with the tenant's key."""

    def __init__(self, api: str) -> None:
        self.client = httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {KEY}"}, timeout=20
        )

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, key: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        answer = self.client.post(
            path, headers={"Idempotency-Key": key, "Prefer": "wait=15"}, json=body
        )
        assert answer.status_code == status, (path, answer.text)
        decided: dict[str, Any] = answer.json()
        return decided

    def pledge(self, n: int) -> None:
        self.post(
            "/v1/campaigns/c-acl/pledges",
            f"pledge-{n}",
            {"pledge_id": f"p-{n}", "backer_id": f"b-{n}", "amount_minor": 2500,
             "currency": "EUR", "payment_token": f"tok_acl_{n}"},
            201,
        )  # fmt: skip

    def settlement(self) -> dict[str, Any] | None:
        answer = self.client.get("/v1/campaigns/c-acl/settlement")
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body.get("status") == "settled" else None


def test_every_process_runs_as_its_own_user_with_no_authorization_denied(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    redis = ScriptRedis(tmp_path / "redis", free_port())
    redis.data.mkdir()
    key = tmp_path / "checkpoint-key.pem"
    subprocess.run(
        [PLEDGEFLOW, "audit", "checkpoint", "keygen", "--private", str(key),
         "--public", str(tmp_path / "checkpoint-key.pub.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    common = {"PLEDGEFLOW_REDIS_URL": redis.url, "PLEDGEFLOW_METRICS_PORT": "0"}
    extra = {
        "pledgeflow-api": {
            "PLEDGEFLOW_API_PORT": str(port),
            "PLEDGEFLOW_API_KEYS": f"t:{KEY}",
            "PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "true",  # the receiver is on loopback
        },
        "pledgeflow-processor": {
            "PLEDGEFLOW_PROCESSOR_INSTANCE_ID": "processor-acl-0",
            "PLEDGEFLOW_SNAPSHOT_EVERY_EVENTS": "1",  # snapshots in every transaction
        },
        "pledgeflow-notify": {
            "PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "true",
            "PLEDGEFLOW_NOTIFY_SMTP_PORT": str(free_port()),
            "PLEDGEFLOW_NOTIFY_DATA_DIR": str(tmp_path / "notify-data"),
        },
        "pledgeflow-checkpointer": {
            "PLEDGEFLOW_CHECKPOINT_KEY_FILE": str(key),
            "PLEDGEFLOW_CHECKPOINT_INTERVAL_SECONDS": "1",
        },
    }
    denied_before = len(secured.authorizer_denials())
    redis.start()
    try:
        with ExitStack() as stack:
            receiver = stack.enter_context(receiver_in_thread())

            def start(user: str) -> subprocess.Popen[bytes]:
                env = {**common, **extra.get(user, {})}
                log = tmp_path / f"{user}.log"
                return stack.enter_context(running(user, secured, env, log))

            procs = {user: start(user) for user in PROCESSES}

            def wait(probe: Callable[[], Any], what: str) -> Any:
                return wait_for(probe, what, procs, tmp_path, secured)

            def notifications() -> int:
                return asyncio.run(committed_records(secured, ["NotificationSent"]))[
                    "NotificationSent"
                ]

            flow = stack.enter_context(contextlib.closing(Flow(api)))
            wait(lambda: flow.client.get("/readyz").status_code == 200, "the API to be ready")
            hook = flow.post(
                "/v1/webhook-endpoints",
                "hook",
                {"url": receiver.url("acl"), "event_types": ["PledgeMade"]},
                201,
            )
            receiver.secrets["acl"] = hook["secret"]
            flow.post(
                "/v1/campaigns",
                "launch",
                {"campaign_id": "c-acl", "title": "Secured", "creator_id": "u-1",
                 "goal": {"amount_minor": 10_000, "currency": "EUR"},
                 "deadline": "2099-12-31T23:59:59Z", "funding_model": "all_or_nothing"},
                201,
            )  # fmt: skip
            flow.pledge(1)
            wait(lambda: notifications() >= 1, "notify's first NotificationSent")
            # Restarted, notify rebuilds its chain heads from its own stream before writing,
            # and the processor recovers from its snapshots and the campaign events.
            for user in ("pledgeflow-notify", "pledgeflow-processor"):
                procs[user].terminate()
                procs[user].wait(timeout=30)
                procs[user] = start(user)
            flow.pledge(2)
            flow.post("/v1/campaigns/c-acl/close", "close", {"reason": "creator_cancelled"}, 200)
            campaign = flow.client.get("/v1/campaigns/c-acl").json()
            settlement = wait(flow.settlement, "the settlement read model")
            wait(lambda: notifications() >= 2, "the restarted notify's NotificationSent")

            def checkpointed() -> dict[str, int] | None:
                topics = [
                    "PledgeReleased",
                    "audit-checkpoints",
                    "payment-tokens",
                    "pledge-snapshots",
                ]
                counts = asyncio.run(committed_records(secured, topics))
                # Two tokens stored by the API, then their tombstones written by settlement.
                return counts if all(counts.values()) and counts["payment-tokens"] >= 4 else None

            counts = wait(checkpointed, "the releases, token tombstones and a checkpoint")
            archive = str(tmp_path / "archive")
            exported = json.loads(
                cli(secured, "pledgeflow-checkpointer", ["audit", "export", archive, "--json"])
            )
            # Forged records: every consumer dead-letters them as its own user.
            for topic in ("pledge-commands", "PledgeMade", "PledgeCaptured"):
                asyncio.run(produce_as_admin(secured, topic, b"forged"))
            dlqs = ["pledge-commands.dlq", "settlement.dlq", "readmodel.dlq", "notify.dlq"]

            def dead_lettered() -> dict[str, int] | None:
                counts = asyncio.run(committed_records(secured, dlqs))
                return counts if all(counts.values()) else None

            letters = wait(dead_lettered, "the forged records' dead letters")
            # An operator's redrive runs in a notify pod, as notify.
            redriven = cli(secured, "pledgeflow-notify", ["notify", "redrive"], common)
        # The processes stopped, an operator rebuilds both read models in their pods.
        rebuilt = clis(
            secured,
            [
                ("pledgeflow-projector", ["readmodel", "rebuild"]),
                ("pledgeflow-settlement-readmodel", ["settlement", "readmodel", "rebuild"]),
            ],
            common,
        )
        assert "read model rebuilt:" in rebuilt[0] and "read model rebuilt:" in rebuilt[1]
        # launch, 2 pledges, close, 2 releases, 2 notifications at least; no seq gap.
        assert exported["events"] >= 8 and exported["gaps"] == 0, exported
        assert f"requeued 0 dead letter(s); {letters['notify.dlq']} not redrivable" in redriven
        assert letters["readmodel.dlq"] >= 2, (
            letters
        )  # the projector's and the settlement read model's
        assert campaign["pledge_count"] == 2, campaign
        assert settlement["outcome"] == "cancelled", settlement
        assert counts["PledgeReleased"] == 2, counts
        assert len([r for r in receiver.delivered("acl") if r.verified]) >= 2
        assert secured.authorizer_denials()[denied_before:] == []
    finally:
        redis.stop()


def test_every_pod_user_passes_wait_topics_and_keda_reads_the_lag_it_scales_on(
    secured: SecuredBroker,
) -> None:
    """Each pod's ``wait-topics`` init container runs as the pod's user; KEDA's Kafka scaler
    describes its groups, fetches their committed offsets and the topics' end offsets."""
    for user in PROCESSES:
        with pytest.MonkeyPatch.context() as env:
            for name, value in secured.env(user).items():
                env.setenv(name, value)
            asyncio.run(wait_for_topics(secured.bootstrap, Topics(partitions=PARTITIONS), 20))

    async def lag_as_keda(group: str, topic: str) -> None:
        security = kafka_client_kwargs(secured.security("pledgeflow-keda"))
        admin = AIOKafkaAdminClient(bootstrap_servers=secured.bootstrap, **security)
        consumer = AIOKafkaConsumer(bootstrap_servers=secured.bootstrap, **security)
        await admin.start()
        await consumer.start()
        try:
            # A fresh broker creates __consumer_offsets on the first coordinator lookup.
            for _ in range(150):
                try:
                    await admin.describe_consumer_groups([group])
                    break
                except GroupCoordinatorNotAvailableError:
                    await asyncio.sleep(0.2)
            await admin.list_consumer_group_offsets(group)
            await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        finally:
            await consumer.stop()
            await admin.close()

    for group, topic in [
        ("pledge-processor", "pledge-commands"),
        ("pledge-readmodel", "PledgeMade"),
        ("settlement", "settlement-commands"),
        ("settlement-readmodel", "PledgeCaptured"),
    ]:
        asyncio.run(lag_as_keda(group, topic))
    with pytest.raises(GroupAuthorizationFailedError):  # a group it does not scale
        asyncio.run(lag_as_keda("notify", "PledgeMade"))


#: One thing each user must be refused: (user, "read"|"write"|"transact"|"join", resource):
#: a topic, a transactional id (taking it would fence its owner) or a consumer group.
FORBIDDEN = [
    ("pledgeflow-projector", "transact", "pledge-processor-0"),
    ("pledgeflow-notify", "transact", "settlement-0"),
    ("pledgeflow-api", "join", "pledge-readmodel"),
    ("pledgeflow-api", "write", "PledgeMade"),  # forging the campaign stream
    ("pledgeflow-processor", "write", "PledgeCaptured"),  # settlement's stream
    ("pledgeflow-projector", "write", "CampaignLaunched"),
    ("pledgeflow-settlement", "write", "PledgeMade"),
    ("pledgeflow-settlement-readmodel", "read", "payment-tokens"),
    ("pledgeflow-notify", "write", "PledgeMade"),
    ("pledgeflow-notify", "write", "notify-endpoints"),  # redirecting the webhooks
    ("pledgeflow-checkpointer", "read", "payment-tokens"),
    ("pledgeflow-keda", "read", "PledgeMade"),
]


@pytest.mark.parametrize(("user", "action", "resource"), FORBIDDEN)
def test_each_user_is_refused_what_its_role_does_not_need(
    secured: SecuredBroker, user: str, action: str, resource: str
) -> None:
    topic = resource

    async def attempt() -> None:
        security = kafka_client_kwargs(secured.security(user))
        if action == "transact":
            producer = AIOKafkaProducer(
                bootstrap_servers=secured.bootstrap, transactional_id=topic, **security
            )
            try:
                await producer.start()
            finally:
                await producer.stop()
        elif action == "join":
            consumer = AIOKafkaConsumer(
                "PledgeMade", bootstrap_servers=secured.bootstrap, group_id=topic, **security
            )
            try:
                await consumer.start()
                await consumer.getmany(timeout_ms=5000)
            finally:
                await consumer.stop()
        elif action == "write":
            producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, **security)
            await producer.start()
            try:
                await producer.send_and_wait(topic, key=b"t/c-forged", value=b"{}")
            finally:
                await producer.stop()
        else:
            consumer = AIOKafkaConsumer(bootstrap_servers=secured.bootstrap, **security)
            await consumer.start()
            try:
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                await consumer.getmany(timeout_ms=5000)
            finally:
                await consumer.stop()

    with pytest.raises(AUTHORIZATION_ERRORS):
        asyncio.run(attempt())
