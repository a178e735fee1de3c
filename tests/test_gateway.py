"""The gateway modes against one behavioural table (CONTRACT §3).

Every case runs in each mode it applies to:

- ``proxy``: ``create_app`` with ``upstream``, served by a real uvicorn, in front of a
  real upstream uvicorn;
- ``middleware``: ``RiskGateMiddleware`` around a real Starlette app, in-process;
- ``middleware-server``: the same, served by a real uvicorn;
- ``nginx``: a real nginx using ``examples/nginx.conf`` asks ``GET /v1/auth``; it sees
  no bodies and no upstream statuses, so body, login-outcome and upstream cases skip it
  by table (not at run time).

All servers listen on 127.0.0.1 only, on free ports, with bounded waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import Config, Route, ValueSource
from riskgate.decision.challenge import PASS_COOKIE, solve
from riskgate.http.app import create_app
from riskgate.http.middleware import RiskGateMiddleware
from support import ThreadServer, free_port, stop_process, write_rules

SECRET = "gateway-test-secret-0123456789"
ROOT = Path(__file__).resolve().parent.parent
BLOCKED_IP = "203.0.113.66"
CHALLENGED_UA = "suspicious-bot/1.0"
BLOCKED_UA = "scraper/1.0"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

RULES = f"""
counters:
  login_failures_per_account: {{events: [login], key: account, on: [login_failed], window: 1h}}
rules:
  - id: blocked-address
    when: ip == "{BLOCKED_IP}"
    action: block
  - id: challenged-agent
    when: device.user_agent == "{CHALLENGED_UA}" and not challenge.passed
    action: challenge
  - id: blocked-agent
    when: device.user_agent == "{BLOCKED_UA}"
    action: block
  - id: account-locked
    description: Three failed logins lock the account for the window
    events: [login]
    when: counters.login_failures_per_account >= 3
    action: block
