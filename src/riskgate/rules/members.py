"""List members: the lookup structures behind `ip in lists.x`, and the parsers of list files."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, Literal

from riskgate.rules.regex import compile_search

#: The value types of the rule language: what a signal, a list element or an
#: expression holds. ``any`` is an open family member (``attributes.x``), checked at run time.
ExprType = Literal["str", "num", "bool", "any"]


class Members:
    """A set of values built once at load and tested per request; ``None`` is never in it."""

    element: ExprType = "str"

    def __contains__(self, value: object) -> bool:
        raise NotImplementedError


class ValueSet(Members):
    """Exact values, optionally normalised (lower-case, canonical IP, ASN number).

    >>> s = ValueSet(["AS13335", "15169"], normalize=parse_asn, element="num")
    >>> 13335 in s, "as15169" in s, None in s, "x" in s
    (True, True, False, False)
    """

    def __init__(
        self,
        values: Iterable[Hashable],
        normalize: Callable[[Any], Hashable | None] | None = None,
        element: ExprType = "str",
    ) -> None:
        self._norm = normalize
        self._values = frozenset(normalize(v) if normalize else v for v in values)
        self.element = element

    def __contains__(self, value: object) -> bool:
        if value is None:
            return False
        try:
            return (self._norm(value) if self._norm else value) in self._values
        except (TypeError, ValueError):
            return False


def parse_asn(value: Any) -> int | None:
    """``13335``, ``"13335"`` or ``"AS13335"`` as a number; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().upper().removeprefix("AS")
    return int(text) if text.isdigit() else None


class DomainSet(Members):
    """Domains; a name is in the set when it or any parent domain is listed.

    >>> s = DomainSet(["mailinator.com"])
    >>> "mailinator.com" in s, "x.Mailinator.com" in s, "notmailinator.com" in s
    (True, True, False)
    """

    def __init__(self, domains: Iterable[str]) -> None:
        self._domains = frozenset(d.strip().lower().strip(".").removeprefix("*.") for d in domains)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        name = value.lower().rstrip(".")
        while True:  # one hash per label: a.b.example.com, b.example.com, example.com, com
            if name in self._domains:
                return True
            dot = name.find(".")
            if dot < 0:
                return False
            name = name[dot + 1 :]


class PatternSet(Members):
    """Regular expressions (case-insensitive, RE2) joined into one, searched anywhere.

    >>> "Mozilla/5.0 HeadlessChrome/120" in PatternSet(["headlesschrome", "^curl/"])
    True
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        # One alternation is one regex scan per request instead of one per pattern.
        joined = "|".join(f"(?:{p})" for p in patterns)
        self._search = compile_search(joined, ignore_case=True) if joined else None

    def __contains__(self, value: object) -> bool:
        return (isinstance(value, str) and self._search is not None
                and self._search(value) is not None)


@functools.lru_cache(maxsize=8192)
def _ip_number(text: str) -> tuple[int, int] | None:
    # Cached: one request usually tests its one IP against several lists.
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.version, int(ip)


class CidrSet(Members):
    """IP networks, stored as sorted, merged integer ranges per IP version.

    Why ranges and :func:`bisect` rather than one set per prefix length: a lookup in
    per-length sets costs one hash per distinct length present (up to 33 for IPv4, 129
    for IPv6) and a list of cloud ranges uses most of them; merged ranges cost one
    O(log n) bisect whatever the list holds, and overlapping entries merge away.

    >>> s = CidrSet(["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"])
    >>> "10.200.0.1" in s, "11.0.0.1" in s, "2001:db8::5" in s, None in s
    (True, False, True, False)
    """

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network | str]):
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            n = ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
            ranges[n.version].append((int(n.network_address), int(n.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, spans in ranges.items():
            merged: list[list[int]] = []
            for lo, hi in sorted(spans):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self._starts[version] = [lo for lo, _ in merged]
            self._ends[version] = [hi for _, hi in merged]

    def __contains__(self, value: object) -> bool:
        found = _ip_number(value) if isinstance(value, str) else None
        if found is None:
            return False
        version, number = found
        i = bisect.bisect_right(self._starts[version], number) - 1
        return i >= 0 and number <= self._ends[version][i]




def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)  # strict: "10.0.0.1/8" is a typo worth reporting


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _asn(text: str) -> int:
    number = parse_asn(text)
    if number is None:
        raise ValueError("not an AS number such as AS13335")
    return number


def _domain(text: str) -> str:
    domain = text.lower().strip(".").removeprefix("*.")
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", domain):
        raise ValueError("not a domain such as example.com")
    return domain


def _pattern(text: str) -> str:
    compile_search(text, ignore_case=True)  # RegexError is a ValueError naming the fix
    return text


#: list type -> (parse one line, build the lookup structure from all of them)
LIST_PARSERS: Final[dict[str, tuple[Callable[[str], Any], Callable[[list[Any]], Members]]]] = {
    "cidr": (_network, CidrSet),
    "ip": (_ip, ValueSet),
    "asn": (_asn, lambda v: ValueSet(v, normalize=parse_asn, element="num")),
    "domain": (_domain, DomainSet),
    "device": (str, ValueSet),
    "string": (str, ValueSet),
    "ua_pattern": (_pattern, PatternSet),
}
