"""The demo airline holds real state, and riskgate in front of it sees what detection needs:
device ids seen on unscored calls, logins that got in, native apps that are not bots."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.testclient import TestClient

from riskgate.config import Config, Route, ValueSource
from riskgate.http.demo import DEMO_PASSWORD, PROMOTION, SEATS_PER_FLIGHT, demo_upstream
from riskgate.http.middleware import RiskGateMiddleware
from support import RedisServer, write_rules

SECRET = "demo-test-secret-0123456789"
ALICE = "alice@example.com"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def airline() -> Iterator[TestClient]:
    with TestClient(demo_upstream()) as client:
        yield client


def signed_in(client: TestClient, account: str = ALICE, password: str = DEMO_PASSWORD
              ) -> dict[str, str]:
    response = client.post("/api/login", json={"username": account, "password": password})
    assert response.status_code == 200, response.text
    return {"x-account-id": account, "authorization": f"Bearer {response.json()['token']}"}


def test_a_wrong_password_is_refused_and_the_right_one_gets_in(airline: TestClient) -> None:
    wrong = airline.post("/api/login", json={"username": ALICE, "password": "nope"})
    assert wrong.status_code == 401
    assert airline.get("/__stats").json()["logins"] == {}
    signed_in(airline)
    assert airline.get("/__stats").json()["logins"] == {ALICE: 1}


def test_the_sign_in_form_posts_and_answers_a_page(airline: TestClient) -> None:
    page = airline.get("/login", headers={"accept": "text/html"})
    assert 'action=/api/login' in page.text
    answer = airline.post("/api/login", data={"username": ALICE, "password": DEMO_PASSWORD},
                          headers={"accept": "text/html"})
    assert answer.status_code == 200
    assert "Welcome back" in answer.text


def test_holds_take_seats_and_a_hold_above_what_is_left_fails(airline: TestClient) -> None:
    me = signed_in(airline)
    for _ in range(SEATS_PER_FLIGHT // 9):
        assert airline.post("/api/bookings", json={"flight": "RG100", "seats": 9},
                            headers=me).status_code == 201
    left = airline.get("/api/flights").json()["flights"]["RG100"]
    assert left == SEATS_PER_FLIGHT % 9
    over = airline.post("/api/bookings", json={"flight": "RG100", "seats": left + 1}, headers=me)
    assert over.status_code == 409
    assert airline.get("/__stats").json()["holds"] == {ALICE: SEATS_PER_FLIGHT // 9}


def test_a_hold_needs_the_accounts_own_session(airline: TestClient) -> None:
    bob = signed_in(airline, "bob@example.com")
    as_alice = {**bob, "x-account-id": ALICE}
    answer = airline.post("/api/bookings", json={"flight": "RG101", "seats": 1}, headers=as_alice)
    assert answer.status_code == 401


def test_the_promotion_is_redeemed_once_per_account(airline: TestClient) -> None:
    me = signed_in(airline)
    path = f"/api/promotions/{PROMOTION}/redeem"
    assert airline.post(path, headers=me).status_code == 200
    assert airline.post(path, headers=me).status_code == 409
    assert airline.get("/__stats").json()["redemptions"] == {ALICE: 1}


def test_registration_creates_an_account_that_can_sign_in(airline: TestClient) -> None:
    new = {"email": "Nora@Example.com", "password": "pw-123456"}
    assert airline.post("/api/register", json=new).status_code == 201
    assert airline.post("/api/register", json=new).status_code == 409
    signed_in(airline, "nora@example.com", "pw-123456")
    assert airline.get("/__stats").json()["registrations"] == ["nora@example.com"]


# -- through riskgate ------------------------------------------------------------------

DETECTION_RULES = """
counters:
  successes: {events: [login], key: account, on: [login_succeeded], window: 1h}
rules:
  - id: invented-device
    events: [login]
    when: device.present and device.first_seen_age == 0
    action: block
  - id: already-in
    events: [login]
    when: counters.successes >= 1
    action: block
"""


def gateway(tmp_path: Path, redis_url: str, rules: Path, **settings: Any) -> TestClient:
    config = Config(
        secret=SECRET, store=redis_url, rules=rules, watch_rules=False,
        routes=(Route("/api/login", "POST", "login", ValueSource("body", "username"),
                      failure_statuses=frozenset({401})),),
        **{"decision_log": None, **settings},
    )
    return TestClient(RiskGateMiddleware(demo_upstream(), config=config),
                      client=("127.0.0.1", 50000))


def login(client: TestClient, device: str | None = None, **headers: str) -> httpx.Response:
    extra = {"x-device-id": device} if device else {}
    return client.post("/api/login", json={"username": ALICE, "password": DEMO_PASSWORD},
                       headers={**extra, **headers})


def test_a_device_seen_on_an_unscored_call_is_not_new_at_login(tmp_path: Path,
                                                               redis_url: str) -> None:
    with gateway(tmp_path, redis_url, write_rules(tmp_path, DETECTION_RULES)) as client:
        assert login(client, "invented-1").headers["x-riskgate-decision"] == "block"
        client.get("/api/flights", headers={"x-device-id": "browsing-1"})
        assert login(client, "browsing-1").headers["x-riskgate-decision"] == "allow"


BROWSING_RULES = """
rules:
  - id: never-browsed
    events: [login]
    when: device.browsed == False
    action: block
