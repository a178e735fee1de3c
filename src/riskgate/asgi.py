"""The HTTP face of riskgate: decision API, feedback, health and metrics on one port.

The handlers only translate: bytes to a :class:`RiskEvent`, an engine answer to
JSON, and every :class:`InputError` to the contract's ``{"error", "field"}`` body.
Everything the service needs is built once in the lifespan from the typed config.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from riskgate import metrics
from riskgate.admin import admin_routes, authorized, unauthorized
from riskgate.challenge import VERIFY_PATH, Challenges
from riskgate.config import Config, load_config
from riskgate.decisionlog import DecisionLog
from riskgate.engine import Engine
from riskgate.errors import InputError, StoreError
from riskgate.event import (
    OUTCOMES,
    event_from_api,
    new_request_id,
    parse_json_object,
    read_body,
)
from riskgate.gateway import AUTH_CHALLENGE_PATH, AUTH_PATH, Gateway, RiskGateMiddleware
from riskgate.proxy import DEFAULT_TIMEOUT, ProxyApp
from riskgate.reload import RuleReloader
from riskgate.rules import RuleSet, load_ruleset
from riskgate.runtime_lists import RuntimeLists
from riskgate.signals import Keyer, SignalExtractor
from riskgate.store import open_store

logger = logging.getLogger(__name__)

#: Names the config file for ``create_app_from_env``, so each uvicorn worker can
#: build its own app (and its own store connections) after the fork.
CONFIG_ENV = "RISKGATE_CONFIG"


def _input_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)


class Service:
    """The engine plus what it was built from; one per process (per uvicorn worker)."""

    def __init__(self, config: Config, *, upstream_timeout: float | None = None) -> None:
        """Load rules, open the store and the log; raise on a config that cannot serve.

        ``upstream_timeout`` (seconds) overrides the proxy's default timeouts.
        """
        self.config = config
        ruleset = load_ruleset(config.rules)
        store = open_store(config.store, max_entries=config.memory_store_max_entries)
        keyer = Keyer(config.secret.encode())
        signals, warnings = SignalExtractor.from_config(config, keyer)
        for warning in warnings:
            logger.warning("%s", warning)
        self.log = DecisionLog(config.decision_log) if config.decision_log else None
        self.engine = Engine(ruleset, store, signals, keyer, self.log, config.feedback_ttl,
                             runtime_lists=RuntimeLists(store, keyer))
        self.challenges = Challenges(config.secret.encode(), store)
        self.gateway = Gateway(config, self.engine, self.challenges)
        # Reverse-proxy mode: the same middleware a Starlette app would use, around
        # the upstream.
        self.proxy: ProxyApp | None = None
        self.proxied: RiskGateMiddleware | None = None
        if config.upstream is not None:
            self.proxy = ProxyApp(config.upstream, timeout=DEFAULT_TIMEOUT
                                  if upstream_timeout is None else upstream_timeout)
            self.proxied = RiskGateMiddleware(self.proxy, config=config, engine=self.engine,
                                              challenges=self.challenges)
        self.reloader = RuleReloader(config.rules, ruleset, self._install)
        self._admin_tokens = [token.encode() for token in config.admin_tokens]
        self._watcher: asyncio.Task[None] | None = None

    def _install(self, ruleset: RuleSet) -> None:
        self.engine.ruleset = ruleset

    async def start(self) -> None:
        # Everything built so far (rule set, parsers, lists) lives as long as the process:
        # moving it out of the collector's sight makes each young-generation collection,
        # which a busy gateway triggers every few requests, scan only request garbage.
        gc.freeze()
        loop = asyncio.get_running_loop()
        self.reloader.on_sighup(loop)
        if self.config.watch_rules:
            self._watcher = loop.create_task(self.reloader.watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.proxy is not None:
            await self.proxy.aclose()
        await self.engine.store.close()
        if self.log is not None:
            self.log.close()

    async def reload_rules(self, request: Request) -> Response:
        if not authorized(request, self._admin_tokens):
            return unauthorized()
        result = await self.reloader.reload()
        if not result.ok:
            return JSONResponse({"error": "the rule set was refused; the previous set keeps "
                                          "serving", "version": result.version,
                                 "problems": list(result.problems)}, status_code=422)
        return JSONResponse({"version": result.version})

    async def decide(self, body: bytes) -> bytes:
        """The decision API: a request body in, the contract's JSON answer out."""
        event = event_from_api(body, new_request_id(), time.time())
        decision = await self.engine.decide(event)
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

    async def feedback(self, request: Request) -> Response:
        body = await read_body(request.receive, request.headers.get("content-length"),
                               self.config.max_body_bytes)
        payload = parse_json_object(body)
        request_id, outcome = payload.get("request_id"), payload.get("outcome")
        if not isinstance(request_id, str) or not request_id:
            raise InputError("`request_id` is required: the id /v1/decide answered", "request_id")
        if outcome not in OUTCOMES:
            raise InputError(f"`outcome` must be one of {', '.join(OUTCOMES)}", "outcome")
        try:
            found = await self.engine.feedback(request_id, outcome, time.time())
        except StoreError as exc:
            return JSONResponse({"error": f"the store is unavailable: {exc}"}, status_code=503)
        if not found:
            return JSONResponse(
                {"error": "unknown request_id: no recent decision has this id",
                 "field": "request_id"},
                status_code=404,
            )
        return Response(status_code=204)

    async def auth(self, request: Request) -> Response:
        return await self.gateway.auth(request)

    async def auth_challenge(self, request: Request) -> Response:
        return await self.gateway.auth_challenge(request)

    async def verify(self, request: Request) -> Response:
        return await self.gateway.verify(request)

    async def ready(self, _: Request) -> Response:
        try:
            await self.engine.store.health()
        except StoreError as exc:
            return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        return JSONResponse({"ready": True, "rules_version": self.engine.ruleset.version,
                             "rules_refused": list(self.reloader.refused)})


