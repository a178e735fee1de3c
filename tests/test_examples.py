"""The examples a new user copies from keep working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                         "Firefox/128.0", "accept-language": "en", "accept-encoding": "gzip",
           "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}


@pytest.mark.parametrize("name", ["demo.yaml", "riskgate.yaml", "middleware.yaml"])
def test_example_configurations_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGATE_SECRET", "example-secret-0123456789")
    config = load_config(EXAMPLES / name)
    assert config.rules.resolve() == (EXAMPLES.parent / "rules").resolve()


def test_the_middleware_example_scores_its_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGATE_SECRET", "example-secret-0123456789")
    spec = importlib.util.spec_from_file_location("middleware_app",
                                                  EXAMPLES / "middleware_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with TestClient(module.app) as client:
        booked = client.post("/api/bookings", json={"flight": "CA1234", "seats": 2},
                             headers={**BROWSER, "x-account-id": "acct-1"})
        assert (booked.status_code, booked.headers["x-riskgate-decision"]) == (201, "allow")
        refused = client.post("/api/login", json={"username": "ann", "password": "nope"},
                              headers=BROWSER)
        assert (refused.status_code, refused.headers["x-riskgate-decision"]) == (401, "allow")
        scripted = client.post("/api/bookings", json={"flight": "CA1234"},
                               headers={"user-agent": "python-requests/2.31.0"})
        assert scripted.headers["x-riskgate-decision"] == "challenge"
