"""Where a webhook may be sent: public addresses only (a guard against SSRF).

A webhook makes the service send requests to a URL an admin typed in. Pointed at the
service's own network, that is a way into it: the metadata endpoint of the cloud it runs on
(169.254.169.254), a database's HTTP port, an admin page on localhost. So a target must be
``http`` or ``https`` and resolve only to globally routable addresses: loopback, private,
link-local (metadata included), shared, reserved, multicast and unspecified addresses are
refused. The check runs when an endpoint is registered (422) and again before every attempt,
after a fresh DNS resolution, and the attempt connects to the address that was checked, so a
name that resolves differently the second time cannot slip through.

``WEBHOOK_ALLOW_PRIVATE_TARGETS=true`` turns the guard off: for tests and local development
only, where the receiver runs on 127.0.0.1. It is unsafe anywhere else.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("http", "https")


class TargetRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts, and the address an attempt connects to."""

    scheme: str
    host: str
    port: int
    address: str | None  # None when the guard is off: connect by name


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise TargetRefused("the URL must start with http:// or https://")
    if not parts.hostname:
        raise TargetRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry a user name or password")
    if parts.fragment:
        raise TargetRefused("the URL may not have a #fragment")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def check(url: str, *, allow_private: bool) -> Target:
    """The URL's target, resolved and checked; raises :class:`TargetRefused`."""
    scheme, host, port = _parts(url)
    if allow_private:
        return Target(scheme, host, port, None)
    addresses = resolve(host, port)
    refused = [address for address in addresses if not is_public(address)]
    if refused:
        raise TargetRefused(
            f"the host {host!r} resolves to {refused[0]}, which is not a public address "
            "(loopback, private, link-local and reserved addresses are refused)"
        )
    return Target(scheme, host, port, addresses[0])
