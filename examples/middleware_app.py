"""An airline's own Starlette app protected by riskgate as ASGI middleware.

    RISKGATE_SECRET=$(openssl rand -hex 16) uvicorn examples.middleware_app:app

riskgate reads the same configuration file as `riskgate serve` (without `upstream`:
the wrapped app is the upstream) and scores the routes it names; every other route
passes straight through. FastAPI apps are wrapped the same way
(`app.add_middleware(RiskGateMiddleware, config=config)`).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from riskgate.config import load_config
from riskgate.http import RiskGateMiddleware


async def login(request: Request) -> JSONResponse:
    form = await request.json()
    if form.get("password") != "correct-horse":
        # A status in the route's failure_statuses: riskgate counts a failed login.
        return JSONResponse({"error": "wrong username or password"}, status_code=401)
    return JSONResponse({"token": "session"})


async def book(request: Request) -> JSONResponse:
    order = await request.json()
    return JSONResponse({"booking": "PNR00001", "flight": order.get("flight")}, status_code=201)


config = load_config(Path(__file__).with_name("middleware.yaml"))
app = Starlette(
    routes=[Route("/api/login", login, methods=["POST"]),
            Route("/api/bookings", book, methods=["POST"])],
    middleware=[Middleware(RiskGateMiddleware, config=config)],
)
