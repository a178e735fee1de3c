"""Signals that remember: a device's first sighting and an account's last login place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from riskgate.config import Config, GeoIPPaths
from riskgate.http.app import create_app
from support import SHARED_DATA

MAXMIND = SHARED_DATA / "maxmind" / "test-data"
# In MaxMind's test City database: London, and Linköping (Sweden), 1,400 km apart.
LONDON, LINKOPING = "81.2.69.142", "89.160.20.112"

RULES = """
rules:
  - id: impossible-travel
    events: [login]
    when: account.travel_speed_kmh > 1000
    score: 60
  - id: new-country
    events: [login]
    when: account.new_country
    score: 10
"""


@pytest.fixture
def client(store_uri: str, tmp_path: Path) -> Iterator[TestClient]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "travel.yaml").write_text(RULES)
    config = Config(secret="history-test-secret-1", store=store_uri, rules=rules,
                    decision_log=str(tmp_path / "decisions.jsonl"),
                    geoip=GeoIPPaths(city=MAXMIND / "GeoIP2-City-Test.mmdb"))
    with TestClient(create_app(config)) as c:
        yield c


def login(client: TestClient, ip: str, account: str = "ann@example.com",
          device: str | None = "dev-1") -> Any:
    answer = client.post("/v1/decide", json={"event": "login", "ip": ip, "account": account,
                                             "device_id": device})
    assert answer.status_code == 200
    return answer.json()


def logged_facts(client: TestClient, tmp_path: Path) -> list[Any]:
    client.__exit__(None, None, None)  # flush the decision log
    return [json.loads(line)["facts"]
            for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]


def test_a_login_from_another_continent_seconds_later_is_impossible_travel(
    client: TestClient,
) -> None:
    assert login(client, LONDON)["reasons"] == []
    answer = login(client, LINKOPING)
    assert [r["rule"] for r in answer["reasons"]] == ["impossible-travel", "new-country"]
    # Another account from the same place has no history, so nothing to compare.
    assert login(client, LINKOPING, account="bob@example.com")["reasons"] == []


def test_logging_in_again_from_the_same_city_is_not_travel(client: TestClient,
                                                          tmp_path: Path) -> None:
    login(client, LONDON)
    login(client, LONDON)
    second = logged_facts(client, tmp_path)[1]
    assert second["account.travel_speed_kmh"] == 0.0
    assert second["account.new_country"] is False


def test_a_device_is_new_the_first_time_and_ages_after(client: TestClient,
                                                      tmp_path: Path) -> None:
    login(client, LONDON, device="dev-new")
    login(client, LONDON, device="dev-new")
    login(client, LONDON, device=None)
    first, second, third = logged_facts(client, tmp_path)
    assert first["device.first_seen_age"] == 0.0
    assert 0.0 < second["device.first_seen_age"] < 60.0
    assert "device.first_seen_age" not in third  # no device id: unknown, left out of the log
