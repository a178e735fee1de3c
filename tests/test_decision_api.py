"""The decision API as a frontend sees it (CONTRACT §2), on both store backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.config import Config, GeoIPPaths
from riskgate.http.app import create_app
from support import SHARED_DATA, free_port, write_rules

SECRET = "decision-api-test-secret"

RULES = """
counters:
  login_accounts_per_ip: {events: [login], key: ip, distinct: account, window: 10m}
  login_failures_per_account: {events: [login], key: account, on: [login_failed], window: 1h}
thresholds:
  login: {challenge: 50, block: 80}
rules:
  - id: login-credential-stuffing
    description: One IP tries many different accounts
    events: [login]
    when: counters.login_accounts_per_ip > 8
    score: 60
  - id: login-account-under-attack
    description: Five failed logins lock the account out for the window
    events: [login]
    when: counters.login_failures_per_account >= 5
    action: block
  - id: registration-watch
    description: A rule being tried out in shadow mode
    events: [registration]
    when: ip.version == 4
    score: 100
    mode: shadow
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path, RULES, "login.yaml")


JSON_TYPE = {"content-type": "application/json"}


def make_client(store: str, rules: Path, log: Path, **options: int) -> TestClient:
    config = Config(secret=SECRET, store=store, rules=rules, decision_log=str(log), **options)
    return TestClient(create_app(config))


