"""The examples a new user copies from keep working."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from riskgate.config import load_config
from riskgate.observability import metrics
from support import RedisServer, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                         "Firefox/128.0", "accept-language": "en", "accept-encoding": "gzip",
           "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}


@pytest.mark.parametrize("name", ["demo.yaml", "riskgate.yaml", "middleware.yaml"])
def test_example_configurations_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGATE_SECRET", "example-secret-0123456789")
    monkeypatch.setenv("RISKGATE_ADMIN_TOKEN", "example-admin-token-0123456789")
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


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_the_compose_examples_give_the_container_a_valid_store_and_secret(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = yaml.safe_load((EXAMPLES / name).read_text())["services"]
    environment = services["riskgate"]["environment"]
    monkeypatch.setenv("RISKGATE_STORE", environment["RISKGATE_STORE"])
    monkeypatch.setenv("RISKGATE_SECRET", "example-secret-0123456789")
    config = load_config(EXAMPLES / "container.yaml")  # the image's configuration
    assert config.store == environment["RISKGATE_STORE"]
    assert environment["RISKGATE_SECRET"].startswith("${RISKGATE_SECRET:?")


def test_the_cluster_nodes_configuration_is_one_redis_server_accepts(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    node = RedisServer(tmp_path, redis_server.executable, extra_args=(
        "--include", str(EXAMPLES / "redis-cluster.conf"), "--cluster-port", str(free_port()),
        "--cluster-announce-hostname", "redis-1"))
    node.start()
    try:
        with node.client() as client:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
            assert client.cluster("info")["cluster_state"] == "fail"  # no slots until joined
    finally:
        node.stop()


def test_the_grafana_dashboard_queries_only_metrics_riskgate_exports() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\briskgate_[a-z_]+", target["expr"])}
    # By family, so that labelled series nothing has counted yet are there too.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {family.name + suffix for family in metrics.REGISTRY.collect()
                for suffix in suffixes[family.type]}
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, queried - exported
