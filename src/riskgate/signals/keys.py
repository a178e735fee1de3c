"""Keying identities and naming networks: what counters and logs may hold instead of raw ids."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from typing import Any, Final


class Keyer:
    """Keys identities with a secret so they can be counted and logged but not read back.

    Keyed BLAKE2b is a proper MAC and several times cheaper than ``hmac`` + SHA-256
    on the hot path; 96 bits keep collisions out of reach for counter keys.

    >>> k = Keyer(b"s3cret")
    >>> k("account", "alice@example.com") == k("account", "alice@example.com")
    True
    >>> k("account", "alice@example.com") == Keyer(b"other")("account", "alice@example.com")
    False
    >>> len(k("device", "d-1"))
    24
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = hashlib.blake2b(secret).digest()  # any length in, 64-byte key out
        # Setting up a keyed digest (hashing the key block) costs as much as digesting
        # a short value; a decision keys four or five values, so each kind's keyed state
        # is made once and copied.
        self._kinds: dict[str, Any] = {}

    def __call__(self, kind: str, value: str) -> str:
        keyed = self._kinds.get(kind)
        if keyed is None:
            keyed = self._kinds[kind] = hashlib.blake2b(
                key=self._secret, digest_size=12, person=kind.encode()[:16])
        digest = keyed.copy()
        digest.update(value.encode())
        return digest.hexdigest()


def ip_prefix(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The /24 (IPv4) or /48 (IPv6) network a client shares with its neighbours.

    >>> ip_prefix(ipaddress.ip_address("203.0.113.77"))
    '203.0.113.0/24'
    >>> ip_prefix(ipaddress.ip_address("2001:db8:1:2::7"))
    '2001:db8:1::/48'
    """
    # Masking the integer is ~10x cheaper than building an ip_network per request.
    if ip.version == 4:
        return _v4_text(int(ip) & _V4_24) + "/24"
    return f"{ipaddress.IPv6Address(int(ip) & _V6_48)}/48"


def ip_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``str(ip)``; an IPv4 address formatted by the C library, four times faster.

    >>> ip_text(ipaddress.ip_address("203.0.113.7")), ip_text(ipaddress.ip_address("2001:db8::1"))
    ('203.0.113.7', '2001:db8::1')
    """
    # ipaddress formats in Python, a µs or more per address and a decision names two
    # (the address, its /24). IPv6 keeps ipaddress's text: the C library writes some
    # addresses (IPv4-compatible ones) differently, and keys must not change.
    return _v4_text(int(ip)) if ip.version == 4 else str(ip)


def _v4_text(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4))


_V4_24: Final = 0xFFFFFF00
_V6_48: Final = ((1 << 48) - 1) << 80


def email_domain(value: str | None) -> str | None:
    """The lower-case domain of an email address, or None when it is not one.

    >>> email_domain("Alice@Mail.Example.COM")
    'mail.example.com'
    >>> email_domain("alice") is None
    True
    """
    if not value:
        return None
    _, at, domain = value.rpartition("@")
    return domain.strip().lower() or None if at else None
