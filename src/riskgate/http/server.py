"""The HTTP server's own bound on request heads, before any riskgate code runs.

uvicorn's default parser (httptools) buffers a request's headers without limit, and
uvicorn's size option (``h11_max_incomplete_event_size``) applies only to its slower
h11 parser. An attacker sending megabytes of headers would then make every later
stage (the UA parser, header checks, caches) chew on them while other requests wait.
This protocol keeps httptools' speed, which is why it subclasses uvicorn's protocol
rather than switching to h11, and answers ``431`` to a head past the bound:

- while a head is still arriving, once its bytes pass the bound, the connection is
  answered and closed, so nothing buffers without limit;
- a complete head over the bound (it came in one read) is answered by a small app in
  place of riskgate's, so no riskgate code sees it.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Final

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES: Final = 32768
#: How ``riskgate serve`` tells the protocol its bound: uvicorn builds the protocol
#: itself, in each worker process, from a class it must be able to import by name.
MAX_HEADER_BYTES_ENV: Final = "RISKGATE_MAX_HEADER_BYTES"
_STATUS: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def _message(limit: int) -> bytes:
    return f"request headers larger than {limit} bytes; send fewer or shorter headers".encode()


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the bytes of each request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = _configured_bound()
        self._head_bytes = 0
        # A new connection's first bytes are a head: count them from the start.
        self._in_head = True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size <= self.max_header_bytes:
            super().on_headers_complete()
            return
        # uvicorn starts the request's cycle with ``self.app``: this one request gets
        # the refusal instead, with uvicorn's own response machinery.
        riskgate, self.app = self.app, functools.partial(_refuse, self.max_header_bytes)
        try:
            super().on_headers_complete()
        finally:
            self.app = riskgate

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Only reads that leave a head unfinished count here, so a body arriving in the
        # same read as the end of its head is never taken for header bytes.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            message = _message(self.max_header_bytes)
            self.transport.write(
                _STATUS + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                + b"content-length: %d\r\n\r\n" % len(message) + message)
            self.transport.close()


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    message = _message(limit)
    await send({"type": "http.response.start", "status": 431,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", b"%d" % len(message)),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": message})


@functools.cache
def _configured_bound() -> int:
    return int(os.environ.get(MAX_HEADER_BYTES_ENV, DEFAULT_MAX_HEADER_BYTES))
