"""A stand-in airline backend with the contract's four routes, for ``make run``.

It is deliberately naive — it trusts every request — so that what riskgate in
front of it allows, challenges and blocks is easy to see.
"""

from __future__ import annotations

import itertools

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: The one password the demo accepts, so failed logins are easy to produce.
DEMO_PASSWORD = "correct-horse"  # noqa: S105 - a demo, published on purpose


async def _payload(request: Request) -> dict[str, object]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return dict(await request.form())


def demo_upstream() -> Starlette:
    """The demo backend: register, login, redeem a promotion, hold seats."""
    booking_numbers = itertools.count(1)

    async def register(request: Request) -> Response:
        payload = await _payload(request)
        return JSONResponse({"registered": bool(payload.get("email"))}, status_code=201)

    async def login(request: Request) -> Response:
        payload = await _payload(request)
        if payload.get("password") != DEMO_PASSWORD:
            return JSONResponse({"error": "wrong username or password"}, status_code=401)
        return JSONResponse({"token": "demo-session"})

    async def redeem(request: Request) -> Response:
        return JSONResponse({"redeemed": request.path_params["code"]})

    async def book(request: Request) -> Response:
        payload = await _payload(request)
        return JSONResponse(
            {"booking": f"PNR{next(booking_numbers):05d}", "flight": payload.get("flight"),
             "seats": payload.get("seats"), "status": "held, unpaid"},
            status_code=201,
        )

    async def home(_: Request) -> Response:
        return JSONResponse({"airline": "riskgate demo air"})

    return Starlette(routes=[
        Route("/", home),
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/promotions/{code}/redeem", redeem, methods=["POST"]),
        Route("/api/bookings", book, methods=["POST"]),
    ])
