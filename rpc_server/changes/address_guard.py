"""Where a webhook may send (server-side request forgery): http and https URLs only, without
credentials, to public addresses. Loopback, private (RFC 1918, fc00::/7), link-local
(169.254/16 and fe80::/10, where cloud metadata services answer), shared (CGNAT 100.64/10),
unspecified, multicast and reserved addresses are refused, also when an IPv6 address carries
one of them (IPv4-mapped, 6to4, Teredo, NAT64), unless FLEXDB_WEBHOOK_ALLOW_PRIVATE is on.

A URL is checked when a webhook is saved (a literal address, and the addresses its name
resolves to then) and again at every connection: GuardedResolver hands the HTTP client only
the checked addresses of a name, and the client connects to them (no second resolution a
DNS answer could change in between), sending the name as Host and in TLS's SNI."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
MAX_URL = 2048


class RefusedAddress(OSError):
    """A webhook URL or the address it resolves to may not be used; the message says why."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo's client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str | None:
    """Why a webhook may not reach `address` ("a loopback address" …), or None: public."""
    inner = embedded_ipv4(address)
    if inner is not None:
        why = address_class(inner)
        return None if why is None else f"{why} (inside the IPv6 address)"
    if address in METADATA:
        return "a link-local address (a cloud metadata service)"
    checks = (("is_loopback", "a loopback address"), ("is_unspecified", "an unspecified address"),
              ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"))
    for attribute, why in checks:
        if getattr(address, attribute):
            return why
    if address in SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a non-public address"
    return None


def refusal(address: str, allow_private: bool) -> str | None:
    """Why `address` (an IP address as text) is refused, or None."""
    if allow_private:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # (an IPv6 zone does not matter)
    except ValueError:
        return "an unparsable address"
    why = address_class(ip)
    return None if why is None else f"{why} ({ip})"


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def looks_like_address(host: str) -> bool:
    """Whether the HTTP client takes `host` for an IP address and connects to it without
    resolving it (aiohttp.helpers.is_ip_address: our resolver never sees it)."""
    return ":" in host or host.replace(".", "").isdigit()


def connection_host(url: str) -> str:
    """The host the HTTP client connects to: yarl's, after its IDNA (UTS 46) mapping, which
    is not urlsplit's: `http://127.0.0.1\U0001fbf0/` is a name to urlsplit (and to Python's
    IDNA 2003 codec, so getaddrinfo does not resolve it), but 127.0.0.10 to yarl, which the
    client then connects to without resolving. Every check looks at this host."""
    try:
        host = URL(url).host
    except (ValueError, TypeError, UnicodeError) as exc:
        raise RefusedAddress(f"is not a valid URL ({exc})") from None
    if not host:
        raise RefusedAddress("has no host")
    return host


def check_url(url: str) -> tuple[str, str]:
    """The URL's (scheme, host the client connects to), or RefusedAddress saying what is
    wrong with its form."""
    if len(url) > MAX_URL:
        raise RefusedAddress(f"is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise RefusedAddress("holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise RefusedAddress(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedAddress("must be an http:// or https:// URL")
    if not parts.hostname:
        raise RefusedAddress("has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedAddress("must not carry credentials (the receiver checks the signature)")
    if parts.fragment:
        raise RefusedAddress("must not have a fragment (#…)")
    host = connection_host(url)
    if looks_like_address(host) and literal_address(host) is None:
        raise RefusedAddress(f"has a host that is not a valid IP address ({host})")
    return parts.scheme, host


async def check_destination(url: str, allow_private: bool) -> None:
    """At save time: the URL's form, and the addresses its host is or resolves to now (a
    name that does not resolve is taken: it is checked again at every delivery)."""
    _, host = check_url(url)
    if allow_private:
        return
    literal = literal_address(host)
    if literal is not None:
        why = refusal(str(literal), False)
        if why:
            raise RefusedAddress(f"is {why}")
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    for info in infos:
        why = refusal(str(info[4][0]), False)
        if why:
            raise RefusedAddress(f"resolves to {why}")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a webhook may reach (all of them
    refused: RefusedAddress, which the client reports as a connection error). The client
    does not resolve a literal address: the deliverer checks those itself (refusal())."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private
        self.inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self.inner.resolve(host, port, family)
        allowed: list[Any] = []
        refused: list[str] = []
        for entry in found:
            why = refusal(entry["host"], self.allow_private)
            if why:
                refused.append(why)
            else:
                allowed.append(entry)
        if not allowed:
            raise RefusedAddress(f"{host} resolves to {refused[0]}" if refused
                                 else f"{host} does not resolve")
        return allowed

    async def close(self) -> None:
        await self.inner.close()
