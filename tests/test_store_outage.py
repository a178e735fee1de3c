"""A store that stalls or dies: decisions keep flowing, degraded, at once (issue 14).

Before the circuit breaker, a paused Redis held each decision for the store's full
timeout and requests queued behind the batches in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import Config, Route, ValueSource
from riskgate.errors import StoreError
from riskgate.http import RiskGateMiddleware, create_app
from riskgate.store import Count, open_store
from riskgate.store.breaker import CircuitBreaker
from support import RedisServer, ThreadServer, free_port, write_rules

T0 = 1_700_000_000.0
SECRET = "store-outage-secret-0123"
RULES = """
rules:
  - {id: scripted-client, when: 'device.user_agent == "curl/8.4.0"', score: 60}
"""
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.mark.anyio
async def test_a_paused_redis_fails_fast_after_one_timeout_and_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = CircuitBreaker(open_store(redis_url), deadline=0.2, retry_after=0.3)
    try:
        assert await store.apply([Count("k", 60_000)], T0) == [1.0]
        with redis_server.paused():
            with pytest.raises(StoreError, match=r"no answer within 0\.2 s"):
                await store.apply([Count("k", 60_000)], T0)
            started = time.monotonic()
            for _ in range(50):
                with pytest.raises(StoreError, match="failing fast"):
                    await store.apply([Count("k", 60_000)], T0)
            # Fifty calls in less than one deadline: none of them waited for Redis.
            assert time.monotonic() - started < 0.2
            assert store.is_open
        recovered_after = None
        started = time.monotonic()
        while time.monotonic() - started < 5:  # bounded: the probe comes every 0.3 s
            try:
                await store.apply([Count("k", 60_000)], T0)
            except StoreError:
                await asyncio.sleep(0.01)  # requests come and go; the probe runs between
                continue
            recovered_after = time.monotonic() - started
            break
        assert recovered_after is not None and recovered_after < 1.0
        assert not store.is_open
    finally:
        await store.close()


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str) -> Config:
    return Config(secret=SECRET, store=redis_url, rules=write_rules(tmp_path, RULES),
                  decision_log=None, store_timeout=0.2)


def decide(client: TestClient, user_agent: str) -> dict[str, object]:
    response = client.post("/v1/decide", json={"event": "login", "ip": "198.51.100.7",
                                               "user_agent": user_agent})
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_while_redis_is_paused_the_rules_decide_on_what_is_left(
    redis_server: RedisServer, redis_config: Config
) -> None:
    with TestClient(create_app(redis_config)) as client:
        decide(client, BROWSER)  # connected while Redis answers
        with redis_server.paused():
            answers = [decide(client, agent) for agent in (BROWSER, "curl/8.4.0") * 10]
        deadline = time.monotonic() + 5  # bounded; the breaker probes every 0.2 s
        while decide(client, BROWSER)["degraded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = decide(client, BROWSER)
    assert all(answer["degraded"] for answer in answers)
    assert [a["decision"] for a in answers[:2]] == ["allow", "challenge"]
    assert after["degraded"] is False


@pytest.mark.parametrize(("fail_mode", "decision"),
                         [("allow", "allow"), ("challenge", "challenge"), ("block", "block")])
def test_a_routes_fail_mode_decides_while_the_store_is_down(
    redis_server: RedisServer, redis_config: Config, fail_mode: str, decision: str
) -> None:
    async def book(_: Request) -> PlainTextResponse:
        return PlainTextResponse("booked", status_code=201)

    config = replace(redis_config, routes=(Route(
        "/api/bookings", "POST", "booking", ValueSource("header", "x-account-id"),
        fail_mode=fail_mode),))  # type: ignore[arg-type]
    app = RiskGateMiddleware(Starlette(routes=[StarletteRoute("/api/bookings", book,
                                                              methods=["POST"])]),
                             config=config)
    headers = {"user-agent": BROWSER, "accept": "application/json"}
    with TestClient(app) as client:
        healthy = client.post("/api/bookings", headers=headers)
        with redis_server.paused():
            down = client.post("/api/bookings", headers=headers)
    assert healthy.headers["x-riskgate-decision"] == "allow"
    assert down.headers["x-riskgate-decision"] == decision


@pytest.mark.anyio
async def test_the_start_up_check_accepts_the_redis_it_runs_against(redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        await store.check_server()  # Redis 7 runs the script: no StoreVersionError
    finally:
        await store.close()
    unreachable = open_store(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(StoreError, match=r"INFO|connect|refused"):
        await unreachable.check_server()
    await unreachable.close()


def test_a_page_does_not_wait_on_a_stalled_store_to_note_its_device(
    redis_server: RedisServer, redis_config: Config
) -> None:
    async def page(_: Request) -> PlainTextResponse:
        return PlainTextResponse("flights")

    # A second-long store timeout: a page that waited on its device sighting would
    # take that second while Redis does not answer.
    config = replace(redis_config, store_timeout=1.0)
    app = RiskGateMiddleware(Starlette(routes=[StarletteRoute("/flights", page)]),
                             config=config)
    headers = {"user-agent": BROWSER, "x-device-id": "device-7f3a"}
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/flights", headers=headers).text == "flights"  # connected
        with redis_server.paused():
            started = time.monotonic()
            response = client.get("/flights", headers=headers)
            took = time.monotonic() - started
    assert response.text == "flights"
    assert took < 0.5


def test_a_login_answer_does_not_wait_on_a_stalled_store_to_count_its_outcome(
    redis_server: RedisServer, redis_config: Config, tmp_path: Path
) -> None:
    stalled = contextlib.ExitStack()
    counting = tmp_path / "counting"
    counting.mkdir()

    async def login(_: Request) -> PlainTextResponse:
        # Redis stops answering once the login was scored: only its outcome's count is left.
        stalled.enter_context(redis_server.paused())
        return PlainTextResponse("wrong password", status_code=401)

    # A counter of failed logins, so a failed one has a count to write after its answer.
    rules = write_rules(counting, RULES + """
counters:
  login_failures: {events: [login], key: account, on: [login_failed], window: 1h}
""")
    config = replace(redis_config, rules=rules, store_timeout=1.0, routes=(Route(
        "/api/login", "POST", "login", ValueSource("header", "x-account-id"),
        failure_statuses=frozenset({401})),))
    app = RiskGateMiddleware(Starlette(routes=[StarletteRoute("/api/login", login,
                                                              methods=["POST"])]),
                             config=config)
    headers = {"user-agent": BROWSER, "accept": "application/json",
               "x-account-id": "ana@example.com"}
    with (ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client,
          stalled):  # left first: Redis answers again before the server stops
        started = time.monotonic()
        response = client.post("/api/login", headers=headers)
        took = time.monotonic() - started
    assert (response.status_code, response.text) == (401, "wrong password")
    assert response.headers["x-riskgate-decision"] == "allow"
    assert took < 0.5
