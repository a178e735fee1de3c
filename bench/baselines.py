"""The peers riskgate is measured against in ``make bench``.

All answer ``POST /v1/decide`` with a body of the same shape and size as riskgate's
decision, so the only difference between the servers is the work done per request:

- ``bare_app``: parse the JSON body, answer. The ceiling for Starlette on uvicorn.
- ``limits_app``: the same, plus one sliding-window hit per client IP with the `limits`
  library on Redis, the usual "rate limit by IP" a site would deploy instead of riskgate.
- ``floor_app``: the same as bare, plus the one thing every riskgate decision must do
  besides: one script call to Redis (one counter per IP) with the client riskgate uses.
  Not a competitor but a floor: no decision that keeps its one round trip can cost less,
  so what riskgate costs above it is what signals, rules, the model and the log cost.

Started by bench/run.py as ``uvicorn baselines:bare_app --app-dir bench ...``. The
limits app reads its Redis URL from ``BENCH_LIMITS_STORAGE`` and the Redis client the
library uses (``redispy`` or ``coredis``) from ``BENCH_LIMITS_CLIENT``.

``upstream_app`` is something else: the trivial site behind ``riskgate serve`` in the
proxy measurement (``--servers proxy``), measured straight and through the gateway, and
through ``forward_app``: riskgate's own forwarding half (``ProxyApp``) alone, without a
decision, reading its upstream from ``BENCH_UPSTREAM``. That is the proxy's floor.

Each of them freezes its start-up heap once imported, as ``riskgate serve`` freezes its
own (``service.HostEffects.freeze_gc``), so every server in a run pays the collector alike.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import AsyncIterator

from limits import RateLimitItem, parse
from limits.aio import strategies
from limits.storage import storage_from_string
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from riskgate.http.proxy import ProxyApp
from riskgate.store.pages import pack
from riskgate.store.redis import Channel, connection_pool

# So high that no IP of the workload reaches it: a refused hit takes a different path in
# the library, and the peer must do the same work on every request.
LIMIT: RateLimitItem = parse("1000000/minute")

# Prefer the sliding-window counter (limits >= 3.13); older versions only have the
# moving window, which is the closest equivalent.
LIMITER_CLASS = getattr(strategies, "SlidingWindowCounterRateLimiter",
                        strategies.MovingWindowRateLimiter)


def _answer(decision: str) -> Response:
    # The same keys, types and (within a byte or two) size as riskgate's answer.
    return JSONResponse({"request_id": os.urandom(12).hex(), "decision": decision,
                         "score": 0.0, "reasons": [], "degraded": False})


def _client_ip(body: bytes) -> str:
    payload = json.loads(body)
    return str(payload["ip"])


# Answers given, for the harness to count decisions exactly (wrk misses those in flight
# when it stops). Served in riskgate's Prometheus text format, so one parser reads both.
_answered = 0


async def _metrics(_: Request) -> Response:
    return PlainTextResponse(f'riskgate_decisions_total{{event="any"}} {_answered}\n')


async def _bare(request: Request) -> Response:
    global _answered
    _client_ip(await request.body())
    _answered += 1
    return _answer("allow")


bare_app = Starlette(routes=[Route("/v1/decide", _bare, methods=["POST"]),
                             Route("/metrics", _metrics)])


_limiter: strategies.RateLimiter | None = None


@contextlib.asynccontextmanager
async def _limits_lifespan(_: Starlette) -> AsyncIterator[None]:
    # The storage's Redis client binds to the running event loop, so build it here.
    global _limiter
    url = os.environ.get("BENCH_LIMITS_STORAGE", "async+redis://127.0.0.1:6379/1")
    # redis-py (with hiredis) is the faster of the library's clients here, and the one
    # riskgate uses: the peer gets its best configuration.
    implementation = os.environ.get("BENCH_LIMITS_CLIENT", "redispy")
    _limiter = LIMITER_CLASS(storage_from_string(url, implementation=implementation))
    yield


async def _limited(request: Request) -> Response:
    global _answered
    ip = _client_ip(await request.body())
    assert _limiter is not None, "the lifespan builds the limiter before requests arrive"
    allowed = await _limiter.hit(LIMIT, ip)
    _answered += 1
    return _answer("allow" if allowed else "block")


limits_app = Starlette(routes=[Route("/v1/decide", _limited, methods=["POST"]),
                               Route("/metrics", _metrics)],
                       lifespan=_limits_lifespan)


_channel: Channel | None = None
_count_sha = ""

# One counter per address that expires: the least a decision's script does. The real one
# updates about twenty counters of four identities; this measures the call, not the work.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


@contextlib.asynccontextmanager
async def _floor_lifespan(_: Starlette) -> AsyncIterator[None]:
    global _channel, _count_sha
    # riskgate's own way to Redis: the commands of one event-loop tick written with one
    # send on a few redis-py connections (store/redis.py's Channel). A plain redis-py
    # EVALSHA per request took 1.7 times the CPU here (206 against 118 µs a request in
    # one run), which would have flattered riskgate.
    url = os.environ["BENCH_FLOOR_STORAGE"]
    _channel = Channel(connection_pool(url, timeout=1.0), url, timeout=1.0)
    loaded = await _channel.submit(pack(("SCRIPT", "LOAD", _COUNT)))
    _count_sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
    yield
    await _channel.close()


async def _floor(request: Request) -> Response:
    global _answered
    ip = _client_ip(await request.body())
    assert _channel is not None, "the lifespan opens the channel before requests arrive"
    reply = await _channel.submit(pack(("EVALSHA", _count_sha, 1, f"floor:{ip}", 600)))
    if isinstance(reply, Exception):
        raise reply
    _answered += 1
    return _answer("allow")


floor_app = Starlette(routes=[Route("/v1/decide", _floor, methods=["POST"]),
                              Route("/metrics", _metrics)],
                      lifespan=_floor_lifespan)


# --- the proxy benchmark's upstream ---------------------------------------------------
#
# A trivial site for ``make bench``'s proxy measurement (the ``proxy`` server): the
# contract's login and booking routes and a small home page, doing as little as a
# Starlette app can while still reading the body and answering what a real one would.
# It is measured straight and behind ``riskgate serve``, so whatever it costs is in both.

_HOME = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<title>Example Air</title></head><body><main><h1>Example Air</h1>"
         "<p>Book a flight, manage a booking, check in.</p>"
         "<form method=\"post\" action=\"/api/login\"><input name=\"username\">"
         "<input name=\"password\" type=\"password\"><button>Sign in</button></form>"
         "</main></body></html>")


async def _home(_: Request) -> Response:
    return HTMLResponse(_HOME)


async def _login(request: Request) -> Response:
    payload = json.loads(await request.body())
    # The bench's workload marks failed logins with this password: a 401 is what the
    # gateway's login route counts as a failure (failure_statuses), as a real site's is.
    if payload.get("password") == "wrong":
        return JSONResponse({"error": "invalid username or password"}, status_code=401)
    return JSONResponse({"account": payload.get("username"), "session": os.urandom(16).hex()})


async def _booking(request: Request) -> Response:
    payload = json.loads(await request.body())
    return JSONResponse({"booking": os.urandom(6).hex().upper(), "flight": payload.get("flight"),
                         "seats": payload.get("seats"), "status": "held"}, status_code=201)


upstream_app = Starlette(routes=[Route("/", _home, methods=["GET"]),
                                 Route("/api/login", _login, methods=["POST"]),
                                 Route("/api/bookings", _booking, methods=["POST"])])


def _forward_app() -> ProxyApp | None:
    upstream = os.environ.get("BENCH_UPSTREAM")
    return None if upstream is None else ProxyApp(upstream)


forward_app = _forward_app()


# Last, once everything above is built. Unfrozen, the ~130,000 objects of the imports
# stayed in the oldest generation, and each full collection walked them all: 60-85 ms,
# 15 times in one proxy bench run of forward_app (timed with gc.callbacks), stalls that
# landed in whichever timed run was on.
gc.freeze()
