"""Internal endpoints answer only internal peers when riskgate faces the public (CONTRACT §2).

In reverse-proxy mode the airline's public traffic arrives on riskgate's own port. The
decision API, feedback, the nginx auth endpoints, metrics, the admin API and the
OpenAPI document must not answer it: anyone could feed invented events into the
counters (lock a victim's account out), read the rules back as an oracle, or scrape
metrics. They answer only peers in ``internal_networks``, loopback and
``trusted_proxies``, judged by the TCP peer, never by a forwarded header; anyone else
gets the ``404`` of a path that does not exist.

>>> is_internal("/v1/decide"), is_internal("/v1/auth/challenge"), is_internal("/admin/lists")
(True, True, True)
>>> is_internal("/api/login"), is_internal("/healthz"), is_internal("/v1/decisions")
(False, False, False)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from riskgate.config import IPNetwork
from riskgate.http.request import TrustedProxies

_EXACT: Final = frozenset({"/v1/decide", "/v1/feedback", "/v1/auth", "/metrics", "/admin",
                           "/openapi.json"})
_PREFIXES: Final = ("/v1/auth/", "/admin/")
LOOPBACK: Final[tuple[IPNetwork, ...]] = (ipaddress.ip_network("127.0.0.0/8"),
                                          ipaddress.ip_network("::1/128"))


def is_internal(path: str) -> bool:
    return path in _EXACT or path.startswith(_PREFIXES)


class InternalOnly:
    """Answers ``404`` to internal paths from peers outside ``networks`` (and loopback)."""

    def __init__(self, app: ASGIApp, networks: Iterable[IPNetwork]) -> None:
        self.app = app
        # The same peer rule as for forwarded headers: an address that is not one (a
        # Unix socket) is nobody's, so it is never internal.
        self.internal = TrustedProxies((*LOOPBACK, *networks))
        self._not_found = PlainTextResponse("Not Found", status_code=404)

    def allows(self, host: str | None) -> bool:
        return self.internal.trusts(self.internal.peer(host))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_internal(scope["path"]):
            client = scope.get("client")
            if not self.allows(client[0] if client else None):
                await self._not_found(scope, receive, send)
                return
        await self.app(scope, receive, send)