"""


def test_a_device_that_never_browsed_is_told_apart_once_browsing_is_seen(
        tmp_path: Path, redis_url: str) -> None:
    with gateway(tmp_path, redis_url, write_rules(tmp_path, BROWSING_RULES)) as client:
        # Nothing unscored has carried a device id yet: the gateway cannot tell, and a
        # deployment whose pages never send one must not treat every device as a script.
        assert login(client, "direct-0").headers["x-riskgate-decision"] == "allow"
        client.get("/api/flights", headers={"x-device-id": "browsing-1"})
        assert login(client, "browsing-1").headers["x-riskgate-decision"] == "allow"
        assert login(client, "direct-1").headers["x-riskgate-decision"] == "block"


def test_a_sighting_the_store_lost_does_not_make_its_device_one_that_never_browsed(
        tmp_path: Path, redis_server: RedisServer, redis_url: str) -> None:
    decisions = tmp_path / "decisions.jsonl"
    with gateway(tmp_path, redis_url, write_rules(tmp_path, BROWSING_RULES),
                 decision_log=decisions, store_timeout=0.3) as client:
        client.get("/api/flights", headers={"x-device-id": "browsing-1"})
        assert login(client, "direct-1").headers["x-riskgate-decision"] == "block"
        with redis_server.paused():
            # The first sighting times out (Redis still takes it once it wakes); the
            # breaker then fails the second at once, and that one is lost.
            client.get("/api/flights", headers={"x-device-id": "browsing-2"})
            client.get("/api/flights", headers={"x-device-id": "browsing-3"})
        # The store answers again (the breaker retries within a second); then the person
        # whose search it lost signs in, and is not taken for a script.
        for _ in range(50):
            answer = login(client, "browsing-3")
            last = logged_decision(decisions, answer.headers["x-riskgate-request-id"])
            if not last["degraded"]:
                break
            time.sleep(0.1)
        assert not last["degraded"], "the store never answered again"
        assert answer.headers["x-riskgate-decision"] == "allow"
        assert "device.browsed" not in last["facts"]
        # Only the device whose sighting was lost: one that never browsed still is told.
        assert login(client, "direct-2").headers["x-riskgate-decision"] == "block"


def logged_decision(log: Path, request_id: str) -> dict[str, Any]:
    """The decision log's line for ``request_id``, once the writer thread has written it."""
    for _ in range(100):
        for line in log.read_text().splitlines() if log.exists() else ():
            entry = json.loads(line)
            if entry.get("request_id") == request_id:
                return cast(dict[str, Any], entry)
        time.sleep(0.02)
    raise AssertionError(f"decision {request_id} never reached {log}")


def test_a_login_that_got_in_is_counted_and_a_refused_one_is_not(tmp_path: Path,
                                                                 redis_url: str) -> None:
    with gateway(tmp_path, redis_url, write_rules(tmp_path, DETECTION_RULES)) as client:
        wrong = client.post("/api/login", json={"username": ALICE, "password": "nope"})
        assert (wrong.status_code, wrong.headers["x-riskgate-decision"]) == (401, "allow")
        assert login(client).headers["x-riskgate-decision"] == "allow"
        assert login(client).headers["x-riskgate-decision"] == "block"


@pytest.mark.parametrize(("user_agent", "headers", "decision"), [
    ("RiskgateAir/5.3.0 (Android 14; Pixel 8) okhttp/4.12.0", {"x-app-version": "5.3.0"},
     "allow"),
    ("RiskgateAir/5.3.0 (com.riskgate.air; build:530; iOS 17.4) Alamofire/5.8.1",
     {"x-app-version": "5.3.0"}, "allow"),
    ("okhttp/4.12.0", {}, "challenge"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/116.0.0.0 Safari/537.36", {"accept": "*/*"}, "block"),
])
def test_the_shipped_pack_lets_the_airlines_app_sign_in_and_stops_scripts(
    tmp_path: Path, redis_url: str, user_agent: str, headers: dict[str, str], decision: str,
) -> None:
    with gateway(tmp_path, redis_url, REPO / "rules") as client:
        answer = login(client, None, **{"user-agent": user_agent, "accept-encoding": "gzip",
                                        **headers})
        assert answer.headers["x-riskgate-decision"] == decision
