"""The upstream as an ASGI app: the reverse proxy's forwarding half.

:class:`ProxyApp` streams each request to the upstream over a pooled httpx client
and streams the answer back; it knows nothing of risk. The reverse-proxy mode is
``RiskGateMiddleware(ProxyApp(upstream), ...)``: scoring stays in the middleware, so
the proxy and the middleware mode cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import quote, urlsplit

import httpx
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

#: Pool size: enough keep-alive connections for a busy worker, bounded so a slow
#: upstream makes requests queue (and time out) instead of opening sockets without end.
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=512, max_keepalive_connections=128,
                                     keepalive_expiry=30.0)
#: Connecting should be quick on a local network; answering may take a while.
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)


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
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream.rstrip("/")
        self._host = parts.netloc
        self._prefix = parts.path.rstrip("/")
        # No retries and no redirects: the client sees exactly what the upstream said.
        self._client = httpx.AsyncClient(
            base_url=f"{parts.scheme}://{parts.netloc}", timeout=timeout, limits=limits,
            follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

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
        content: bytes | AsyncIterator[bytes]
        if first.get("more_body", False):
            content = _stream_body(first, receive)
        else:
            # A body that arrived whole keeps its length (and a GET stays unchunked).
            content = first.get("body", b"")
        request = self._client.build_request(
            scope["method"], self._target(scope), headers=self._request_headers(scope, headers),
            content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            await _error(504, f"the upstream {self.upstream} did not answer in time")(
                scope, receive, send)
            return
        except httpx.TransportError as exc:
            logger.warning("upstream %s unreachable: %s", self.upstream, exc)
            await _error(502, f"the upstream {self.upstream} could not be reached")(
                scope, receive, send)
            return
        try:
            response_headers = Headers(raw=response.headers.raw)
            await send({
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(name.encode("latin-1"), value.encode("latin-1"))
                            for name, value in forward_headers(response_headers)],
            })
            # Raw bytes: the upstream's Content-Encoding and Content-Length still hold.
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


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
