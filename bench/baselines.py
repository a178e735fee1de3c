"""The two peers riskgate is measured against in ``make bench``.

Both answer ``POST /v1/decide`` with a body of the same shape and size as riskgate's
decision, so the only difference between the three servers is the work done per request:

- ``bare_app``: parse the JSON body, answer. The ceiling for Starlette on uvicorn.
- ``limits_app``: the same, plus one sliding-window hit per client IP with the `limits`
  library on Redis, the usual "rate limit by IP" a site would deploy instead of riskgate.

Started by bench/run.py as ``uvicorn baselines:bare_app --app-dir bench ...``. The
limits app reads its Redis URL from ``BENCH_LIMITS_STORAGE`` and the Redis client the
library uses (``redispy`` or ``coredis``) from ``BENCH_LIMITS_CLIENT``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator

from limits import RateLimitItem, parse
from limits.aio import strategies
from limits.storage import storage_from_string
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

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