@pytest.fixture
def client(store_uri: str, rules_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(store_uri, rules_dir, tmp_path / "decisions.jsonl", max_body_bytes=4096) as c:
        yield c


def decide(client: TestClient, **body: object) -> dict[str, object]:
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_a_plain_login_is_allowed_with_the_contract_shape(client: TestClient) -> None:
    answer = decide(client, event="login", ip="198.51.100.7", account="alice@example.com",
                    device_id="d-7f3a", user_agent="Mozilla/5.0", headers={"Accept": "*/*"},
                    attributes={"email": "alice@example.com"})
    assert set(answer) == {"request_id", "decision", "score", "reasons", "degraded"}
    assert answer["decision"] == "allow"
    assert answer["score"] == 0.0
    assert answer["reasons"] == []
    assert answer["degraded"] is False


def test_request_ids_are_unique(client: TestClient) -> None:
    ids = {decide(client, event="booking", ip="198.51.100.7")["request_id"] for _ in range(20)}
    assert len(ids) == 20


def test_one_ip_trying_many_accounts_is_challenged(client: TestClient) -> None:
    answers = [decide(client, event="login", ip="203.0.113.5", account=f"user{n}@example.com")
               for n in range(10)]
    assert [a["decision"] for a in answers[:8]] == ["allow"] * 8
    assert answers[9]["decision"] == "challenge"
    assert answers[9]["score"] == 60.0
    assert answers[9]["reasons"] == [
        {"rule": "login-credential-stuffing", "score": 60.0, "action": None}
    ]
    # A traveller on another network is not affected.
    assert decide(client, event="login", ip="198.51.100.9", account="bob@example.com")[
        "decision"] == "allow"


def test_five_failed_logins_reported_as_feedback_block_the_account(client: TestClient) -> None:
    for _ in range(5):
        answer = decide(client, event="login", ip="192.0.2.10", account="carol@example.com")
        assert answer["decision"] == "allow"
        response = client.post("/v1/feedback", json={"request_id": answer["request_id"],
                                                      "outcome": "login_failed"})
        assert response.status_code == 204
    blocked = decide(client, event="login", ip="192.0.2.11", account="carol@example.com")
    assert blocked["decision"] == "block"
    assert blocked["reasons"] == [
        {"rule": "login-account-under-attack", "score": 0.0, "action": "block"}
    ]
    assert decide(client, event="login", ip="192.0.2.10", account="dave@example.com")[
        "decision"] == "allow"


def test_a_request_id_takes_one_outcome_and_a_replayed_one_is_a_409(
    client: TestClient
) -> None:
    answers = [decide(client, event="login", ip="192.0.2.30", account="gina@example.com")
               for _ in range(3)]
    first = client.post("/v1/feedback", json={"request_id": answers[0]["request_id"],
                                              "outcome": "login_failed"})
    replayed = [client.post("/v1/feedback", json={"request_id": answers[0]["request_id"],
                                                  "outcome": outcome})
                for outcome in ("login_failed", "login_failed", "legit")]
    assert first.status_code == 204
    assert [r.status_code for r in replayed] == [409, 409, 409]
    assert replayed[0].json() == {
        "error": "this request_id already took an outcome; each decision takes one",
        "field": "request_id"}
    # The replays counted nothing: two more real failures stay under the rule's five.
    for answer in answers[1:]:
        assert client.post("/v1/feedback", json={"request_id": answer["request_id"],
                                                 "outcome": "login_failed"}).status_code == 204
    assert decide(client, event="login", ip="192.0.2.31", account="gina@example.com")[
        "decision"] == "allow"


def test_other_outcomes_do_not_count_as_failed_logins(client: TestClient) -> None:
    for outcome in ["login_succeeded", "legit", "challenge_passed"] * 3:
        answer = decide(client, event="login", ip="192.0.2.20", account="erin@example.com")
        response = client.post("/v1/feedback", json={"request_id": answer["request_id"],
                                                      "outcome": outcome})
        assert response.status_code == 204
    assert decide(client, event="login", ip="192.0.2.20", account="erin@example.com")[
        "decision"] == "allow"


def test_shadow_rules_are_logged_but_never_decide_or_show(client: TestClient,
                                                          tmp_path: Path) -> None:
    answer = decide(client, event="registration", ip="198.51.100.7")
    assert (answer["decision"], answer["score"], answer["reasons"]) == ("allow", 0.0, [])
    client.__exit__(None, None, None)  # flushes the decision log
    lines = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    (line,) = [entry for entry in lines if entry.get("request_id") == answer["request_id"]]
    assert line["shadow"] == ["registration-watch"]
    assert line["decision"] == "allow"


def test_the_decision_log_has_one_line_per_decision_without_raw_identities(
    client: TestClient, tmp_path: Path
) -> None:
    answer = decide(client, event="login", ip="198.51.100.7", account="frank@example.com",
                    device_id="device-frank", attributes={"email": "frank@example.com"})
    client.__exit__(None, None, None)
    text = (tmp_path / "decisions.jsonl").read_text()
    assert "frank" not in text
    (line,) = [json.loads(raw) for raw in text.splitlines()]
    assert line["request_id"] == answer["request_id"]
    assert line["event"] == "login"
    assert line["decision"] == "allow"
    assert line["degraded"] is False
    assert len(line["rules_version"]) >= 8
    assert line["latency_ms"] > 0
    assert line["facts"]["account.email_domain"] == "example.com"


@pytest.mark.parametrize(
    ("body", "field", "error"),
    [
        (b"{not json", None, "the body is not valid JSON"),
        (b"", None, "the body is not valid JSON"),
        (b"\xff\xfe", None, "the body is not valid JSON"),
        (b'[{"event": "login"}]', None, "the body must be a JSON object"),
        (b'{"event": "login", "ip": NaN}', None, "the body is not valid JSON"),
        (b"[" * 4000, None, "the body is nested too deeply to decode; send at most a few "
                            "levels of objects and arrays"),
        (b'{"event": "login", "ip": "1.2.3.4", "attributes": {"seats": 1e400}}',
         "attributes.seats", "`attributes.seats` is not a finite number; send a number "
                             "within ±1.8e308"),
        (b'{"event": "login", "ip": "1.2.3.4", "attributes": {"seats": -2E+999}}',
         "attributes.seats", "`attributes.seats` is not a finite number; send a number "
                             "within ±1.8e308"),
        (b'{"ip": "198.51.100.7"}', "event", "`event` is required"),
        (b'{"event": 3, "ip": "198.51.100.7"}', "event", "`event` must be a string"),
        (b'{"event": "checkin", "ip": "198.51.100.7"}', "event",
         "unknown event `checkin`; use one of registration, login, promotion, booking"),
        (b'{"event": "login"}', "ip", "`ip` is required"),
        (b'{"event": "login", "ip": 3232235777}', "ip", "`ip` must be a string"),
        (b'{"event": "login", "ip": "198.51.100.256"}', "ip",
         "`ip` is not a valid address: '198.51.100.256' does not appear to be an IPv4 or IPv6 "
         "address"),
        (b'{"event": "login", "ip": "010.1.1.1"}', "ip",
         "`ip` is not a valid address: '010.1.1.1' does not appear to be an IPv4 or IPv6 address"),
        (b'{"event": "login", "ip": "fe80::1%eth0"}', "ip",
         "`ip` is not a valid address: `fe80::1%eth0` has a zone id; send the address without "
         "`%...`"),
        (b'{"event": "login", "ip": "198.51.100.7", "account": 42}', "account",
         "`account` must be a string"),
        (b'{"event": "login", "ip": "198.51.100.7", "headers": ["accept"]}', "headers",
         "`headers` must be an object of header name to string value"),
        (b'{"event": "login", "ip": "198.51.100.7", "headers": {"accept": 1}}', "headers.accept",
         "header `accept` must be a string"),
        (b'{"event": "login", "ip": "198.51.100.7", "attributes": {"seats": [1]}}',
         "attributes.seats", "attribute `seats` must be a string, number, boolean or null"),
        (b'{"event": "login", "ip": "198.51.100.7", "device": "d1"}', "device",
         "unknown field `device`; did you mean `device_id`?"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: TestClient, body: bytes, field: str | None, error: str
) -> None:
    response = client.post("/v1/decide", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": error, "field": field}


SURROGATE_ERROR = ("holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
                   "valid Unicode; send the text as UTF-8")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event": "login", "ip": "198.51.100.7", "account": "\\ud800"}', "account"),
        (b'{"event": "login", "ip": "198.51.100.7", "device_id": "d\\udc00"}', "device_id"),
        (b'{"event": "login", "ip": "198.51.100.7", "user_agent": "\\uDBFF"}', "user_agent"),
        (b'{"event": "\\ud800", "ip": "198.51.100.7"}', "event"),
        (b'{"event": "login", "ip": "198.51.100.7", "headers": {"x\\ud800": "v"}}',
         "headers.x\\ud800"),
        (b'{"\\udc00": 1}', "\\udc00"),
    ],
)
def test_a_lone_surrogate_escape_is_a_400_naming_the_field_not_a_500(
    client: TestClient, body: bytes, field: str
) -> None:
    response = client.post("/v1/decide", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": f"`{field}` {SURROGATE_ERROR}", "field": field}


def test_a_valid_surrogate_pair_escape_is_decided(client: TestClient) -> None:
    response = client.post("/v1/decide", content=b'{"event": "login", "ip": "198.51.100.7", '
                           b'"account": "\\ud83d\\ude00@example.com"}', headers=JSON_TYPE)
    assert (response.status_code, response.json()["decision"]) == (200, "allow")


def test_an_attribute_integer_past_64_bits_is_a_400_and_never_costs_a_log_line(
    client: TestClient, tmp_path: Path
) -> None:
    response = client.post("/v1/decide", content=b'{"event": "booking", "ip": "198.51.100.7", '
                           b'"attributes": {"seats": 123456789012345678901234567890}}',
                           headers=JSON_TYPE)
    assert response.status_code == 400
    assert response.json() == {
        "error": "attribute `seats` is out of range: integers must fit in 64 bits",
        "field": "attributes.seats"}
    answer = decide(client, event="booking", ip="198.51.100.7",
                    attributes={"seats": 2**64 - 1})
    client.__exit__(None, None, None)
    lines = [json.loads(raw) for raw in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [answer["request_id"]]


@pytest.mark.parametrize("number", [b"2e19", b"-1e19", b"1.7976931348623157e308"])
def test_a_number_past_64_bits_is_a_400_however_it_is_written(
    client: TestClient, number: bytes
) -> None:
    # JSON has one number type: 2e19 is the integer 20000000000000000000, refused as
    # that integer is; /openapi.json documents one range for both spellings.
    response = client.post("/v1/decide", content=b'{"event": "booking", "ip": "198.51.100.7", '
                           b'"attributes": {"seats": ' + number + b"}}", headers=JSON_TYPE)
    assert response.status_code == 400
    assert response.json()["field"] == "attributes.seats"
    assert decide(client, event="booking", ip="198.51.100.7",
                  attributes={"rate": 1.8e19, "share": -0.5})["decision"] == "allow"


@pytest.mark.parametrize(
    ("body", "field", "error"),
    [
        ({"headers": {"accept": "a" * 4097}}, "headers.accept",
         "header `accept` is longer than 4096 characters"),
        ({"attributes": {"promo_code": "a" * 4097}}, "attributes.promo_code",
         "attribute `promo_code` is longer than 4096 characters"),
        ({"user_agent": "a" * 4097}, "user_agent", "`user_agent` is longer than 4096 characters"),
    ],
)
def test_text_longer_than_any_parser_should_see_is_a_400_naming_the_field(
    store_uri: str, rules_dir: Path, tmp_path: Path, body: dict[str, object], field: str,
    error: str,
) -> None:
    with make_client(store_uri, rules_dir, tmp_path / "decisions.jsonl") as client:
        response = client.post("/v1/decide",
                               json={"event": "login", "ip": "198.51.100.7", **body})
    assert response.status_code == 400
    assert response.json() == {"error": error, "field": field}


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/feedback"])
@pytest.mark.parametrize(("content_type", "named"), [
    (None, "no content type"), ("text/plain", "text/plain"),
    ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
    ("multipart/form-data; boundary=x", "multipart/form-data"),
])
def test_bodies_not_sent_as_json_are_a_415_so_other_sites_cannot_post_them(
    client: TestClient, path: str, content_type: str | None, named: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=b'{"event": "login", "ip": "198.51.100.7"}',
                           headers=headers)
    assert response.status_code == 415
    assert response.json() == {
        "error": f"the body must be sent as Content-Type: application/json, not {named}",
        "field": None}


def test_a_body_over_max_body_bytes_is_a_413(client: TestClient) -> None:
    body = json.dumps({"event": "login", "ip": "198.51.100.7", "attributes": {"x": "a" * 5000}})
    response = client.post("/v1/decide", content=body, headers=JSON_TYPE)
    assert response.status_code == 413
    assert response.json() == {"error": "the body is larger than 4096 bytes", "field": None}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield body[:3000].encode()
        yield body[3000:].encode()

    assert client.post("/v1/decide", content=chunks(), headers=JSON_TYPE).status_code == 413


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        ({"request_id": "0" * 24, "outcome": "fraud"}, 404,
         {"error": "unknown request_id: no recent decision has this id", "field": "request_id"}),
        ({"outcome": "fraud"}, 400,
         {"error": "`request_id` is required: the id /v1/decide answered", "field": "request_id"}),
        ({"request_id": "abc", "outcome": "stolen"}, 400,
         {"error": "`outcome` must be one of login_failed, login_succeeded, challenge_passed, "
                   "challenge_failed, fraud, legit", "field": "outcome"}),
    ],
)
def test_bad_feedback_is_refused_clearly(
    client: TestClient, body: dict[str, str], status: int, answer: dict[str, str]
) -> None:
    response = client.post("/v1/feedback", json=body)
    assert (response.status_code, response.json()) == (status, answer)


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_without_its_store_riskgate_decides_degraded_and_is_not_ready(
    rules_dir: Path, tmp_path: Path
) -> None:
    store = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with make_client(store, rules_dir, tmp_path / "d.jsonl") as client:
        answer = decide(client, event="login", ip="198.51.100.7", account="gina@example.com")
        assert answer["decision"] == "allow"
        assert answer["degraded"] is True
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert str(store.rsplit(":", 1)[1].split("/")[0]) in ready.json()["reason"]
        assert client.get("/healthz").status_code == 200


MAXMIND = SHARED_DATA / "maxmind" / "test-data"


def test_geoip_databases_from_the_config_reach_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "geo.yaml").write_text(
        "rules:\n  - id: from-gb\n    events: [login]\n    when: ip.country == 'GB'\n"
        "    score: 60\n"
    )
    config = Config(secret=SECRET, rules=rules, decision_log=None,
                    geoip=GeoIPPaths(city=MAXMIND / "GeoIP2-City-Test.mmdb"))
    with TestClient(create_app(config)) as client:
        # 81.2.69.142 is London in MaxMind's test data, 89.160.20.112 Linköping.
        london = decide(client, event="login", ip="81.2.69.142")
        assert (london["decision"], london["degraded"]) == ("challenge", False)
        assert decide(client, event="login", ip="89.160.20.112")["decision"] == "allow"


def test_a_broken_geoip_database_degrades_decisions_instead_of_failing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "empty.yaml").write_text("rules: []\n")
    broken = MAXMIND / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
    config = Config(secret=SECRET, rules=rules, decision_log=None,
                    geoip=GeoIPPaths(city=broken))
    with TestClient(create_app(config)) as client:
        answer = decide(client, event="login", ip="81.2.69.142")
        assert (answer["decision"], answer["degraded"]) == ("allow", True)
    assert any(str(broken) in record.getMessage() and record.levelname == "WARNING"
               for record in caplog.records)


