"""The guard against server-side request forgery for webhook URLs.

A platform chooses the URL we POST to, so it could aim us at our own network (the metadata
service at 169.254.169.254, Redis on 127.0.0.1, a private admin API). A URL is accepted only
when its scheme is http(s), it carries no credentials, and **every** address its host resolves
to is globally routable, unless ``allow_private`` is set (local runs and tests, whose
receivers listen on loopback). The check runs at registration and again at each delivery,
and the delivery connects to an address that passed the check (no second lookup that DNS
rebinding could answer differently).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "UnsafeUrl", "address_allowed", "check_url", "parse_url"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL must not be called; the message says why (safe to show to the platform)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the addresses its host resolved to (all allowed)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL without credentials; UnsafeUrl otherwise."""
    if len(url) > 2000:
        raise UnsafeUrl("url: longer than 2000 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"url: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("url: the scheme must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("url: no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("url: credentials in the URL are not allowed")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether we may connect to ``address``: globally routable, or anything when allowed."""
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return not ip.is_multicast and not ip.is_unspecified
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, *, allow_private: bool) -> Target:
    """Resolve ``url``'s host and check every address; UnsafeUrl names the reason."""
    scheme, host, port = parse_url(url)
    try:
        # an address literal resolves to itself: no resolver call (a thread hop per delivery)
        ipaddress.ip_address(host)
        addresses: tuple[str, ...] = (host,)
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise UnsafeUrl(f"url: host {host!r} does not resolve") from None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeUrl(f"url: host {host!r} does not resolve")
    refused = [a for a in addresses if not address_allowed(a, allow_private=allow_private)]
    if refused:
        raise UnsafeUrl(
            f"url: host {host!r} resolves to a loopback, private, link-local or reserved "
            f"address ({refused[0]})"
        )
    return Target(url, scheme, host, port, addresses)
