"""An analyst's day with a running gateway and a real Redis, end to end.

Write a rule with a typo and get a precise error; fix it; run its tests; replay the
day's decisions to see its effect; deploy it in shadow and watch its hits; enforce
it; roll back by editing the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support import riskgate_serve, write_rules

TOKEN = "analyst-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}

BASE_RULES = """\
counters:
  login_accounts_per_ip: {events: [login], key: ip, distinct: account, window: 10m}
thresholds:
  login: {challenge: 50, block: 90}
rules:
  - id: login-stuffing
    description: One address tries very many accounts
    events: [login]
    when: counters.login_accounts_per_ip > 20
    score: 60
"""

NEW_RULE = """\
  - id: login-many-accounts
    description: One address tries a handful of accounts
    events: [login]
    when: {when}
    score: 60
    mode: {mode}
"""

NEW_TEST = """\
tests:
  - name: five accounts from one address are challenged
    event: {event: login, ip: 203.0.113.9}
    counters: {login_accounts_per_ip: 5}
    expect: {decision: challenge, rules: [login-many-accounts]}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "riskgate", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def logins(client: httpx.Client, ip: str, accounts: int) -> list[dict[str, object]]:
    answers = []
    for n in range(accounts):
        response = client.post("/v1/decide", json={"event": "login", "ip": ip,
                                                    "account": f"user{n}@example.com"})
        assert response.status_code == 200
        answers.append(response.json())
    return answers


def shadow_hits(client: httpx.Client, rule: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("riskgate_rule_hits_total{") and f'rule="{rule}"' in line \
                and 'mode="shadow"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_lines(log: Path, count: int) -> None:
    for _ in range(100):  # the decision log is written off the event loop
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log} did not reach {count} lines")


def test_an_analyst_takes_a_rule_from_typo_to_enforced_and_back(
    tmp_path: Path, redis_url: str
) -> None:
    rules = write_rules(tmp_path, BASE_RULES, "login.yaml")
    rule_file = rules / "login.yaml"
    log = tmp_path / "decisions.jsonl"
    config = tmp_path / "riskgate.yaml"
    config.write_text(f"secret: analyst-secret-0123456789\nstore: {redis_url}\nrules: {rules}\n"
                      f"decision_log: {log}\nwatch_rules: false\nadmin_tokens: [{TOKEN}]\n")
    with riskgate_serve(config) as (base, _), httpx.Client(base_url=base) as client:
        original = client.get("/readyz").json()["rules_version"]
        assert [a["decision"] for a in logins(client, "203.0.113.9", 6)] == ["allow"] * 6

        # 1. A typo: refused with file, line, column, rule id and the fix; nothing changes.
        rule_file.write_text(BASE_RULES + NEW_RULE.format(
            when="counters.login_acounts_per_ip > 4", mode="enforce"))
        refused = client.post("/admin/rules/reload", headers=AUTH)
        assert refused.status_code == 422
        expected = (f"{rule_file}:14:11: rule login-many-accounts: unknown counter "
                    "`login_acounts_per_ip`; did you mean `login_accounts_per_ip`? known: "
                    "login_accounts_per_ip")
        assert refused.json()["problems"] == [expected]
        assert client.get("/readyz").json()["rules_version"] == original
        check = cli("rules", "check", str(rules))
        assert (check.returncode, check.stderr) == (1, f"riskgate: {expected}\n")

        # 2. Fixed, with a test of its own, deployed in shadow first.
        rule_file.write_text(BASE_RULES + NEW_RULE.format(
            when="counters.login_accounts_per_ip > 4", mode="shadow"))
        assert cli("rules", "test", str(rules)).returncode == 0

        # 3. Replay the day so far under the enforcing candidate: what would change.
        candidate = write_rules(tmp_path / "candidate", BASE_RULES + NEW_RULE.format(
            when="counters.login_accounts_per_ip > 4", mode="enforce") + NEW_TEST,
            "login.yaml")
        assert cli("rules", "test", str(candidate)).returncode == 0
        wait_for_lines(log, 6)
        replay = cli("replay", str(log), "--rules", str(candidate), "--json")
        assert replay.returncode == 0, replay.stderr
        report = json.loads(replay.stdout)
        # The 5th and 6th logins from that address saw more than 4 accounts.
        assert [(c["before"], c["after"], c["count"]) for c in report["changes"]] == [
            ("allow", "challenge", 2)]

        # 4. Shadow: hits are counted, decisions do not change.
        assert client.post("/admin/rules/reload", headers=AUTH).status_code == 200
        before = shadow_hits(client, "login-many-accounts")
        answers = logins(client, "198.51.100.20", 7)
        assert [a["decision"] for a in answers] == ["allow"] * 7
        assert all(a["reasons"] == [] for a in answers)
        assert shadow_hits(client, "login-many-accounts") - before == 3  # accounts 5 to 7

        # 5. Enforce: the same traffic is now challenged, and says why.
        rule_file.write_text(BASE_RULES + NEW_RULE.format(
            when="counters.login_accounts_per_ip > 4", mode="enforce"))
        assert client.post("/admin/rules/reload", headers=AUTH).status_code == 200
        answers = logins(client, "192.0.2.30", 5)
        assert answers[-1]["decision"] == "challenge"
        assert [r["rule"] for r in answers[-1]["reasons"]] == ["login-many-accounts"]

        # 6. Roll back by editing the file back: the original version serves again.
        rule_file.write_text(BASE_RULES)
        rolled_back = client.post("/admin/rules/reload", headers=AUTH)
        assert rolled_back.json()["version"] == original
        assert logins(client, "192.0.2.31", 5)[-1]["decision"] == "allow"