def test_the_decision_api_takes_post_only(client: TestClient) -> None:
    response = client.get("/v1/decide")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json() == {"error": "POST a JSON body to /v1/decide", "field": None}


def test_a_device_on_a_device_list_is_blocked_through_the_api_also_after_a_reload(
    store_uri: str, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path, """
lists:
  stolen_devices: {file: stolen.txt, type: device}
rules:
  - {id: stolen-device, when: device.key in lists.stolen_devices, action: block}
""")
    (rules / "stolen.txt").write_text("d-stolen-1\n")
    token = "device-list-admin-token-0123456789"
    config = Config(secret=SECRET, store=store_uri, rules=rules, decision_log=None,
                    admin_tokens=(token,), watch_rules=False)
    with TestClient(create_app(config)) as client:
        listed = decide(client, event="login", ip="198.51.100.7", device_id="d-stolen-1")
        other = decide(client, event="login", ip="198.51.100.7", device_id="d-mine")
        reloaded = client.post("/admin/rules/reload",
                               headers={"authorization": f"Bearer {token}"})
        after_reload = decide(client, event="login", ip="198.51.100.7", device_id="d-stolen-1")
    assert reloaded.status_code == 200
    assert (listed["decision"], listed["reasons"]) == (
        "block", [{"rule": "stolen-device", "score": 0.0, "action": "block"}])
    assert other["decision"] == "allow"
    assert after_reload["decision"] == "block"
