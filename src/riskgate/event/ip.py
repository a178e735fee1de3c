"""Client addresses as riskgate reads them."""

from __future__ import annotations

import functools
import ipaddress

from riskgate.event.types import IPAddress


# Clients send many requests from one address, and ipaddress parses in Python (2 µs);
# only valid addresses are remembered, so junk cannot fill the cache. Small, because
# every entry is two more objects for each full garbage collection to walk.
@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address as ``ipaddress`` reads it, without zone ids.

    IPv4-mapped IPv6 addresses are the IPv4 client they carry, so both forms count
    against the same counters.

    >>> parse_ip("::ffff:203.0.113.5")
    IPv4Address('203.0.113.5')
    >>> parse_ip("fe80::1%eth0")
    Traceback (most recent call last):
    ...
    ValueError: `fe80::1%eth0` has a zone id; send the address without `%...`
    """
    if "%" in text:
        raise ValueError(f"`{text}` has a zone id; send the address without `%...`")
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
