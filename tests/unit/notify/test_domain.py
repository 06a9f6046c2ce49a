"""Specification of notify's domain: who is owed which message for which event."""

from __future__ import annotations

from schemas.envelope import Envelope
from services.notify.domain import (
    CampaignView,
    Notification,
    WebhookEndpoint,
    decide,
    evolve,
    notification_id,
    ready,
)
from tests.unit.notify.events import (
    Stream,
    cancel,
    capture_failed,
    captured,
    close,
    goal,
    launch,
    pledge,
    refunded,
    released,
    settled,
)

ALL = frozenset({"GoalReached", "PledgeMade", "CampaignClosed", "CampaignSettled"})
EP_A1 = WebhookEndpoint("ep-a1", "tenant-a", "https://a.example/hook", ALL, "whsec_a1")
EP_A2 = WebhookEndpoint(
    "ep-a2", "tenant-a", "https://a2.example/hook", frozenset({"PledgeMade"}), "s"
)
EP_B = WebhookEndpoint("ep-b", "tenant-b", "https://b.example/hook", ALL, "whsec_b")
ENDPOINTS = [EP_A1, EP_A2, EP_B]


def run(envelopes: list[Envelope]) -> tuple[CampaignView, list[list[Notification]]]:
    """Decide then evolve each event, as the worker does."""
    view = CampaignView(envelopes[0].campaign_id)
    owed = []
    for env in envelopes:
        owed.append(decide(view, env, ENDPOINTS))
        evolve(view, env)
    return view, owed


def funded_campaign() -> tuple[Stream, list[Envelope]]:
    s = Stream()
    return s, [
        s(launch()),
        s(pledge("p1", "b1", 6000, locale="fr-FR")),
        s(pledge("p2", "b2", 3000, locale="en")),
        s(pledge("p3", "b1", 1000)),
        s(goal(10_000, 3)),
        s(close("funded", 10_000, 3, last_seq=6)),
    ]


def test_goal_reached_is_one_webhook_per_subscribed_endpoint_of_the_tenant_only() -> None:
    _, envs = funded_campaign()
    _, owed = run(envs)
    hooks = [n for n in owed[4] if n.channel == "webhook"]
    assert [n.recipient for n in hooks] == ["ep-a1"]  # ep-a2 not subscribed, ep-b other tenant
    assert hooks[0].recipient_kind == "platform"
    assert hooks[0].params["type"] == "GoalReached"
    assert hooks[0].params["data"]["campaign_id"] == "c-1"
    assert hooks[0].params["data"]["seq"] == 5
    assert hooks[0].params["data"]["total"] == {"amount_minor": 10_000, "currency": "EUR"}


def test_goal_reached_mails_each_backer_once_with_their_total_and_the_creator() -> None:
    _, envs = funded_campaign()
    _, owed = run(envs)
    mails = {(n.recipient_kind, n.recipient): n for n in owed[4] if n.channel == "email"}
    assert set(mails) == {("backer", "b1"), ("backer", "b2"), ("creator", "creator-1")}
    assert mails[("backer", "b1")].params["amount"].amount_minor == 7000
    assert mails[("backer", "b1")].template == "goal_reached_backer"
    assert mails[("backer", "b1")].locale_hint == "fr-FR"  # latest pledge with a locale
    assert mails[("creator", "creator-1")].template == "goal_reached_creator"
    assert mails[("creator", "creator-1")].params["pledge_count"] == 3


def test_pledge_receipt_goes_to_the_backer_and_webhook_never_carries_the_payment_token() -> None:
    _, envs = funded_campaign()
    _, owed = run(envs)
    receipt = [n for n in owed[1] if n.channel == "email"]
    assert [(n.recipient, n.template, n.locale_hint) for n in receipt] == [
        ("b1", "pledge_receipt", "fr-FR")
    ]
    hooks = [n for n in owed[1] if n.channel == "webhook"]
    assert {n.recipient for n in hooks} == {"ep-a1", "ep-a2"}
    assert all("payment_token" not in n.params["data"] for n in hooks)


def test_cancelled_pledges_are_not_told_about_the_close() -> None:
    s = Stream()
    envs = [
        s(launch()),
        s(pledge("p1", "b1", 6000)),
        s(pledge("p2", "b2", 3000)),
        s(cancel("p2", 3000)),
        s(close("failed", 6000, 1, last_seq=5)),
    ]
    _, owed = run(envs)
    mails = [
        (n.recipient, n.template, n.params.get("funded")) for n in owed[4] if n.channel == "email"
    ]
    assert mails == [
        ("b1", "campaign_closed_backer", False),
        ("creator-1", "campaign_closed_creator", False),
    ]


