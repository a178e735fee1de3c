"""Spellings of a protected route that an upstream treats as the route are scored too
(issue 9): case, trailing slashes, path parameters, doubled slashes, dot segments and
method overrides used to reach the upstream unscored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import Config, Route, ValueSource
from riskgate.http import RiskGateMiddleware
from support import write_rules

RULES = """
rules:
  - {id: every-login-challenged, events: [login], when: 'True', action: challenge}
"""


def lenient_upstream() -> Starlette:
    """An upstream that, like many, answers every spelling of a path."""

    async def anything(request: Request) -> JSONResponse:
        return JSONResponse({"reached": request.url.path})

    return Starlette(routes=[StarletteRoute("/{rest:path}", anything,
                                            methods=["GET", "POST", "HEAD"])])


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = Config(secret="route-variants-secret-01", rules=write_rules(tmp_path, RULES),
                    decision_log=None,
                    routes=(Route("/api/login", "POST", "login", ValueSource("body", "user")),))
    with TestClient(RiskGateMiddleware(lenient_upstream(), config=config)) as c:
        yield c


@pytest.mark.parametrize("path", ["/api/login", "/api/login/", "/API/Login", "/api/LOGIN/",
                                  "/api/login;jsessionid=abc", "/api;v=1/login",
                                  "/api//login"])
def test_every_spelling_of_the_login_path_is_scored(client: TestClient, path: str) -> None:
    response = client.post(path, json={"user": "alice"}, headers={"accept": "application/json"})
    assert response.headers.get("x-riskgate-decision") == "challenge"


@pytest.mark.parametrize(("headers", "query"), [
    ({"x-http-method-override": "POST"}, ""),
    ({"x-http-method": "post"}, ""),
    ({"x-method-override": "POST"}, ""),
    ({}, "_method=POST"),
])
def test_a_get_that_claims_to_be_the_protected_post_is_scored(
    client: TestClient, headers: dict[str, str], query: str
) -> None:
    response = client.get(f"/api/login?{query}",
                          headers={**headers, "accept": "application/json"})
    assert response.headers.get("x-riskgate-decision") == "challenge"


def test_other_paths_and_plain_gets_stay_unscored(client: TestClient) -> None:
    for response in (client.get("/api/login"), client.post("/api/logout", json={}),
                     client.post("/api/login-help", json={})):
        assert "x-riskgate-decision" not in response.headers
        assert response.status_code == 200
