"""nginx ``auth_request`` mode: ``GET /v1/auth`` and the challenge page nginx serves on a 401.

nginx sees the original request only through the headers it sets on the subrequest
(``X-Original-URI``, ``X-Original-Method``, ``X-Real-IP``), so these endpoints rebuild
a :class:`RequestView` from them and score exactly as the other modes do.
"""

from __future__ import annotations

import contextlib
import re
from typing import Final
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from riskgate.event.ip import parse_ip
from riskgate.event.types import new_request_id
from riskgate.http.gateway import REQUEST_ID_HEADER, SCORE_HEADER, Gateway
from riskgate.http.request import RequestView, ValueReader, peer_host

AUTH_PATH: Final = "/v1/auth"
AUTH_CHALLENGE_PATH: Final = "/v1/auth/challenge"
_REQUEST_ID = re.compile(r"[0-9a-f]{8,64}")


def original_view(gateway: Gateway, request: Request) -> RequestView:
    """The original request of an nginx subrequest, from the headers nginx sets.

    ``X-Real-IP`` counts only from a trusted peer, as X-Forwarded-For does.
    """
    peer = gateway.proxies.peer(peer_host(request))
    client = gateway.client_ip(peer_host(request), request.headers)
    real_ip = request.headers.get("x-real-ip")
    if real_ip and gateway.proxies.trusts(peer):
        with contextlib.suppress(ValueError):
            client = parse_ip(real_ip.strip())
    uri = urlsplit(request.headers.get("x-original-uri", "/"))
    return RequestView(
        method=request.headers.get("x-original-method", "GET").upper(),
        path=unquote(uri.path) or "/",
        query_string=uri.query,
        headers=request.headers,
        client_ip=client,
    )


async def auth(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/auth`` for nginx ``auth_request``: 200 allow (or unscored),
    401 challenge, 403 block. Body sources yield nothing: nginx sends no body."""
    view = original_view(gateway, request)
    match = gateway.routes.match_view(view)
    if match is None:
        if await gateway.refuses_unscored(view, gateway.unscored_device(view)):
            return gateway.refusal(new_request_id(), "")
        return Response(status_code=200)
    return gateway.subrequest_answer(await gateway.score(match, view))


async def auth_challenge(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/auth/challenge``: the challenge page nginx serves on a 401.

    nginx passes the score and request id of the decision it was given; they are
    believed only from a trusted peer (they only tune the difficulty).
    """
    view = original_view(gateway, request)
    trusted = gateway.proxies.trusts(gateway.proxies.peer(peer_host(request)))
    score = 0.0
    request_id = request.headers.get(REQUEST_ID_HEADER, "")
    if trusted:
        with contextlib.suppress(ValueError):
            score = float(request.headers.get(SCORE_HEADER, "0"))
    if not trusted or not _REQUEST_ID.fullmatch(request_id):
        request_id = new_request_id()
    binding = gateway.binding(view, ValueReader(view, {}))
    match = gateway.routes.match_view(view)
    # No protected route (the challenge page asked for directly): the stricter choice.
    fail_closed = match is None or match.route.challenge_closed
    return gateway.challenge(score, binding, request_id, request.headers.get("accept", ""),
                             view.method, fail_closed=fail_closed)
