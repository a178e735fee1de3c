"""The decision API (CONTRACT §2): ``POST /v1/decide`` on raw ASGI, and ``POST /v1/feedback``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from riskgate.config import fail_action
from riskgate.errors import InputError, StoreError
from riskgate.event.api import event_from_api
from riskgate.event.body import parse_json_object, read_body, require_json
from riskgate.event.types import OUTCOMES, new_request_id
from riskgate.service import Service

DECIDE_PATH: Final = "/v1/decide"
FEEDBACK_PATH: Final = "/v1/feedback"
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


async def decide(service: Service, body: bytes) -> bytes:
    """A decision API request body in, the contract's JSON answer out."""
    event = event_from_api(body, new_request_id(), time.time())
    decision = await service.engine.decide(event,
                                           fail_mode=fail_action(service.config.fail_mode))
    verdict = decision.verdict
    return orjson.dumps(
        {
            "request_id": decision.request_id,
            "decision": verdict.decision,
            "score": verdict.score,
            "reasons": [
                {"rule": m.rule, "score": m.score, "action": m.action} for m in verdict.reasons
            ],
            "degraded": decision.degraded,
        }
    )


async def feedback(service: Service, request: Request) -> Response:
    """``POST /v1/feedback``: an outcome for a recent decision; 204, 404, 409 or 503."""
    require_json(request.headers.get("content-type"))
    body = await read_body(request.receive, request.headers.get("content-length"),
                           service.config.max_body_bytes)
    payload = parse_json_object(body)
    request_id, outcome = payload.get("request_id"), payload.get("outcome")
    if not isinstance(request_id, str) or not request_id:
        raise InputError("`request_id` is required: the id /v1/decide answered", "request_id")
    if outcome not in OUTCOMES:
        raise InputError(f"`outcome` must be one of {', '.join(OUTCOMES)}", "outcome")
    try:
        result = await service.engine.feedback(request_id, outcome, time.time())
    except StoreError as exc:
        return JSONResponse({"error": f"the store is unavailable: {exc}"}, status_code=503)
    if result == "unknown":
        return JSONResponse(
            {"error": "unknown request_id: no recent decision has this id",
             "field": "request_id"},
            status_code=404,
        )
    if result == "answered":
        return JSONResponse(
            {"error": "this request_id already took an outcome; each decision takes one",
             "field": "request_id"},
            status_code=409,
        )
    return Response(status_code=204)


class DecisionAPI:
    """Serves ``POST /v1/decide`` in front of the Starlette app, every other request behind.

    The decision API is the hot path: Starlette's routing, request and response objects
    and exception middleware cost as much Python time per request as scoring does, so
    this one endpoint speaks ASGI directly. Its answers are the contract's, errors
    included; everything else (feedback, health, admin, the proxy) goes to ``app``.
    """

    def __init__(self, app: ASGIApp, service: Callable[[], Service | None]) -> None:
        self.app = app
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DECIDE_PATH:
            await self.app(scope, receive, send)
            return
        service = self._service()
        content_length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        status = 200
        headers = _JSON_HEADERS
        try:
            if scope["method"] != "POST":
                status, headers = 405, [*_JSON_HEADERS, (b"allow", b"POST")]
                answer = orjson.dumps({"error": "POST a JSON body to /v1/decide",
                                       "field": None})
            elif service is None:
                status, answer = 503, orjson.dumps({"error": "riskgate is starting"})
            else:
                require_json(content_type)
                body = await read_body(receive, content_length, service.config.max_body_bytes)
                answer = await decide(service, body)
        except InputError as error:
            status = error.status
            answer = orjson.dumps({"error": error.message, "field": error.field})
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})
