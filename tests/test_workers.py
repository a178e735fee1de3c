"""``riskgate serve --workers N``: N processes that enforce as one (issue 13).

Which worker accepts a connection is the kernel's choice, so the tests choose for it:
a worker stopped with SIGSTOP accepts nothing, and the other one takes every request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from support import only, riskgate_serve, worker_pids, write_rules

SECRET = "workers-test-secret-0123"
TOKEN = "admin-token-for-workers"
RULES = """
counters:
  attempts_per_ip: {events: [login], key: ip, window: 1h}
rules:
  - id: login-too-many-attempts
    description: An address trying more than five logins in an hour is stopped
    events: [login]
    when: counters.attempts_per_ip > 5
    action: block
"""


def decide(base: str, ip: str) -> str:
    # A new connection each time: a kept-alive one would stay with the worker it has.
    response = httpx.post(f"{base}/v1/decide", json={"event": "login", "ip": ip}, timeout=5)
    assert response.status_code == 200, response.text
    decision: str = response.json()["decision"]
    return decision


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    rules = write_rules(tmp_path, RULES)
    path = tmp_path / "riskgate.yaml"
    path.write_text(f"secret: {SECRET}\nstore: {redis_url}\nrules: {rules}\n"
                    f"decision_log: null\nadmin_tokens: [{TOKEN}]\n")
    return path


def test_two_workers_enforce_one_limit_together(config: Path) -> None:
    with riskgate_serve(config, workers=2) as (base, server):
        first, second = workers = worker_pids(server.pid)
        assert len(workers) == 2
        with only(first, workers):
            seen_by_first = [decide(base, "203.0.113.5") for _ in range(5)]
        with only(second, workers):
            # The second worker has not seen this address, but the store has.
            seen_by_second = [decide(base, "203.0.113.5") for _ in range(2)]
        with only(first, workers):
            scraped = httpx.get(f"{base}/metrics", timeout=5).text
    assert seen_by_first == ["allow"] * 5
    assert seen_by_second == ["block", "block"]
    # Either worker's /metrics counts the decisions of both.
    assert 'riskgate_decisions_total{decision="allow",event="login"} 5.0' in scraped
    assert 'riskgate_decisions_total{decision="block",event="login"} 2.0' in scraped


def test_a_runtime_block_added_through_one_worker_is_enforced_by_the_other(
    config: Path,
) -> None:
    with riskgate_serve(config, workers=2) as (base, server):
        first, second = workers = worker_pids(server.pid)
        with only(second, workers):
            assert decide(base, "198.51.100.9") == "allow"  # the second has its lists cached
        with only(first, workers):
            added = httpx.post(f"{base}/admin/lists", timeout=5,
                               headers={"authorization": f"Bearer {TOKEN}"},
                               json={"kind": "ip", "value": "198.51.100.9", "action": "block",
                                     "ttl": "1h", "reason": "scalping run"})
            assert added.status_code == 201, added.text
        with only(second, workers):
            assert decide(base, "198.51.100.9") == "block"
