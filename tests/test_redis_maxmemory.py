"""Decisions when Redis reaches ``maxmemory``, under the two policies docs/production.md
compares: ``allkeys-lru`` forgets the coldest counters, ``noeviction`` refuses writes.
Either way every decision is answered; none is ever a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.config import Config
from riskgate.http.app import create_app
from support import RedisServer

ROOT = Path(__file__).resolve().parents[1]
MAXMEMORY = 2 * 2**20
#: Enough to fill MAXMEMORY about twice over (a login leaves some 1.5 kB in Redis).
LOGINS = 2500


@pytest.fixture
def full_redis(request: pytest.FixtureRequest, redis_server: RedisServer,
               tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of its own with a small ``maxmemory`` and the policy ``request.param``."""
    server = RedisServer(tmp_path, redis_server.executable, extra_args=(
        "--maxmemory", str(MAXMEMORY), "--maxmemory-policy", request.param))
    server.start()
    yield server
    server.stop()


def logins(server: RedisServer, count: int) -> list[bool]:
    """``count`` logins from as many addresses; whether each one was degraded."""
    config = Config(secret="maxmemory-test-secret-01", store=server.url, rules=ROOT / "rules",
                    decision_log=None, watch_rules=False)
    degraded = []
    with TestClient(create_app(config)) as client:
        for n in range(count):
            response = client.post("/v1/decide", json={
                "event": "login", "ip": f"10.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}",
                "account": f"user{n}@example.com", "device_id": f"device-{n}"})
            assert response.status_code == 200, response.text
            degraded.append(response.json()["degraded"])
    return degraded


@pytest.mark.parametrize("full_redis", ["allkeys-lru"], indirect=True)
def test_with_allkeys_lru_a_full_redis_forgets_cold_counters_and_decisions_stay_whole(
    full_redis: RedisServer, record_report: Callable[[str], None]
) -> None:
    degraded = logins(full_redis, LOGINS)
    with full_redis.client() as client:
        evicted = int(client.info("stats")["evicted_keys"])
    record_report(f"maxmemory {MAXMEMORY // 2**20} MB allkeys-lru: {LOGINS} logins, "
                  f"{sum(degraded)} degraded, {evicted} keys evicted")
    assert evicted > 0, "Redis never filled up: the test did not test"
    assert not any(degraded)


@pytest.mark.parametrize("full_redis", ["noeviction"], indirect=True)
def test_with_noeviction_a_full_redis_degrades_decisions_but_never_fails_them(
    full_redis: RedisServer, record_report: Callable[[str], None]
) -> None:
    degraded = logins(full_redis, LOGINS)
    first = degraded.index(True) if any(degraded) else None
    record_report(f"maxmemory {MAXMEMORY // 2**20} MB noeviction: {LOGINS} logins, "
                  f"{sum(degraded)} degraded, the first at login {first}")
    assert first is not None, "Redis never filled up: the test did not test"
    assert all(degraded[first + 100:]), "writes refused, yet decisions said they were whole"
