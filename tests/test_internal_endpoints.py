"""In proxy mode the internal endpoints answer only internal peers (issue 9, CONTRACT §2)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.config import Config
from riskgate.decision.challenge import VERIFY_PATH
from riskgate.http import create_app
from support import free_port, write_rules

SECRET = "internal-endpoints-secret-01"
TOKEN = "internal-admin-token-0123456789"
RULES = "rules:\n  - {id: never, when: 'False', score: 1}\n"
INTERNAL = [("POST", "/v1/decide"), ("POST", "/v1/feedback"), ("GET", "/v1/auth"),
            ("GET", "/v1/auth/challenge"), ("GET", "/metrics"), ("GET", "/admin/lists"),
            ("POST", "/admin/rules/reload"), ("GET", "/openapi.json")]
PUBLIC_PEER = "203.0.113.9"


def config(tmp_path: Path, **options: object) -> Config:
    # Nothing listens upstream: no request of these tests may reach it.
    return Config(secret=SECRET, rules=write_rules(tmp_path, RULES), decision_log=None,
                  upstream=f"http://127.0.0.1:{free_port()}", admin_tokens=(TOKEN,),
                  **options)  # type: ignore[arg-type]


ClientFrom = Callable[..., TestClient]


@pytest.fixture
def client_from(tmp_path: Path) -> Iterator[ClientFrom]:
    clients: list[TestClient] = []

    def make(peer: str, **options: object) -> TestClient:
        client = TestClient(create_app(config(tmp_path, **options)), client=(peer, 40000))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def call(client: TestClient, method: str, path: str, **headers: str) -> int:
    return client.request(method, path, json={"event": "login", "ip": "198.51.100.7"},
                          headers={"authorization": f"Bearer {TOKEN}", **headers}).status_code


@pytest.mark.parametrize(("method", "path"), INTERNAL)
def test_a_public_peer_gets_404_as_if_the_path_did_not_exist(
    client_from: ClientFrom, method: str, path: str
) -> None:
    client = client_from(PUBLIC_PEER)
    assert call(client, method, path) == 404
    # A forwarded header naming loopback changes nothing: the TCP peer is judged.
    assert call(client, method, path, **{"x-forwarded-for": "127.0.0.1"}) == 404


@pytest.mark.parametrize(("method", "path"), INTERNAL)
def test_loopback_and_configured_networks_reach_them(
    client_from: ClientFrom, method: str, path: str
) -> None:
    local = client_from("127.0.0.1")
    office = client_from("10.20.30.40",
                         internal_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    proxy = client_from("192.0.2.1", trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    assert {call(c, method, path) for c in (local, office, proxy)}.isdisjoint({404})


def test_health_and_the_challenge_pages_answer_everyone(client_from: ClientFrom) -> None:
    client = client_from(PUBLIC_PEER)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    # A wrong answer, not a missing path: the verify URL is public.
    assert client.post(VERIFY_PATH, json={"id": "x", "nonce": "1"}).status_code == 403


def test_a_decision_api_only_service_keeps_its_listener_open(tmp_path: Path) -> None:
    api_only = Config(secret=SECRET, rules=write_rules(tmp_path, RULES), decision_log=None)
    with TestClient(create_app(api_only), client=(PUBLIC_PEER, 40000)) as client:
        response = client.post("/v1/decide", json={"event": "login", "ip": "198.51.100.7"})
    assert response.status_code == 200
