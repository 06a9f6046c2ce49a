"""The SMTP adapter of the mail port: sends a rendered message with aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

__all__ = ["MailTransport", "SmtpTransport"]


class MailTransport(Protocol):
    """Sends one message; raises on any failure (the caller decides about retries)."""

    async def send(self, message: EmailMessage) -> None: ...


class SmtpTransport:
    """One SMTP connection per message: simple, and a dead server costs one failed send."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.start_tls = start_tls
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.start_tls,
            timeout=self.timeout,
        )
