"""Identity facts: normalised email keys, disposable domains, username shape, travel speed.

Everything here works on the raw value in memory and returns only derived facts:
a keyed email, a domain, a few numbers. The raw local part never leaves this module.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from riskgate.errors import SignalSourceError


@dataclass(frozen=True, slots=True)
class Provider:
    """How one mail provider routes local parts to mailboxes.

    ``canonical`` is the domain all of the provider's aliases map to.
    """

    canonical: str
    ignore_dots: bool = False
    plus_tags: bool = True


_GMAIL = Provider("gmail.com", ignore_dots=True)
_OUTLOOK = Provider("outlook.com")
_PROTON = Provider("proton.me")
_ICLOUD = Provider("icloud.com")

#: Default provider table; pass your own to :class:`IdentitySignals` to extend it.
DEFAULT_PROVIDERS: Final[Mapping[str, Provider]] = {
    "gmail.com": _GMAIL,
    "googlemail.com": _GMAIL,
    "outlook.com": _OUTLOOK,
    "hotmail.com": _OUTLOOK,
    "live.com": _OUTLOOK,
    "proton.me": _PROTON,
    "protonmail.com": _PROTON,
    "pm.me": _PROTON,
    "icloud.com": _ICLOUD,
    "me.com": _ICLOUD,
    "mac.com": _ICLOUD,
}


def normalise_email(
    value: str,
    providers: Mapping[str, Provider] = DEFAULT_PROVIDERS,
    default_plus_tags: bool = True,
) -> str | None:
    """The mailbox an address delivers to, or None when ``value`` is not an address.

    Sub-addressing (``+tag``) is stripped for unknown domains too by default: abuse
    farms rely on it and few real local parts contain a ``+``.

    >>> normalise_email("A.l.i.c.e+promo@GoogleMail.com")
    'alice@gmail.com'
    >>> normalise_email("Bob.Smith+x@example.org")
    'bob.smith@example.org'
    >>> normalise_email("not-an-email") is None
    True
    """
    local, at, domain = value.strip().lower().rpartition("@")
    if not at or not local or not domain or "." not in domain:
        return None
    provider = providers.get(domain)
    if provider is not None:
        domain = provider.canonical
    if provider.plus_tags if provider is not None else default_plus_tags:
        local = local.split("+", 1)[0] or local
    if provider is not None and provider.ignore_dots:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def _read_domains(path: str | Path, what: str) -> frozenset[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SignalSourceError(
            f"{path}: cannot read the {what} ({exc.__class__.__name__}: {exc}); "
            "expected a text file with one domain per line"
        ) from exc
    lines = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
    return frozenset(line for line in lines if line)


class DisposableDomains:
    """Membership in a disposable-domain list, matching each parent suffix too.

    An allowlisted domain (or parent) is never disposable: the allowlist holds
    providers that look throw-away but are not.

    >>> d = DisposableDomains(["mailinator.com"], allow=["safe.mailinator.com"])
    >>> d("x.y.mailinator.com"), d("safe.mailinator.com"), d("example.com")
    (True, False, False)
    """

    def __init__(self, block: Iterable[str], allow: Iterable[str] = ()) -> None:
        self._block = frozenset(block)
        self._allow = frozenset(allow)

    @classmethod
    def from_files(
        cls, blocklist: str | Path, allowlist: str | Path | None = None
    ) -> DisposableDomains:
        """Load the one-domain-per-line files of disposable-email-domains and the like."""
        allow = _read_domains(allowlist, "disposable-email allowlist") if allowlist else ()
        return cls(_read_domains(blocklist, "disposable-email blocklist"), allow)

    @classmethod
    def bundled(cls, allowlist: str | Path | None = None) -> DisposableDomains:
        """The list of the ``disposable-email-domains`` package (CC0, maintained by the
        disposable-email-domains project; upgrade the package to refresh it), plus an
        allowlist file of one's own."""
        import disposable_email_domains  # loaded once, only when no list is configured

        allow = set(disposable_email_domains.allowlist)
        if allowlist:
            allow |= _read_domains(allowlist, "disposable-email allowlist")
        return cls(disposable_email_domains.blocklist, allow)

    def __call__(self, domain: str) -> bool:
        labels = domain.lower().rstrip(".").split(".")
        # Longest suffix first, and never the bare top-level domain.
        for i in range(len(labels) - 1):
            suffix = ".".join(labels[i:])
            if suffix in self._allow:
                return False
            if suffix in self._block:
                return True
        return False


_SEQUENTIAL: Final = re.compile(r"[a-z]+[._-]?(?:0\d{2,}|\d{5,})")


@dataclass(frozen=True, slots=True)
class UsernameShape:
    """Shape of a user name, without the name itself."""

    sequential: bool
    digit_ratio: float
    entropy: float


# Usernames repeat (every login of an account); the shape costs ~25 µs to compute.
@functools.lru_cache(maxsize=16384)
def username_shape(name: str) -> UsernameShape:
    """How machine-made a user name looks.

    ``sequential`` is a word stem followed by a zero-padded (``user0042``) or long
    (5+ digits) number, the shape of bulk-created accounts; a birth year is not.

    >>> username_shape("user0042")
    UsernameShape(sequential=True, digit_ratio=0.5, entropy=2.75)
    >>> username_shape("john1985").sequential
    False
    """
    low = name.lower()
    size = len(low) or 1
    # H = log2(n) - sum(c * log2 c) / n: one log per distinct character.
    entropy = math.log2(size) - sum(c * math.log2(c) for c in Counter(low).values()) / size
    return UsernameShape(
        sequential=_SEQUENTIAL.fullmatch(low) is not None,
        digit_ratio=round(sum(map(str.isdigit, low)) / size, 4),
        entropy=round(entropy, 4) + 0.0,
    )


_EARTH_RADIUS_KM: Final = 6371.0088


def travel_speed_kmh(
    lat1: float, lon1: float, t1: float, lat2: float, lon2: float, t2: float,
    min_seconds: float = 1.0,
) -> float:
    """Great-circle (haversine) speed in km/h between two sightings at Unix times t1, t2.

    The interval is floored at ``min_seconds`` so two distant sightings in the same
    instant give a huge but finite (JSON-safe) speed.

    >>> round(travel_speed_kmh(51.5074, -0.1278, 0, 48.8566, 2.3522, 3600))  # London-Paris
    344
    >>> travel_speed_kmh(35.0, 139.0, 10, 35.0, 139.0, 10)
    0.0
    >>> travel_speed_kmh(0, 0, 0, 0, 180, 0) > 1e7
    True
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    km = 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
    hours = max(abs(t2 - t1), min_seconds) / 3600
    return km / hours


class IdentitySignals:
    """Builds the ``account.*`` identity facts; built once with its lists and options.

    ``disposable`` may be None when no list is configured: the fact is then unknown.
    """

    def __init__(
        self,
        disposable: DisposableDomains | None = None,
        providers: Mapping[str, Provider] = DEFAULT_PROVIDERS,
        default_plus_tags: bool = True,
    ) -> None:
        self._disposable = disposable
        self._providers = providers
        self._plus = default_plus_tags

    def normalise(self, email: str) -> str | None:
        """The normalised mailbox for ``email`` with this instance's provider table."""
        return normalise_email(email, self._providers, self._plus)

    def is_disposable(self, domain: str | None) -> bool | None:
        """Whether ``domain`` is on the disposable list; None without a list or domain."""
        if self._disposable is None or domain is None:
            return None
        return self._disposable(domain)
