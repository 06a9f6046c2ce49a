"""The SSRF guard refuses URLs that reach our own network unless a setting allows them."""

from __future__ import annotations

import asyncio

import pytest

from services.notify.ssrf import UnsafeUrl, address_allowed, check_url, parse_url


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "224.0.0.1",
    ],
)
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    assert not address_allowed(address, allow_private=False)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address, allow_private=False)


def test_the_setting_allows_loopback_and_private_but_never_unspecified() -> None:
    assert address_allowed("127.0.0.1", allow_private=True)
    assert address_allowed("10.0.0.1", allow_private=True)
    assert not address_allowed("0.0.0.0", allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://user:pw@example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        parse_url(url)


async def test_a_host_resolving_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(UnsafeUrl, match="loopback, private"):
        await check_url("http://localhost:8080/hook", allow_private=False)
    with pytest.raises(UnsafeUrl, match="loopback, private"):
        await check_url("http://169.254.169.254/latest/meta-data", allow_private=False)
    target = await check_url("http://localhost:8080/hook", allow_private=True)
    assert target.port == 8080 and target.host == "localhost"
    assert all(address_allowed(a, allow_private=True) for a in target.addresses)


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        await check_url("https://no-such-host.invalid/hook", allow_private=True)


async def test_an_address_literal_is_checked_as_it_is_without_a_resolver_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_resolver(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("an address literal needs no lookup")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_resolver)
    with pytest.raises(UnsafeUrl, match="loopback, private"):
        await check_url("http://169.254.169.254/latest/meta-data", allow_private=False)
    with pytest.raises(UnsafeUrl, match="loopback, private"):
        await check_url("http://[::ffff:127.0.0.1]:8080/hook", allow_private=False)
    target = await check_url("http://[::1]:8080/hook", allow_private=True)
    assert (target.host, target.port, target.addresses) == ("::1", 8080, ("::1",))
    target = await check_url("https://93.184.215.14/hook", allow_private=False)
    assert target.addresses == ("93.184.215.14",)