"""

ROUTES = (
    Route("/api/login", "POST", "login", ValueSource("body", "username"),
          failure_statuses=frozenset({401, 502})),
    Route("/api/promotions/{code}/redeem", "POST", "promotion",
          ValueSource("header", "x-account-id"), {"promo_code": ValueSource("path", "code")}),
)

HEX_ID = re.compile(r"[0-9a-f]{24}")


# -- a real upstream -------------------------------------------------------------------


def upstream_app() -> Starlette:
    """The app behind the gateway: it says what it received, so tests can check it."""

    async def login(request: Request) -> Response:
        form = await request.json()
        ok = form.get("password") == "right"
        return JSONResponse({"login": ok}, status_code=200 if ok else 401,
                            headers={"x-upstream": "login"})

    async def redeem(request: Request) -> Response:
        return JSONResponse({"redeemed": request.path_params["code"]}, status_code=201,
                            headers={"x-upstream": "redeem", "set-cookie": "promo=1; Path=/"})

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"headers": dict(request.headers), "length": len(body),
                             "path": request.url.path, "query": request.url.query})

    async def slow(_: Request) -> Response:
        await asyncio.sleep(3)
        return PlainTextResponse("late")

    return Starlette(routes=[
        StarletteRoute("/api/login", login, methods=["POST"]),
        StarletteRoute("/api/promotions/{code}/redeem", redeem, methods=["POST"]),
        StarletteRoute("/echo/{rest:path}", echo, methods=["GET", "POST"]),
        StarletteRoute("/slow", slow),
        # The upstream's own POST on a path riskgate answers GET on.
        StarletteRoute("/healthz", echo, methods=["POST"]),
    ])


# -- the modes ---------------------------------------------------------------------------


class Client(Protocol):
    def request(self, method: str, url: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Setup:
    config: Config
    tmp: Path
    upstream_timeout: float | None = None


Mode = Callable[[Setup], contextlib.AbstractContextManager[Client]]


@contextlib.contextmanager
def proxy_mode(setup: Setup) -> Iterator[Client]:
    with ThreadServer(upstream_app()) as upstream:
        config = setup.config
        if config.upstream is None:
            config = replace(config, upstream=upstream.url)
        app = create_app(config, upstream_timeout=setup.upstream_timeout)
        with ThreadServer(app) as gateway, httpx.Client(base_url=gateway.url,
                                                         timeout=10) as client:
            yield client


@contextlib.contextmanager
def middleware_mode(setup: Setup) -> Iterator[Client]:
    app = RiskGateMiddleware(upstream_app(), config=setup.config)
    with TestClient(app, base_url="http://gateway.test", client=("127.0.0.1", 50000)) as client:
        yield client


@contextlib.contextmanager
def middleware_server_mode(setup: Setup) -> Iterator[Client]:
    app = RiskGateMiddleware(upstream_app(), config=setup.config)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


class NginxServer:
    """A real Debian nginx running ``examples/nginx.conf`` on free local ports."""

    def __init__(self, prefix: Path, riskgate_port: int, upstream_port: int) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        text = (ROOT / "examples" / "nginx.conf").read_text()
        for old, new in (("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{self.port};"),
                         ("server 127.0.0.1:8000;", f"server 127.0.0.1:{riskgate_port};"),
                         ("server 127.0.0.1:9000;", f"server 127.0.0.1:{upstream_port};"),
                         ("pid /run/nginx-riskgate.pid;", f"pid {prefix}/nginx.pid;")):
            assert old in text, f"examples/nginx.conf no longer contains `{old}`"
            text = text.replace(old, new)
        # Temp files and logs go under the prefix: the packaged defaults need root paths.
        temp = "".join(f"    {name}_temp_path {prefix}/{name};\n"
                       for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        text = text.replace("http {\n", "http {\n" + temp
                            + f"    access_log {prefix}/access.log;\n", 1)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(text)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NginxServer:
        executable = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
        if executable is None:
            pytest.fail("nginx not found; install it with: apt-get install -y nginx-light",
                        pytrace=False)
        log = self.prefix / "error.log"
        self._process = subprocess.Popen(
            [executable, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(log),
             "-g", "daemon off; master_process on;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return self
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"nginx did not start:\n{log.read_text(errors='replace')}",
                            pytrace=False)
            time.sleep(0.02)

    def __exit__(self, *_: object) -> None:
        if self._process is None:
            return
        stop_process(self._process)
        self._process = None


@contextlib.contextmanager
def nginx_mode(setup: Setup) -> Iterator[Client]:
    # riskgate trusts nginx (the peer of /v1/auth), so X-Real-IP names the client.
    config = replace(setup.config, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    with ThreadServer(upstream_app()) as upstream, ThreadServer(create_app(config)) as riskgate:
        prefix = setup.tmp / "nginx"
        prefix.mkdir()
        with NginxServer(prefix, riskgate.port, upstream.port) as nginx, \
                httpx.Client(base_url=nginx.url, timeout=10) as client:
            yield client


MODES: dict[str, Mode] = {
    "proxy": proxy_mode,
    "middleware": middleware_mode,
    "middleware-server": middleware_server_mode,
    "nginx": nginx_mode,
}
ALL = tuple(MODES)
WITH_BODIES = ("proxy", "middleware", "middleware-server")  # nginx subrequests have none


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path, RULES, "gateway.yaml")


def base_config(rules: Path, **overrides: Any) -> Config:
    options: dict[str, Any] = {
        "secret": SECRET, "rules": rules, "routes": ROUTES, "decision_log": None,
        "watch_rules": False, "max_body_bytes": 1024, "challenge_status": 429,
        "trusted_proxies": (),
    }
    options.update(overrides)
    return Config(**options)


def gateway(mode: str, tmp_path: Path, rules: Path, upstream_timeout: float | None = None,
            **overrides: Any) -> contextlib.AbstractContextManager[Client]:
    return MODES[mode](Setup(base_config(rules, **overrides), tmp_path, upstream_timeout))


def redeem(client: Client, **headers: str) -> Any:
    return client.request("POST", "/api/promotions/SPRING/redeem",
                          headers={"user-agent": BROWSER_UA, "x-account-id": "acct-1", **headers})


# -- the table -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL)
def test_an_allowed_request_gets_the_upstream_answer_with_the_decision_headers(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = redeem(client)
    assert response.status_code == 201
    assert response.json() == {"redeemed": "SPRING"}
    assert response.headers["x-upstream"] == "redeem"
    assert response.headers["set-cookie"] == "promo=1; Path=/"
    assert response.headers["x-riskgate-decision"] == "allow"
    assert HEX_ID.fullmatch(response.headers["x-riskgate-request-id"])


@pytest.mark.parametrize("mode", ALL)
def test_an_unmatched_route_is_forwarded_unscored(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = client.request("GET", "/echo/about?x=1", headers={"user-agent": BLOCKED_UA})
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/about"
    assert response.json()["query"] == "x=1"
    assert "x-riskgate-decision" not in response.headers


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("accept", "content_type"), [
    ("application/json", "application/json"),
    ("text/html,application/xhtml+xml;q=0.9", "text/html; charset=utf-8"),
])
def test_a_challenge_answers_challenge_status_as_json_or_html_by_accept(
    mode: str, accept: str, content_type: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = redeem(client, **{"user-agent": CHALLENGED_UA, "accept": accept})
    assert response.status_code == 429
    assert response.headers["content-type"] == content_type
    assert response.headers["x-riskgate-decision"] == "challenge"
    assert HEX_ID.fullmatch(response.headers["x-riskgate-request-id"])
    if content_type == "application/json":
        body = response.json()
        assert body["decision"] == "challenge"
        assert set(body["challenge"]) >= {"id", "algorithm", "difficulty", "salt", "verify_url"}


def solve_challenge(client: Client, response: Any, **headers: str) -> Any:
    challenge = response.json()["challenge"]
    return client.request("POST", challenge["verify_url"], headers=headers,
                          json={"id": challenge["id"],
                                "nonce": solve(challenge["salt"], challenge["difficulty"])})


@pytest.mark.parametrize("mode", ALL)
def test_a_solved_challenge_lets_the_same_client_through(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        challenged = redeem(client, **{"user-agent": CHALLENGED_UA})
        verified = solve_challenge(client, challenged, **{"user-agent": CHALLENGED_UA})
        cookie = verified.cookies[PASS_COOKIE]
        again = redeem(client, **{"user-agent": CHALLENGED_UA,
                                  "cookie": f"{PASS_COOKIE}={cookie}"})
    assert challenged.status_code == 429
    assert verified.status_code == 204
    assert again.status_code == 201
    assert again.headers["x-riskgate-decision"] == "allow"


@pytest.mark.parametrize("mode", ALL)
def test_a_pass_from_another_device_is_ignored(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        headers = {"user-agent": CHALLENGED_UA, "x-device-id": "d-1"}
        challenged = redeem(client, **headers)
        cookie = solve_challenge(client, challenged, **headers).cookies[PASS_COOKIE]
        elsewhere = redeem(client, **{**headers, "x-device-id": "d-2",
                                      "cookie": f"{PASS_COOKIE}={cookie}"})
    assert elsewhere.status_code == 429
    assert elsewhere.headers["x-riskgate-decision"] == "challenge"


@pytest.mark.parametrize("mode", WITH_BODIES)
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_a_block_is_403_naming_the_request_id(
    mode: str, accept: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = redeem(client, **{"user-agent": BLOCKED_UA, "accept": accept})
    request_id = response.headers["x-riskgate-request-id"]
    assert response.status_code == 403
    assert response.headers["x-riskgate-decision"] == "block"
    assert HEX_ID.fullmatch(request_id)
    if accept == "text/html":
        assert f'<code id="reference">{request_id}</code>' in response.text
    else:
        assert response.json() == {"decision": "block", "request_id": request_id,
                                   "error": "the request was refused; quote request_id to "
                                            "support"}


def test_nginx_blocks_with_403_and_the_decision_headers(tmp_path: Path, rules_dir: Path) -> None:
    with gateway("nginx", tmp_path, rules_dir) as client:
        response = redeem(client, **{"user-agent": BLOCKED_UA})
    assert response.status_code == 403
    assert response.headers["x-riskgate-decision"] == "block"
    assert HEX_ID.fullmatch(response.headers["x-riskgate-request-id"])


def login(client: Client, password: str) -> Any:
    return client.request("POST", "/api/login", headers={"user-agent": BROWSER_UA},
                          json={"username": "alice@example.com", "password": password})


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_three_refused_logins_block_the_account(
    mode: str, store_uri: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir, store=store_uri) as client:
        refused = [login(client, "wrong") for _ in range(3)]
        after = login(client, "right")
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert [r.headers["x-riskgate-decision"] for r in refused] == ["allow"] * 3
    assert after.status_code == 403
    assert after.headers["x-riskgate-decision"] == "block"


def test_a_refused_login_counts_when_answered_though_the_app_works_on(
    store_uri: str, tmp_path: Path, rules_dir: Path
) -> None:
    """A host app may go on after answering (Starlette runs background tasks inside the
    app's call): its failures must count at once, not when it is done."""

    async def login_then_notify(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("wrong password", status_code=401,
                                 background=BackgroundTask(asyncio.sleep, 1.5))

    app = RiskGateMiddleware(
        Starlette(routes=[StarletteRoute("/api/login", login_then_notify, methods=["POST"])]),
        config=base_config(rules_dir, store=store_uri))
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        refused = [login(client, "wrong") for _ in range(3)]
        after = login(client, "wrong")
        took = time.monotonic() - started
    assert took < 1  # all four while the first one's app still works on
    assert [r.headers["x-riskgate-decision"] for r in refused] == ["allow"] * 3
    assert after.headers["x-riskgate-decision"] == "block"


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_a_lone_surrogate_in_a_json_body_is_scored_not_a_500(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = client.request(
            "POST", "/api/login", headers={"user-agent": BROWSER_UA,
                                           "content-type": "application/json"},
            content=b'{"username": "al\\ud800ice@example.com", "password": "right"}')
    assert response.status_code == 200
    assert response.headers["x-riskgate-decision"] == "allow"


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_a_successful_login_counts_no_failure(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        answers = [login(client, "right").status_code for _ in range(5)]
    assert answers == [200] * 5


def test_an_unreachable_upstream_is_502_and_never_a_failed_login(
    tmp_path: Path, rules_dir: Path
) -> None:
    # failure_statuses lists 502 on purpose: even then an outage locks no account out.
    port = free_port()
    setup = Setup(base_config(rules_dir, upstream=f"http://127.0.0.1:{port}"), tmp_path)
    with proxy_mode(setup) as client:
        down = [login(client, "wrong") for _ in range(3)]
        with ThreadServer(upstream_app(), port=port):
            after = login(client, "right")
    assert [r.status_code for r in down] == [502, 502, 502]
    assert down[0].json() == {"error": f"the upstream http://127.0.0.1:{port} could not be "
                                       "reached"}
    assert [r.headers["x-riskgate-decision"] for r in down] == ["allow"] * 3
    assert after.status_code == 200
    assert after.json() == {"login": True}


def test_a_slow_upstream_is_504(tmp_path: Path, rules_dir: Path) -> None:
    with gateway("proxy", tmp_path, rules_dir, upstream_timeout=0.5) as client:
        response = client.request("GET", "/slow")
    assert response.status_code == 504
    assert response.json()["error"].endswith("did not answer in time")


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_a_body_over_max_body_bytes_is_413_on_a_scored_route(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = client.request("POST", "/api/login", headers={"user-agent": BROWSER_UA},
                                  json={"username": "alice", "password": "x" * 2000})
    assert response.status_code == 413
    assert response.json() == {"error": "the body is larger than 1024 bytes", "field": None}


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_a_large_body_on_an_unscored_route_streams_through(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    chunks = [b"x" * 4096] * 16

    with gateway(mode, tmp_path, rules_dir) as client:
        response = client.request("POST", "/echo/upload", content=iter(chunks))
    assert response.status_code == 200
    assert response.json()["length"] == 65536


@pytest.mark.parametrize("mode", WITH_BODIES)
def test_a_malformed_body_scores_without_an_account(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir) as client:
        response = client.request("POST", "/echo/x", headers={"content-type": "application/json"},
                                  content=b'{"username": ')
        scored = client.request("POST", "/api/promotions/SPRING/redeem",
                                headers={"content-type": "application/json"}, content=b"{")
    assert response.status_code == 200
    assert scored.status_code == 201
    assert scored.headers["x-riskgate-decision"] == "allow"


TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize("mode", ALL)
def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    mode: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir, trusted_proxies=()) as client:
        response = redeem(client, **{"x-forwarded-for": BLOCKED_IP})
    assert response.status_code == 201
    assert response.headers["x-riskgate-decision"] == "allow"


@pytest.mark.parametrize("mode", WITH_BODIES)
@pytest.mark.parametrize(("forwarded_for", "decision"), [
    (BLOCKED_IP, "block"),
    (f"{BLOCKED_IP}, 127.0.0.2", "block"),  # trusted hops are skipped from the right
    (f"{BLOCKED_IP}, 198.51.100.9", "allow"),  # the client cannot hide behind its own entry
    (f"198.51.100.9, {BLOCKED_IP}", "block"),
    (f"{BLOCKED_IP}, not-an-address", "allow"),  # garbage stops the walk at the proxy
])
def test_x_forwarded_for_from_a_trusted_proxy_names_the_right_most_untrusted_hop(
    mode: str, forwarded_for: str, decision: str, tmp_path: Path, rules_dir: Path
) -> None:
    with gateway(mode, tmp_path, rules_dir, trusted_proxies=TRUSTED) as client:
        response = redeem(client, **{"x-forwarded-for": forwarded_for})
    assert response.headers["x-riskgate-decision"] == decision


def test_the_proxy_drops_hop_by_hop_headers_and_sets_forwarding_headers(
    tmp_path: Path, rules_dir: Path
) -> None:
    with gateway("proxy", tmp_path, rules_dir) as client:
        base = str(client.base_url)  # type: ignore[attr-defined]
        response = client.request("GET", "/echo/h", headers={
            "connection": "keep-alive, x-private", "x-private": "1", "keep-alive": "timeout=5",
            "te": "trailers", "x-forwarded-for": "192.0.2.1", "x-kept": "yes"})
    seen = response.json()["headers"]
    assert "x-private" not in seen
    assert "keep-alive" not in seen
    assert "te" not in seen
    assert seen["x-kept"] == "yes"
    assert seen["x-forwarded-for"] == "192.0.2.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == base.removeprefix("http://")
    assert seen["host"] != seen["x-forwarded-host"]


def test_riskgate_routes_keep_working_in_front_of_an_upstream(
    tmp_path: Path, rules_dir: Path
) -> None:
    with gateway("proxy", tmp_path, rules_dir) as client:
        health = client.request("GET", "/healthz")
        decide = client.request("POST", "/v1/decide",
                                json={"event": "login", "ip": "198.51.100.7"})
        upstreams = client.request("POST", "/healthz", content=b"ping")
    assert health.json() == {"alive": True}
    assert decide.json()["decision"] == "allow"
    # Only a route riskgate serves for the method is riskgate's; the rest is forwarded.
    assert upstreams.json()["path"] == "/healthz"
    assert upstreams.json()["length"] == 4