async def _healthz(_: Request) -> Response:
    return JSONResponse({"alive": True})


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


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
        if scope["type"] != "http" or scope["path"] != "/v1/decide":
            await self.app(scope, receive, send)
            return
        service = self._service()
        content_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value.decode("latin-1")
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
                body = await read_body(receive, content_length, service.config.max_body_bytes)
                answer = await service.decide(body)
        except InputError as error:
            status = error.status
            answer = orjson.dumps({"error": error.message, "field": error.field})
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})


def create_app(config: Config, *, upstream_timeout: float | None = None) -> ASGIApp:
    """The riskgate ASGI app for ``config``; the engine is built when the app starts.

    With ``upstream`` set, every request that none of riskgate's own routes takes is
    forwarded to it through the gateway (CONTRACT §3).
    """
    service: Service | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal service
        service = Service(config, upstream_timeout=upstream_timeout)
        await service.start()
        try:
            yield
        finally:
            await service.close()

    def bound(name: str) -> Any:
        # Handlers resolve the service at call time: it only exists once the app started.
        async def endpoint(request: Request) -> Response:
            if service is None:
                return JSONResponse({"error": "riskgate is starting"}, status_code=503)
            handler = getattr(service, name)
            response: Response = await handler(request)
            return response

        return endpoint

    async def proxied(scope: Scope, receive: Receive, send: Send) -> None:
        if service is None or service.proxied is None:
            await JSONResponse({"error": "riskgate is starting"}, status_code=503)(
                scope, receive, send)
            return
        await service.proxied(scope, receive, send)

    # Mounted last, so riskgate's own routes answer first and everything else is
    # the upstream's.
    upstream = [Mount("/", app=proxied)] if config.upstream is not None else []
    app = Starlette(
        routes=[
            Route(AUTH_PATH, bound("auth"), methods=["GET"]),
            Route(AUTH_CHALLENGE_PATH, bound("auth_challenge"), methods=["GET"]),
            Route(VERIFY_PATH, bound("verify"), methods=["POST"]),
            Route("/v1/feedback", bound("feedback"), methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", bound("ready"), methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            Route("/admin/rules/reload", bound("reload_rules"), methods=["POST"]),
            *admin_routes(lambda: service),
            *upstream,
        ],
        exception_handlers={InputError: _input_error},
        lifespan=lifespan,
    )
    return DecisionAPI(app, lambda: service)


def create_app_from_env() -> ASGIApp:
    """uvicorn factory: the app for the config file named by ``RISKGATE_CONFIG``."""
    return create_app(load_config(os.environ[CONFIG_ENV]))

