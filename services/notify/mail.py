"""E-mail rendering: a notification plus a contact becomes a MIME message (plain text + HTML).

Templates are jinja2 files under ``templates/<language>/`` (``<template>.txt.j2`` sets the
``subject`` and holds the plain text; ``<template>.html.j2`` the HTML part), one folder per
supported language (French and English). Amounts and dates are formatted here with babel for
the recipient's locale (``25,00 €`` / ``€25.00``) with exactly the currency's ISO 4217
decimals, so templates only place strings. An undefined variable fails the rendering
(StrictUndefined): a template can never send a message with a hole in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import parse_pattern
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from schemas.money import Money
from services.notify.domain import Notification

__all__ = [
    "LANGUAGES",
    "Contact",
    "MailRenderer",
    "RenderedMail",
    "format_amount",
    "resolve_locale",
]

#: Languages that have templates; any other locale falls back to English.
LANGUAGES = ("en", "fr")
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Contact:
    """Where and in which language a person is reached (registered by the platform, erasable)."""

    email: str
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """A rendered message and the language it was rendered in."""

    message: EmailMessage
    language: str


def resolve_locale(*candidates: str | None) -> Locale:
    """The first candidate babel knows whose language has templates; English otherwise."""
    for candidate in candidates:
        if not candidate:
            continue
        try:
            locale = Locale.parse(candidate.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            continue
        if locale.language in LANGUAGES:
            return locale
    return Locale.parse("en")


def format_amount(money: Money, locale: Locale) -> str:
    """``money`` in ``locale``'s currency format with exactly the currency's decimals."""
    pattern = parse_pattern(locale.currency_formats["standard"])
    exponent = money.exponent
    pattern.frac_prec = (exponent, exponent)
    value = Decimal(money.amount_minor).scaleb(-exponent)
    return str(pattern.apply(value, locale, currency=money.currency, currency_digits=False))


class MailRenderer:
    """Renders notifications into messages; one instance per process (templates are cached)."""

    def __init__(self, *, sender: str, message_id_domain: str) -> None:
        self.sender = sender
        self.message_id_domain = message_id_domain
        self._env = Environment(
            loader=FileSystemLoader(_TEMPLATES),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def message_id(self, notification_id: str) -> str:
        """The ``Message-ID`` of a notification: the same for every repeat of it."""
        return f"<{notification_id}@{self.message_id_domain}>"

    def render(self, notification: Notification, contact: Contact) -> RenderedMail:
        """The message for ``notification`` addressed to ``contact`` in the contact's language
        (or the pledge's, or English)."""
        locale = resolve_locale(contact.locale, notification.locale_hint)
        context = {key: _localized(value, locale) for key, value in notification.params.items()}
        base = f"{locale.language}/{notification.template}"
        text_module = self._env.get_template(f"{base}.txt.j2").make_module(context)
        html = self._env.get_template(f"{base}.html.j2").render(context)
        subject = " ".join(str(getattr(text_module, "subject", "")).split())
        if not subject:
            raise ValueError(f"template {base}.txt.j2 sets no subject")
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = contact.email
        msg["Subject"] = subject
        msg["Message-ID"] = self.message_id(notification.notification_id)
        msg["Date"] = format_datetime(notification.occurred_at)
        msg["Content-Language"] = locale.language
        msg["X-Pledgeflow-Notification"] = notification.notification_id
        msg.set_content(str(text_module).strip() + "\n")
        msg.add_alternative(html, subtype="html")
        return RenderedMail(msg, locale.language)


def _localized(value: Any, locale: Locale) -> Any:
    """Money and dates as the reader's locale writes them; everything else unchanged."""
    if isinstance(value, Money):
        return format_amount(value, locale)
    if isinstance(value, datetime):
        return format_date(value, format="long", locale=locale)
    return value
