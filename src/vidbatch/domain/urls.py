"""The one check of every URL vidbatch sends something to, or forwards to the provider:
customer webhooks (at creation and at every delivery), reference and frame URLs.

:func:`parse_target` reads a URL the strict way both ends agree on: http(s), a host, no
credentials, no backslash, space or control character, a valid port, and the host put in
its canonical form — an IDNA name (full-width dots become dots) or, when the host is an
IPv4 address in any of the forms resolvers accept (``2130706433``, ``0x7f.1``, ``127.1``),
that address written plainly. A host that ends in a number but is no IPv4 address is
refused. :func:`check_url` adds the address rule: unless private addresses are allowed, the
host must not be a localhost name or a non-public literal address. Names are not resolved
here (a lookup can hang): delivery resolves them and checks every address again.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_URL = 2048

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_FORBIDDEN = re.compile(r"[\\\s\x00-\x1f\x7f]")


def non_public_address(address: str) -> bool:
    """True for an address nothing of ours may be sent to: loopback, private, link-local,
    multicast, reserved — also when an IPv4 address hides inside an IPv6 one (mapped,
    6to4, NAT64, IPv4-compatible)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(ip))
        if embedded is not None and non_public_address(str(embedded)):
            return True
    return not ip.is_global or ip.is_multicast


def _number(part: str) -> int | None:
    """One part of an IPv4 address as resolvers read it: decimal, 0x hex or 0 octal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError:
        return None


def _ipv4(host: str) -> str | None:
    """``host`` as a plain IPv4 address when it is one in any accepted form, None when it is
    a name; ValueError when it ends in a number but is no valid address."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts or _number(parts[-1]) is None:
        return None  # a name
    numbers = [_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise ValueError("is not a valid IPv4 address")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise ValueError("is not a valid IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def canonical_host(raw: str) -> str:
    """The host in the form a connection would use; ValueError with the reason."""
    if raw.startswith("["):
        inner = raw[1:-1] if raw.endswith("]") else ""
        try:
            return str(ipaddress.ip_address(inner.split("%", 1)[0]))
        except ValueError:
            raise ValueError("has an invalid IPv6 address") from None
    try:
        ascii_host = raw.encode("idna").decode("ascii").lower() if raw else ""
    except UnicodeError:
        raise ValueError("has an invalid host name") from None
    if not ascii_host:
        raise ValueError("must have a host")
    literal = _ipv4(ascii_host)
    return literal or ascii_host.rstrip(".")


@dataclass(frozen=True)
class Target:
    """Where a URL leads: its scheme, canonical host and port."""

    scheme: str
    host: str
    port: int

    @property
    def literal(self) -> bool:
        """True when the host is an address (nothing to resolve)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_target(value: Any) -> Target | str:
    """The target of ``value``, or the reason it is refused."""
    if not isinstance(value, str):
        return "must be a string URL"
    if len(value) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if _FORBIDDEN.search(value):
        return "must not contain spaces, backslashes or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "must be an http(s) URL with a valid port"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http(s) URL"
    if "@" in parts.netloc:
        return "must not contain credentials (user@)"
    hostport = parts.netloc
    raw_host = hostport if hostport.startswith("[") else hostport.rsplit(":", 1)[0]
    if raw_host.startswith("[") and "]" in raw_host:
        raw_host = raw_host[: raw_host.index("]") + 1]
    try:
        host = canonical_host(raw_host)
    except ValueError as exc:
        return str(exc)
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def is_private_host(host: str) -> bool:
    """True for localhost names and for non-public literal addresses (in any form)."""
    try:
        host = canonical_host(host if not host.startswith("[") else host.lower())
    except ValueError:
        return False
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return non_public_address(host)
    except ValueError:
        return False


def check_url(value: Any, *, allow_private: bool, https_only: bool = False) -> str | None:
    """None when ``value`` may be sent to, else the reason (see the module's docstring)."""
    target = parse_target(value)
    if isinstance(target, str):
        return target
    if allow_private:
        return None
    if https_only and target.scheme != "https":
        return "must be an https URL"
    if is_private_host(target.host):
        return "must not point at a private, loopback or link-local address"
    return None
