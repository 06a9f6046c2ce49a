"""E-mail rendering: every template, both languages, 0-, 2- and 3-decimal currencies."""

from __future__ import annotations

from dataclasses import replace
from email.message import EmailMessage

import pytest

from schemas.money import Money
from services.notify.domain import CampaignView, Notification, decide, email_templates, evolve
from services.notify.mail import Contact, MailRenderer, format_amount, resolve_locale
from tests.unit.notify.events import (
    Stream,
    capture_failed,
    captured,
    close,
    goal,
    launch,
    pledge,
    refunded,
    settled,
)

RENDERER = MailRenderer(sender="Pledgeflow <notify@pledgeflow.test>", message_id_domain="pf.test")


def every_email(currency: str) -> list[Notification]:
    """The e-mails of a campaign that is pledged, funded, closed, charged, refunded, settled."""
    s = Stream(f"c-{currency}")
    envs = [
        s(launch(currency=currency, goal=9000)),
        s(pledge("p1", "b1", 2500, currency, locale="fr")),
        s(pledge("p2", "b2", 7000, currency, locale="en")),
        s(goal(9500, 2, currency)),
        s(close("funded", 9500, 2, last_seq=5, currency=currency)),
        s(captured("p1", "b1", 2500, currency)),
        s(capture_failed("p2", "b2", 7000, currency)),
        s(refunded("p1", "b1", 2500, currency)),
        s(settled(9500, currency)),
        s(close("failed", 9500, 2, last_seq=5, currency=currency)),
    ]
    view = CampaignView(s.campaign_id)
    out: list[Notification] = []
    for env in envs:
        out.extend(n for n in decide(view, env, []) if n.channel == "email")
        if env.event_type != "CampaignClosed":  # the second close is only rendered
            evolve(view, env)
    return out


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def flat(text: str) -> str:
    """Narrow and no-break spaces as plain spaces (babel uses them inside amounts)."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


@pytest.mark.parametrize(
    ("currency", "fr_amount", "en_amount"),
    [
        ("JPY", "2 500 JPY", "¥2,500"),
        ("EUR", "25,00 €", "€25.00"),
        ("TND", "2,500 TND", "TND2.500"),
    ],
)
@pytest.mark.parametrize("language", ["fr", "en"])
def test_every_template_renders_in_both_languages(
    currency: str, fr_amount: str, en_amount: str, language: str
) -> None:
    mails = every_email(currency)
    assert {n.template for n in mails} == set(email_templates())
    for n in mails:
        rendered = RENDERER.render(n, Contact(f"{n.recipient}@example.org", language))
        text, html = parts(rendered.message)
        assert rendered.language == language
        assert rendered.message["Message-ID"] == f"<{n.notification_id}@pf.test>"
        assert rendered.message["Subject"]
        assert "{{" not in text + html and "{%" not in text + html
        assert f'lang="{language}"' in html
        if n.template in {"pledge_receipt", "charge_receipt", "refund"} and n.recipient == "b1":
            expected = fr_amount if language == "fr" else en_amount
            assert expected in flat(text), (n.template, text)
            assert expected in flat(html)


def test_language_follows_the_contact_then_the_pledge_then_english() -> None:
    receipt = next(n for n in every_email("EUR") if n.template == "pledge_receipt")
    assert receipt.locale_hint == "fr"
    assert RENDERER.render(receipt, Contact("a@x.org", "en-GB")).language == "en"
    assert RENDERER.render(receipt, Contact("a@x.org", None)).language == "fr"
    assert RENDERER.render(receipt, Contact("a@x.org", "de")).language == "fr"
    assert resolve_locale("de", None, "not a locale").language == "en"
    assert resolve_locale("fr-CA").territory == "CA"


def test_payment_failed_names_the_date_to_fix_it_by_in_the_readers_language() -> None:
    failed = next(n for n in every_email("EUR") if n.template == "payment_failed")
    fr_text, _ = parts(RENDERER.render(failed, Contact("a@x.org", "fr")).message)
    en_text, _ = parts(RENDERER.render(failed, Contact("a@x.org", "en")).message)
    assert "8 mars 2026" in flat(fr_text)
    assert "March 8, 2026" in flat(en_text)


def test_html_part_escapes_what_the_platform_wrote() -> None:
    receipt = next(n for n in every_email("EUR") if n.template == "pledge_receipt")
    hostile = replace(receipt, params={**receipt.params, "campaign_title": "<script>x</script>"})
    text, html = parts(RENDERER.render(hostile, Contact("a@x.org", "en")).message)
    assert "<script>" in text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_amounts_use_exactly_the_currency_decimals() -> None:
    fr = resolve_locale("fr")
    assert flat(format_amount(Money(amount_minor=-1, currency="KWD"), fr)) == "-0,001 KWD"
    assert flat(format_amount(Money(amount_minor=123456789, currency="EUR"), fr)) == (
        "1 234 567,89 €"
    )
