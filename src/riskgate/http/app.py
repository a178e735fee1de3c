"""The HTTP face of riskgate: decision API, feedback, gateway, health and metrics on one port.

The handlers only translate: bytes to a :class:`~riskgate.event.types.RiskEvent`, an
engine answer to JSON, and every :class:`~riskgate.errors.InputError` to the
contract's ``{"error", "field"}`` body. What they serve is built once in the lifespan
by the composition root, :class:`~riskgate.service.Service`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from riskgate.config import Config, load_config
from riskgate.decision.challenge import VERIFY_PATH
from riskgate.errors import InputError, StoreError
from riskgate.http import nginx
from riskgate.http.admin import admin_routes, authorized, unauthorized
from riskgate.http.decide import FEEDBACK_PATH, DecisionAPI, feedback
from riskgate.http.gateway import Gateway
from riskgate.http.internal import InternalOnly
from riskgate.http.middleware import RiskGateMiddleware
from riskgate.http.openapi import document
from riskgate.http.proxy import DEFAULT_TIMEOUT, ProxyApp
from riskgate.observability import metrics
from riskgate.service import HostEffects, Service

#: Names the config file for ``create_app_from_env``, so each uvicorn worker can
#: build its own app (and its own store connections) after the fork.
CONFIG_ENV: Final = "RISKGATE_CONFIG"


def _input_error(_: Request, exc: Exception) -> Response:
    if not isinstance(exc, InputError):  # registered for InputError only
        raise exc
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)


class Served:
    """What the HTTP app serves once started: the service, its gateway, and the proxy."""

    def __init__(self, service: Service, upstream_timeout: float | None) -> None:
        config = service.config
        self.service = service
        self.config = config
        self.engine = service.engine
        self.gateway = Gateway(config, service.engine, service.challenges, service.implicit)
        self._admin_tokens = [token.encode() for token in config.admin_tokens]
        # Reverse-proxy mode: the same middleware a Starlette app would use, around
        # the upstream.
        self.proxy: ProxyApp | None = None
        self.proxied: RiskGateMiddleware | None = None
        if config.upstream is not None:
            self.proxy = ProxyApp(config.upstream, timeout=DEFAULT_TIMEOUT
                                  if upstream_timeout is None else upstream_timeout)
            self.proxied = RiskGateMiddleware(self.proxy, config=config, engine=service.engine,
                                              challenges=service.challenges,
                                              implicit=service.implicit)

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.aclose()
        await self.service.close()

    async def reload_rules(self, request: Request) -> Response:
        if not authorized(request, self._admin_tokens):
            return unauthorized()
        result = await self.service.reloader.reload()
        if not result.ok:
            return JSONResponse({"error": "the rule set was refused; the previous set keeps "
                                          "serving", "version": result.version,
                                 "problems": list(result.problems)}, status_code=422)
        return JSONResponse({"version": result.version})

    async def feedback(self, request: Request) -> Response:
        return await feedback(self.service, request)

    async def auth(self, request: Request) -> Response:
        return await nginx.auth(self.gateway, request)

    async def auth_challenge(self, request: Request) -> Response:
        return await nginx.auth_challenge(self.gateway, request)

    async def verify(self, request: Request) -> Response:
        return await self.gateway.verify(request)

    async def ready(self, _: Request) -> Response:
        try:
            await self.engine.store.health()
        except StoreError as exc:
            return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        return JSONResponse({"ready": True, "rules_version": self.engine.ruleset.version,
                             "rules_refused": list(self.service.reloader.refused),
                             "warnings": list(self.service.warnings)})


async def _healthz(_: Request) -> Response:
    return JSONResponse({"alive": True})


async def _metrics(_: Request) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _starting() -> Response:
    return JSONResponse({"error": "riskgate is starting"}, status_code=503)


class _OwnRoutesFirst:
    """Hands requests that none of riskgate's own routes takes straight to the upstream's.

    Starlette's router ends there too (the upstream is mounted at ``/`` after riskgate's
    routes), but through Starlette's error and exception middleware, which wrap every
    ``send`` of the response: Starlette's share of the reverse proxy's CPU went from
    8 % to 4 % without them (bench/profile.py --proxy), and the gateway's middleware
    answers its requests' errors itself. Only a route's full match is riskgate's, as
    in Starlette's router: ``POST /healthz`` goes upstream.
    """

    def __init__(self, app: Starlette, upstream: ASGIApp) -> None:
        self.app = app
        self.upstream = upstream
        self._own = [route for route in app.routes if not isinstance(route, Mount)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(
                route.matches(scope)[0] is Match.FULL for route in self._own):
            await self.app(scope, receive, send)
        else:
            await self.upstream(scope, receive, send)


def create_app(config: Config, *, upstream_timeout: float | None = None) -> ASGIApp:
    """The riskgate ASGI app for ``config``; the service is built when the app starts.

    With ``upstream`` set, every request that none of riskgate's own routes takes is
    forwarded to it through the gateway (CONTRACT §3), and riskgate's internal routes
    answer only internal peers (:mod:`riskgate.http.internal`). ``upstream_timeout`` (seconds)
    overrides the proxy's default timeouts.
    """
    served: Served | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal served
        service = Service(config)
        await service.start(HostEffects.owning_process(config))
        served = Served(service, upstream_timeout)
        try:
            yield
        finally:
            await served.close()

    def bound(handler: Callable[[Served, Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        # Handlers resolve what is served at call time: it only exists once the app started.
        async def endpoint(request: Request) -> Response:
            return _starting() if served is None else await handler(served, request)

        return endpoint

    async def proxied(scope: Scope, receive: Receive, send: Send) -> None:
        if served is None or served.proxied is None:
            await _starting()(scope, receive, send)
            return
        await served.proxied(scope, receive, send)

    # Serialized once: the document only changes with the code and the config.
    openapi = orjson.dumps(document(config.max_body_bytes))

    async def openapi_json(_: Request) -> Response:
        return Response(openapi, media_type="application/json")

    # Mounted last, so riskgate's own routes answer first and everything else is
    # the upstream's.
    upstream = [Mount("/", app=proxied)] if config.upstream is not None else []
    app = Starlette(
        routes=[
            Route(nginx.AUTH_PATH, bound(Served.auth), methods=["GET"]),
            Route(nginx.AUTH_CHALLENGE_PATH, bound(Served.auth_challenge), methods=["GET"]),
            Route(VERIFY_PATH, bound(Served.verify), methods=["POST"]),
            Route(FEEDBACK_PATH, bound(Served.feedback), methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", bound(Served.ready), methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/admin/rules/reload", bound(Served.reload_rules), methods=["POST"]),
            *admin_routes(lambda: None if served is None else served.service),
            *upstream,
        ],
        exception_handlers={InputError: _input_error},
        lifespan=lifespan,
    )
    routed: ASGIApp = _OwnRoutesFirst(app, proxied) if upstream else app
    api = DecisionAPI(routed, lambda: None if served is None else served.service)
    if config.upstream is None:
        # Decision-API-only: the listener is the frontends' own, internal by deployment.
        return api
    return InternalOnly(api, (*config.trusted_proxies, *config.internal_networks))


def create_app_from_env() -> ASGIApp:
    """uvicorn factory: the app for the config file named by ``RISKGATE_CONFIG``."""
    return create_app(load_config(os.environ[CONFIG_ENV]))
