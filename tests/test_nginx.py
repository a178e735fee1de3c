"""nginx ``auth_request`` mode: ``GET /v1/auth`` and ``examples/nginx.conf`` on a real nginx.

The behaviour shared with the other modes is in ``test_gateway.py`` (its ``nginx``
rows start nginx from the example config); here are the nginx-only parts. Needs
Debian's nginx: ``apt-get install -y nginx-light``.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.decision.challenge import Challenges
from riskgate.http.app import create_app
from riskgate.store import MemoryStore
from support import write_rules
from test_gateway import (
    BLOCKED_IP,
    BLOCKED_UA,
    BROWSER_UA,
    CHALLENGED_UA,
    HEX_ID,
    ROOT,
    RULES,
    SECRET,
    NginxServer,
    base_config,
    gateway,
    redeem,
)

ORIGINAL = {"x-original-uri": "/api/promotions/SPRING/redeem?ref=mail",
            "x-original-method": "POST", "user-agent": BROWSER_UA, "x-account-id": "acct-1"}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path, RULES, "gateway.yaml")


def auth_client(rules: Path, peer: str, trusted: str | None) -> TestClient:
    proxies = () if trusted is None else (ipaddress.ip_network(trusted),)
    app = create_app(base_config(rules, trusted_proxies=proxies))
    return TestClient(app, client=(peer, 40000))


@pytest.fixture
def nginx_peer(rules_dir: Path) -> Iterator[TestClient]:
    with auth_client(rules_dir, "10.0.0.5", "10.0.0.0/8") as client:
        yield client


def test_auth_allows_with_200_and_the_decision_headers(nginx_peer: TestClient) -> None:
    response = nginx_peer.get("/v1/auth", headers=ORIGINAL)
    assert response.status_code == 200
    assert response.headers["x-riskgate-decision"] == "allow"
    assert HEX_ID.fullmatch(response.headers["x-riskgate-request-id"])


@pytest.mark.parametrize(("user_agent", "status", "decision"), [
    (CHALLENGED_UA, 401, "challenge"),
    (BLOCKED_UA, 403, "block"),
])
def test_auth_answers_401_for_a_challenge_and_403_for_a_block(
    nginx_peer: TestClient, user_agent: str, status: int, decision: str
) -> None:
    response = nginx_peer.get("/v1/auth", headers={**ORIGINAL, "user-agent": user_agent})
    assert response.status_code == status
    assert response.headers["x-riskgate-decision"] == decision


def test_auth_passes_an_unmatched_request_unscored(nginx_peer: TestClient) -> None:
    response = nginx_peer.get("/v1/auth", headers={**ORIGINAL, "x-original-method": "GET",
                                                   "user-agent": BLOCKED_UA})
    assert response.status_code == 200
    assert "x-riskgate-decision" not in response.headers


@pytest.mark.parametrize(("peer", "trusted", "decision"), [
    ("10.0.0.5", "10.0.0.0/8", "block"),  # nginx, trusted: X-Real-IP is the client
    ("192.0.2.7", "10.0.0.0/8", "allow"),  # anyone else: X-Real-IP is ignored
    ("10.0.0.5", None, "allow"),  # no trusted proxies at all
])
def test_auth_believes_x_real_ip_only_from_a_trusted_peer(
    rules_dir: Path, peer: str, trusted: str | None, decision: str
) -> None:
    with auth_client(rules_dir, peer, trusted) as client:
        response = client.get("/v1/auth", headers={**ORIGINAL, "x-real-ip": BLOCKED_IP})
    assert response.headers["x-riskgate-decision"] == decision


def test_auth_challenge_page_believes_the_score_only_from_a_trusted_peer(
    rules_dir: Path
) -> None:
    headers = {**ORIGINAL, "x-riskgate-score": "100", "accept": "application/json",
               "x-riskgate-request-id": "0123456789abcdef01234567"}
    with auth_client(rules_dir, "10.0.0.5", "10.0.0.0/8") as trusted:
        hard = trusted.get("/v1/auth/challenge", headers=headers)
    with auth_client(rules_dir, "192.0.2.7", "10.0.0.0/8") as untrusted:
        easy = untrusted.get("/v1/auth/challenge", headers=headers)
    assert hard.status_code == easy.status_code == 429
    difficulty = Challenges(SECRET.encode(), MemoryStore()).difficulty
    assert hard.json()["challenge"]["difficulty"] == difficulty(100.0)
    assert easy.json()["challenge"]["difficulty"] == difficulty(0.0)
    assert difficulty(100.0) > difficulty(0.0)
    assert hard.headers["x-riskgate-request-id"] == "0123456789abcdef01234567"
    assert easy.headers["x-riskgate-request-id"] != "0123456789abcdef01234567"


def test_the_example_config_passes_nginx_t(tmp_path: Path) -> None:
    server = NginxServer(tmp_path, 8000, 9000)
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(executable).exists():
        pytest.fail("nginx not found; install it with: apt-get install -y nginx-light",
                    pytrace=False)
    result = subprocess.run(
        [executable, "-t", "-p", str(tmp_path), "-c", str(server.conf),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_serves_the_html_challenge_page_for_browsers(
    tmp_path: Path, rules_dir: Path
) -> None:
    with gateway("nginx", tmp_path, rules_dir) as client:
        response = redeem(client, **{"user-agent": CHALLENGED_UA, "accept": "text/html"})
    assert response.status_code == 429
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-riskgate-decision"] == "challenge"
    assert response.headers["x-riskgate-request-id"] in response.text


def test_the_example_config_documents_the_auth_request_wiring() -> None:
    text = (ROOT / "examples" / "nginx.conf").read_text()
    for line in ("auth_request /_riskgate;", "proxy_pass_request_body off;",
                 "auth_request_set $riskgate_decision $upstream_http_x_riskgate_decision;",
                 "error_page 401 = @riskgate_challenge;"):
        assert line in text
