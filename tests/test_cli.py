"""The `riskgate` command line (CONTRACT §6) as an operator uses it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

import riskgate
from riskgate.http.demo import DEMO_PASSWORD, demo_upstream
from support import free_port, interrupt_process, riskgate_serve, write_rules

REPO = Path(__file__).resolve().parents[1]
SECRET = "cli-test-secret-0123456789"


def riskgate_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "riskgate", *args], capture_output=True,
                          text=True, timeout=60, env=env, check=False)


def test_version() -> None:
    result = riskgate_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"riskgate {riskgate.__version__}")


def test_serve_with_a_bad_config_exits_non_zero_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "riskgate.yaml"
    config.write_text("secret: ${RG_CLI_UNSET}\nstore: mysql://db\n")
    write_rules(tmp_path, "rules: []\n")
    result = riskgate_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"riskgate: {config}:1:9: environment variable RG_CLI_UNSET is not set; export it or "
        "write the value in the file",
        f"riskgate: {config}:2:8: store: `mysql://db` is not a store URL; use memory://, "
        "redis://host:port/db, rediss://host:port/db, unix:///path/to/redis.sock or "
        "redis+cluster://host:port[,host:port...]",
    ]


def test_serve_reports_config_and_rule_problems_in_one_run(tmp_path: Path) -> None:
    config = tmp_path / "riskgate.yaml"
    config.write_text("secret: short\nmax_body_bytes: 0\n")
    rules = write_rules(tmp_path, "rules:\n  - {id: x, when: counters.nope > 1, score: 1}\n")
    result = riskgate_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"riskgate: {config}:2:17: max_body_bytes must be positive",
        f"riskgate: {config}:1:9: `secret` is 5 characters long; use a random value of at "
        "least 16",
        f"riskgate: {rules / 'rules.yaml'}:2:19: rule x: unknown counter `nope`; no counters "
        "are declared: add it under `counters:`",
    ]


def test_serve_with_a_missing_config_file_says_so(tmp_path: Path) -> None:
    result = riskgate_cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr == (f"riskgate: {tmp_path / 'nope.yaml'}: cannot read the configuration "
                             "file: No such file or directory\n")


def test_rules_check_passes_the_shipped_pack() -> None:
    result = riskgate_cli("rules", "check", str(REPO / "rules"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_rules_check_fails_on_a_broken_rule_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "rules:\n  - id: r1\n    events: [login]\n    when: counters.nope > 1\n    score: 5\n"
    )
    result = riskgate_cli("rules", "check", str(tmp_path))
    assert result.returncode == 1
    assert "bad.yaml:4:" in result.stderr
    assert "nope" in result.stderr


def test_rules_test_runs_the_shipped_packs_tests() -> None:
    result = riskgate_cli("rules", "test", str(REPO / "rules"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 failed" in result.stdout.splitlines()[-1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "riskgate.yaml"
    config.write_text(f"secret: ${{RG_SECRET}}\nrules: {REPO / 'rules'}\ndecision_log: null\n")
    with riskgate_serve(config, env={"RG_SECRET": SECRET}) as (base, _):
        yield base


def test_serve_answers_the_decision_api_over_http(served: str) -> None:
    answer = httpx.post(f"{served}/v1/decide", json={"event": "login", "ip": "198.51.100.7"})
    assert answer.status_code == 200
    assert answer.json()["decision"] in {"allow", "challenge", "block"}
    assert httpx.get(f"{served}/readyz").status_code == 200
    metrics = httpx.get(f"{served}/metrics").text
    assert 'riskgate_decisions_total{decision="' in metrics



def test_serve_as_a_proxy_passes_the_upstreams_date_and_server_headers_once(
    tmp_path: Path,
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # handed to the server: no race for the port
    upstream = uvicorn.Server(uvicorn.Config(demo_upstream(), log_level="warning"))
    thread = threading.Thread(target=upstream.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "none.yaml").write_text("rules: []\n")  # every request allowed
    config = tmp_path / "riskgate.yaml"
    config.write_text(
        f"secret: {SECRET}\ndecision_log: null\n"
        f"upstream: http://127.0.0.1:{sock.getsockname()[1]}\n"
        "routes:\n  - {path: /api/bookings, method: POST, event: booking}\n")
    try:
        with riskgate_serve(config) as (base, _):
            token = httpx.post(f"{base}/api/login", json={
                "username": "alice@example.com", "password": DEMO_PASSWORD}).json()["token"]
            response = httpx.post(f"{base}/api/bookings", json={"flight": "RG100", "seats": 1},
                                  headers={"x-account-id": "alice@example.com",
                                           "authorization": f"Bearer {token}"})
        assert (response.status_code, response.headers["x-riskgate-decision"]) == (201, "allow")
        assert len(response.headers.get_list("date")) == 1
        assert response.headers.get_list("server") == ["uvicorn"]  # the upstream's
    finally:
        upstream.should_exit = True
        thread.join(timeout=10)


def test_serve_with_an_empty_config_file_names_the_missing_secret(tmp_path: Path) -> None:
    config = tmp_path / "riskgate.yaml"
    config.write_text("# nothing yet\n")
    write_rules(tmp_path, "rules: []\n")
    result = riskgate_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (f"riskgate: {config}: `secret` is missing; set `secret: "
                             "${RISKGATE_SECRET}` and export a random value of at least 16 "
                             "characters\n")


def test_replay_of_a_file_that_is_no_decision_log_exits_non_zero_with_one_line(
    tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_text("GET / HTTP/1.1 200\nGET /x HTTP/1.1 404\n")
    result = riskgate_cli("replay", str(log), "--rules", str(REPO / "rules"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"riskgate: {log}: not a decision log: none of its 2 lines could "
                             "be read (line 1: not JSON)\n")


def test_the_demo_prints_its_admin_token_and_where_its_decisions_go(tmp_path: Path) -> None:
    port, upstream_port = free_port(), free_port()
    token = "demo-cli-admin-token-0123456"
    process = subprocess.Popen(
        [sys.executable, "-m", "riskgate", "demo", "--config",
         str(REPO / "examples" / "demo.yaml"), "--port", str(port),
         "--upstream-port", str(upstream_port)],
        env={**os.environ, "RISKGATE_SECRET": "demo-cli-secret-0123456789",
             "RISKGATE_ADMIN_TOKEN": token},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        banner = []
        for line in process.stdout:  # bounded: the banner ends with its Ctrl-C line
            banner.append(line)
            if line.startswith("Ctrl-C stops both"):
                break
    finally:
        interrupt_process(process)
        if process.stdout is not None:
            process.stdout.close()
    text = "".join(banner)
    assert f'-H "Authorization: Bearer {token}"' in text
    assert f"one JSON line each in {REPO / 'examples' / 'demo-decisions.jsonl'}" in text
