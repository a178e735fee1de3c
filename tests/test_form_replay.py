"""A challenged HTML form is carried back by the interstitial, which posts it again once
the check passes (issue 9: a challenged form submission used to be lost)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import Config, Route
from riskgate.http import RiskGateMiddleware
from support import write_rules

RULES = "rules:\n  - {id: all-challenged, events: [booking], when: 'True', action: challenge}\n"
HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    async def book(_: Request) -> PlainTextResponse:
        return PlainTextResponse("booked", status_code=201)

    config = Config(secret="form-replay-secret-0123", rules=write_rules(tmp_path, RULES),
                    decision_log=None, routes=(Route("/api/bookings", "POST", "booking"),))
    upstream = Starlette(routes=[StarletteRoute("/api/bookings", book, methods=["POST"])])
    with TestClient(RiskGateMiddleware(upstream, config=config)) as c:
        yield c


def page_data(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="rg-challenge">(.*?)</script>',
                      html, re.S)
    assert found, "the interstitial carries its data in a JSON script element"
    data: dict[str, object] = json.loads(found[1])
    return data


def test_a_challenged_form_post_comes_back_with_its_fields(client: TestClient) -> None:
    response = client.post("/api/bookings?from=search", headers=HTML,
                           data={"flight": "CA1234", "seats": "2", "note": "</script><b>"})
    assert response.status_code == 403
    assert "</script><b>" not in response.text  # never readable as markup
    assert page_data(response.text)["resubmit"] == {
        "action": "/api/bookings?from=search",
        "fields": [["flight", "CA1234"], ["seats", "2"], ["note", "</script><b>"]]}


@pytest.mark.parametrize("kind", ["json", "large form"])
def test_what_cannot_be_carried_back_is_asked_to_be_submitted_again(
    client: TestClient, kind: str
) -> None:
    if kind == "json":
        response = client.post("/api/bookings", headers=HTML, json={"seats": 2})
    else:
        response = client.post("/api/bookings", headers=HTML, data={"notes": "x" * 10_000})
    assert response.status_code == 403
    assert page_data(response.text)["resubmit"] is None
