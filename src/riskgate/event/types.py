"""The one core type: a risk event, built once per request and read by every stage.

A :class:`RiskEvent` is built either from a decision API body or from a proxied
request, and then flows through signals → counters → rules → model → decision.
No stage goes back to the ASGI scope and none mutates the event.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

EventName = Literal["registration", "login", "promotion", "booking"]
EVENTS: Final[tuple[EventName, ...]] = get_args(EventName)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Outcome = Literal[
    "login_failed", "login_succeeded", "challenge_passed", "challenge_failed", "fraud", "legit"
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One protected request, as the decision stages see it.

    ``account`` and ``device_id`` are raw here and only here: signals key them with
    the HMAC secret before anything is counted, logged or stored.
    ``headers`` has lower-case names.

    >>> e = RiskEvent("r1", "login", ipaddress.ip_address("203.0.113.5"), 0.0)
    >>> e.event, str(e.ip)
    ('login', '203.0.113.5')
    """

    request_id: str
    event: EventName
    ip: IPAddress
    time: float
    account: str | None = None
    device_id: str | None = None
    user_agent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: The client carried a valid challenge pass bound to it (gateway modes).
    challenge_passed: bool = False


#: The longest text riskgate reads from a request field or header. The decision API
#: refuses longer values (400); the gateway modes, which cannot refuse an upstream's
#: request for it, cut them here. Either way no parser, cache or counter ever sees more.
MAX_TEXT: Final = 4096


def capped(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT` characters.

    >>> len(capped("x" * 10_000)), capped("short")
    (4096, 'short')
    """
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


#: Request ids drawn per ``os.urandom`` call. os.urandom releases the GIL around its
#: system call, so on a busy gateway each call let the decision log's thread take the
#: GIL and the event loop wait for it back: profiled, one call per request cost 4 % of a
#: decision. One call per 256 ids keeps every id 96 bits from the OS's CSPRNG.
_IDS_PER_DRAW: Final = 256
_random_ids: list[str] = []


def _forget_drawn_ids() -> None:
    # A forked child must not hand out the ids its parent already may hand out.
    _random_ids.clear()


os.register_at_fork(after_in_child=_forget_drawn_ids)


def new_request_id() -> str:
    """A unique, unguessable request id (96 random bits, hex)."""
    try:
        return _random_ids.pop()  # atomic, so threads (WSGI middleware) never share one
    except IndexError:
        drawn = os.urandom(12 * _IDS_PER_DRAW).hex()
        _random_ids.extend(drawn[i:i + 24] for i in range(24, len(drawn), 24))
        return drawn[:24]