def test_notification_ids_are_deterministic_and_distinct_per_recipient_and_channel() -> None:
    _, envs = funded_campaign()
    first = run(envs)[1]
    again = run(envs)[1]
    assert [n.notification_id for ns in first for n in ns] == [
        n.notification_id for ns in again for n in ns
    ]
    ids = [n.notification_id for ns in first for n in ns]
    assert len(ids) == len(set(ids))
    event_id = envs[4].event_id
    assert notification_id(event_id, "backer", "b1", "email") != notification_id(
        event_id, "backer", "b1", "webhook"
    )
    assert notification_id(event_id, "backer", "b1", "email").startswith("msg_")


def test_nothing_is_owed_before_the_launch_is_known() -> None:
    s = Stream()
    s(launch())  # seq 1 consumed elsewhere: the view never saw it
    assert decide(CampaignView("c-1"), s(pledge("p1", "b1", 100)), ENDPOINTS) == []


def test_settlement_events_wait_for_their_pledge_and_the_payout_for_the_close() -> None:
    s, envs = funded_campaign()
    view = CampaignView("c-1")
    cap = s(captured("p1", "b1", 6000))
    pay = s(settled(10_000))
    assert not ready(view, cap.payload)
    for env in envs[:2]:
        evolve(view, env)
    assert ready(view, cap.payload)
    assert not ready(view, pay.payload)
    for env in envs[2:]:
        evolve(view, env)
    assert ready(view, pay.payload)
    assert ready(view, envs[4].payload)  # campaign events are ordered by seq: always ready


def test_settlement_messages_name_the_right_template_and_recipient() -> None:
    s, envs = funded_campaign()
    view, _ = run(envs)
    cases = {
        "charge_receipt": s(captured("p1", "b1", 6000)),
        "payment_failed": s(capture_failed("p2", "b2", 3000)),
        "refund": s(refunded("p3", "b1", 1000)),
        "payout_statement": s(settled(10_000)),
    }
    for template, env in cases.items():
        mails = [n for n in decide(view, env, ENDPOINTS) if n.channel == "email"]
        assert [n.template for n in mails] == [template]
    failed = decide(view, cases["payment_failed"], ENDPOINTS)[0]
    assert failed.recipient == "b2" and failed.params["retry_until"] is not None
    assert failed.locale_hint == "en"
    payout = [n for n in decide(view, cases["payout_statement"], ENDPOINTS) if n.channel == "email"]
    assert payout[0].recipient_kind == "creator"
    assert payout[0].params["payout"].amount_minor == 10_000 - 500 - 200
    assert [n.recipient for n in decide(view, cases["payout_statement"], ENDPOINTS)] == [
        "ep-a1",
        "creator-1",
    ]


def test_a_released_authorization_is_a_webhook_only_and_ends_the_pledge() -> None:
    s, envs = funded_campaign()
    view, _ = run(envs)
    rel = s(released("p2", 3000))
    assert (
        decide(
            view, rel, [WebhookEndpoint("e", "tenant-a", "u", frozenset({"PledgeReleased"}), "s")]
        )[0].channel
        == "webhook"
    )
    assert [n for n in decide(view, rel, ENDPOINTS) if n.channel == "email"] == []
    evolve(view, rel)
    assert not view.pledges["p2"].active


def test_webhooks_and_emails_name_the_campaign_as_its_tenant_knows_it() -> None:
    # Inside the system a campaign id is tenant-qualified (schemas.tenancy); a platform and
    # its backers only ever see their own id.
    s = Stream("tenant-a/c-1")
    envs = [s(launch()), s(pledge("p1", "b1", 12_000, locale="en")), s(goal(12_000, 1))]
    _, owed = run(envs)
    hooks = [n for n in owed[2] if n.channel == "webhook"]
    mails = [n for n in owed[2] if n.channel == "email"]
    assert hooks and mails
    assert {n.params["data"]["campaign_id"] for n in hooks} == {"c-1"}
    assert {n.params["campaign_id"] for n in mails} == {"c-1"}
    assert {n.campaign_id for n in hooks + mails} == {"tenant-a/c-1"}  # recorded internally
