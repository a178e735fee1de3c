"""Admin endpoints: the bearer-token check, and the runtime lists API.

``GET /admin/lists`` lists the live entries, ``POST /admin/lists`` adds one
(``{"kind", "value", "action", "ttl", "reason"}`` → ``201`` with the entry) and
``DELETE /admin/lists/{id}`` removes one (``204``, or ``404``). Every admin endpoint,
``/admin/rules/reload`` included, needs ``Authorization: Bearer <token>`` with a token
from ``admin_tokens``. Device and account values are keyed before they are stored, so
the listing shows keyed ids and no raw id is ever logged or echoed.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from riskgate.config import Config
from riskgate.engine.core import Engine
from riskgate.errors import InputError, StoreError
from riskgate.event.body import parse_json_object
from riskgate.rules.runtime_lists import RuntimeLists, parse_ttl


class AdminTarget(Protocol):
    """What the admin endpoints use of a running service (:class:`riskgate.service.Service`)."""

    @property
    def config(self) -> Config: ...

    @property
    def engine(self) -> Engine: ...


def authorized(request: Request, tokens: Iterable[bytes]) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer`` with one of ``tokens``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    # Compare with every token, in constant time, so timing reveals neither
    # a token's content nor which one matched.
    matches = [hmac.compare_digest(given, known) for known in tokens]
    return any(matches)


def unauthorized() -> Response:
    return JSONResponse(
        {"error": "admin endpoints need `Authorization: Bearer <token>` with a token "
                  "from `admin_tokens` in the configuration"},
        status_code=401, headers={"www-authenticate": "Bearer"},
    )


def _text(payload: Mapping[str, Any], field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str):
        raise InputError(f"`{field}` is required and must be a string", field)
    return value


async def _list(lists: RuntimeLists, _: Request) -> Response:
    return JSONResponse({"entries": [e.to_json() for e in await lists.entries(time.time())]})


async def _add(lists: RuntimeLists, request: Request) -> Response:
    # No size limit of its own: only holders of an admin token get this far.
    payload = parse_json_object(await request.body())
    entry = await lists.add(_text(payload, "kind"), _text(payload, "value"),
                            _text(payload, "action"), parse_ttl(payload.get("ttl")),
                            _text(payload, "reason"), time.time())
    return JSONResponse(entry.to_json(), status_code=201)


async def _remove(lists: RuntimeLists, request: Request) -> Response:
    if await lists.remove(request.path_params["entry_id"], time.time()):
        return Response(status_code=204)
    return JSONResponse({"error": "no live runtime list entry has this id; "
                                  "GET /admin/lists shows them", "field": "id"}, status_code=404)


Handler = Callable[[RuntimeLists, Request], Awaitable[Response]]


def admin_routes(service: Callable[[], AdminTarget | None]) -> list[BaseRoute]:
    """The runtime lists routes; ``service`` answers the running service, or None
    while the app starts (handlers resolve it per request)."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            target = service()
            if target is None:
                return JSONResponse({"error": "riskgate is starting"}, status_code=503)
            if not authorized(request, [t.encode() for t in target.config.admin_tokens]):
                return unauthorized()
            lists = target.engine.runtime_lists
            if lists is None:
                return JSONResponse({"error": "this service runs without runtime lists"},
                                    status_code=404)
            try:
                return await handler(lists, request)
            except StoreError as exc:
                return JSONResponse({"error": f"the store is unavailable: {exc}"},
                                    status_code=503)

        return guarded

    return [
        Route("/admin/lists", endpoint(_list), methods=["GET"]),
        Route("/admin/lists", endpoint(_add), methods=["POST"]),
        Route("/admin/lists/{entry_id}", endpoint(_remove), methods=["DELETE"]),
    ]
