"""The upstream as an ASGI app: the reverse proxy's forwarding half.

:class:`ProxyApp` streams each request to the upstream over a pooled aiohttp client
and streams the answer back; it knows nothing of risk. The reverse-proxy mode is
``RiskGateMiddleware(ProxyApp(upstream), ...)``: scoring stays in the middleware, so
the proxy and the middleware mode cannot drift apart.

Why aiohttp and not httpx (which the tests use): on this hot path httpx's
connection pool (httpcore 1.x) checks every pooled connection on every request and
managed 400 to 750 forwarded requests/s on one core here, against 2,700 to 5,600 for
aiohttp's client on the same upstream — the proxy would have been slower than the
decisions it carries.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

import aiohttp
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: RFC 9110 §7.6.1: these describe one connection, never the message, so neither
#: direction forwards them (nor any header the Connection header names).
HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})


@dataclass(frozen=True, slots=True)
class UpstreamTimeout:
    """How long to wait for the upstream: to connect, and between bytes of its answer."""

    connect: float = 5.0
    read: float = 30.0


DEFAULT_TIMEOUT: Final = UpstreamTimeout()
#: Connections to the upstream at once: enough for one busy worker, bounded so a slow
#: upstream makes requests queue (and time out) instead of opening sockets without end.
DEFAULT_CONNECTIONS: Final = 256
#: Headers aiohttp would add on its own; a proxy forwards the client's, or none.
_NO_AUTO_HEADERS: Final = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _hop_by_hop(headers: Headers) -> frozenset[str]:
    named = {token.strip().lower() for value in headers.getlist("connection")
             for token in value.split(",")}
    return HOP_BY_HOP.union(named)


def forward_headers(headers: Headers) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop headers, names lower-cased, repeats kept.

    >>> forward_headers(Headers(raw=[(b"connection", b"close, x-secret"),
    ...                              (b"x-secret", b"1"), (b"set-cookie", b"a=1"),
    ...                              (b"set-cookie", b"b=2"), (b"te", b"trailers")]))
    [('set-cookie', 'a=1'), ('set-cookie', 'b=2')]
    """
    drop = _hop_by_hop(headers)
    return [(name, value) for name, value in headers.items() if name not in drop]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ProxyApp:
    """Forwards every request to ``upstream`` (``http://host:port``, optionally a path).

    ``X-Forwarded-For`` gets the socket peer appended (the hop this proxy vouches
    for), ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` describe the client's
    request, and ``Host`` names the upstream. Failing to reach the upstream answers
    502, an upstream too slow to answer 504, each with a JSON ``{"error"}`` body.
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: UpstreamTimeout | float = DEFAULT_TIMEOUT,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._prefix = parts.path.rstrip("/")
        if not isinstance(timeout, UpstreamTimeout):
            timeout = UpstreamTimeout(connect=timeout, read=timeout)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout.connect,
                                              sock_read=timeout.read)
        self._connections = connections
        # An aiohttp session belongs to the event loop it was made in, so it is made
        # on the first request rather than here.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                self._origin, timeout=self._timeout, auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS, trust_env=False,
                connector=aiohttp.TCPConnector(limit=self._connections),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _target(self, scope: Scope) -> str:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else quote(scope["path"])
        query = scope.get("query_string", b"").decode("latin-1")
        return f"{self._prefix}{path}" + (f"?{query}" if query else "")

    def _request_headers(self, scope: Scope, headers: Headers) -> list[tuple[str, str]]:
        forwarded = [(name, value) for name, value in forward_headers(headers)
                     if name not in ("host", "x-forwarded-for", "x-forwarded-proto",
                                     "x-forwarded-host")]
        chain = ", ".join(headers.getlist("x-forwarded-for"))
        peer = scope.get("client")
        if peer:
            chain = f"{chain}, {peer[0]}" if chain else peer[0]
        if chain:
            forwarded.append(("x-forwarded-for", chain))
        forwarded.append(("x-forwarded-proto", scope.get("scheme", "http")))
        if "host" in headers:
            forwarded.append(("x-forwarded-host", headers["host"]))
        forwarded.append(("host", self._host))
        return forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # websockets and lifespan are not forwarded
        headers = Headers(scope=scope)
        first = await receive()
        content: bytes | AsyncIterator[bytes] | None
        if first.get("more_body", False):
            content = _stream_body(first, receive)
        else:
            # A body that arrived whole keeps its length (and a GET stays without one).
            content = first.get("body", b"") or None
        try:
            response = await self._client().request(
                scope["method"], self._target(scope), data=content, allow_redirects=False,
                headers=self._request_headers(scope, headers))
        except (TimeoutError, aiohttp.ServerTimeoutError):
            await _error(504, f"the upstream {self.upstream} did not answer in time")(
                scope, receive, send)
            return
        except aiohttp.ClientError as exc:
            logger.warning("upstream %s unreachable: %s", self.upstream, exc)
            await _error(502, f"the upstream {self.upstream} could not be reached")(
                scope, receive, send)
            return
        try:
            response_headers = Headers(raw=list(response.raw_headers))
            await send({
                "type": "http.response.start",
                "status": response.status,
                "headers": [(name.encode("latin-1"), value.encode("latin-1"))
                            for name, value in forward_headers(response_headers)],
            })
            # Raw bytes: the upstream's Content-Encoding and Content-Length still hold.
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()


async def _stream_body(first: Message, receive: Receive) -> AsyncIterator[bytes]:
    message = first
    while True:
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
        message = await receive()
        if message["type"] != "http.request":
            # The client went away mid-body: abort rather than let the upstream take a
            # truncated body for a whole one.
            raise ClientDisconnect
