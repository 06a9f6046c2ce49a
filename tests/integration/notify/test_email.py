"""E-mails rendered by notify reach a real SMTP server (mailpit) and read back intact."""

from __future__ import annotations

import pytest

from services.notify.adapters.smtp import SmtpTransport
from services.notify.domain import CampaignView, decide, evolve
from services.notify.mail import Contact, MailRenderer
from tests.support.infra import unique_name
from tests.support.mailpit import Mailpit
from tests.unit.notify.events import Stream, goal, launch, pledge

pytestmark = pytest.mark.integration


async def test_goal_reached_mails_arrive_in_each_backers_language(mailpit: Mailpit) -> None:
    tag = unique_name("m")
    s = Stream(f"c-{tag}")
    envs = [
        s(launch()),
        s(pledge("p1", "b1", 6000, locale="fr")),
        s(pledge("p2", "b2", 4000, locale="en")),
        s(goal(10_000, 2)),
    ]
    view = CampaignView(s.campaign_id)
    for env in envs[:-1]:
        evolve(view, env)
    owed = [n for n in decide(view, envs[-1], []) if n.channel == "email"]
    renderer = MailRenderer(sender="notify@pledgeflow.test", message_id_domain="pf.test")
    transport = SmtpTransport("127.0.0.1", mailpit.smtp_port)
    contacts = {
        "b1": Contact(f"b1-{tag}@example.org", "fr-FR"),
        "b2": Contact(f"b2-{tag}@example.org", "en"),
        "creator-1": Contact(f"creator-{tag}@example.org", "en"),
    }
    for n in owed:
        await transport.send(renderer.render(n, contacts[n.recipient]).message)

    fr = mailpit.messages_to(contacts["b1"].email)
    en = mailpit.messages_to(contacts["b2"].email)
    assert len(fr) == 1 and len(en) == 1
    fr_full, en_full = mailpit.message(fr[0]["ID"]), mailpit.message(en[0]["ID"])
    assert fr_full["Subject"] == "Mon album a atteint son objectif"
    assert "60,00\u00a0€" in fr_full["Text"] and "100,00\u00a0€" in fr_full["HTML"]
    assert en_full["Subject"] == "Mon album reached its goal"
    assert "€40.00" in en_full["Text"]
    expected = next(n.notification_id for n in owed if n.recipient == "b1")
    assert fr_full["MessageID"] == f"{expected}@pf.test"
    assert len(mailpit.messages_to(contacts["creator-1"].email)) == 1
