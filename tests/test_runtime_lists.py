"""Runtime block/allow lists (issue 3): through the decision API, the engine, the
gateway's unscored routes, the admin API and the CLI, on both store backends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import Config
from riskgate.engine.core import Engine
from riskgate.http.app import create_app
from riskgate.http.middleware import RiskGateMiddleware
from riskgate.observability.decisionlog import DecisionLog
from riskgate.rules.loader import load_ruleset
from riskgate.rules.runtime_lists import RuntimeLists
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import Store, open_store
from support import RedisServer, write_rules

SECRET = "runtime-lists-test-secret-0123"
TOKEN = "admin-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
KEYER = Keyer(SECRET.encode())
SCORED_UA = "scored-bot/1.0"  # scores past the block threshold
BLOCKED_UA = "blocked-bot/1.0"  # a block action

pytestmark = pytest.mark.anyio

RULES = f"""
thresholds:
  login: {{challenge: 50, block: 80}}
rules:
  - id: high-score-agent
    when: device.user_agent == "{SCORED_UA}"
    score: 90
  - id: blocked-agent
    when: device.user_agent == "{BLOCKED_UA}"
    action: block
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path, RULES, "lists.yaml")


@pytest.fixture
def client(store_uri: str, rules_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    config = Config(secret=SECRET, store=store_uri, rules=rules_dir, admin_tokens=(TOKEN,),
                    decision_log=str(tmp_path / "decisions.jsonl"), watch_rules=False)
    with TestClient(create_app(config)) as test_client:
        yield test_client


def decide(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"event": "login", "ip": "198.51.100.7", **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def add(client: TestClient, **entry: Any) -> dict[str, Any]:
    body = {"kind": "ip", "value": "198.51.100.7", "action": "block", "ttl": "1h",
            "reason": "scalping run", **entry}
    response = client.post("/admin/lists", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def make_engine(store: Store, rules: Path, log: DecisionLog | None = None) -> Engine:
    return Engine(load_ruleset(rules), store, SignalExtractor(KEYER), KEYER, log,
                  runtime_lists=RuntimeLists(store, KEYER))


def lists_of(engine: Engine) -> RuntimeLists:
    assert engine.runtime_lists is not None
    return engine.runtime_lists


async def verdict(engine: Engine, now: float = 1000.0, **facts: Any) -> tuple[str, list[str]]:
    decision = await engine.decide_facts("r1", "login", {"ip": "198.51.100.7", **facts}, now)
    return decision.verdict.decision, [m.rule for m in decision.verdict.reasons]


# -- the decision API --------------------------------------------------------------------


def test_a_blocked_ip_is_blocked_from_the_next_decision_with_the_entry_as_reason(
    client: TestClient,
) -> None:
    assert decide(client)["decision"] == "allow"
    entry = add(client)
    answer = decide(client)
    assert answer["decision"] == "block"
    assert answer["reasons"] == [
        {"rule": f"runtime-block:{entry['id']}", "score": 0.0, "action": "block"}]
    assert decide(client, ip="198.51.100.8")["decision"] == "allow"


@pytest.mark.parametrize(("network", "ip", "expected"), [
    ("203.0.113.0/24", "203.0.113.0", "block"),
    ("203.0.113.0/24", "203.0.113.255", "block"),
    ("203.0.113.0/24", "203.0.114.0", "allow"),
    ("203.0.113.0/24", "203.0.112.255", "allow"),
    ("2001:db8::/32", "2001:db8:ffff::1", "block"),
    ("2001:db8::/32", "2001:db9::1", "allow"),
    ("0.0.0.0/0", "2001:db8::1", "allow"),  # an IPv4 network never covers IPv6
])
def test_a_cidr_entry_covers_its_addresses_and_no_others(
    client: TestClient, network: str, ip: str, expected: str
) -> None:
    add(client, kind="cidr", value=network)
    assert decide(client, ip=ip)["decision"] == expected


@pytest.mark.parametrize(("kind", "field"), [("device", "device_id"), ("account", "account")])
def test_device_and_account_entries_match_by_keyed_id_and_store_no_raw_id(
    client: TestClient, request: pytest.FixtureRequest, store_uri: str, tmp_path: Path,
    kind: str, field: str,
) -> None:
    raw = "raw-identity-4711@example.com"
    entry = add(client, kind=kind, value=raw, ip="192.0.2.1")
    assert entry["value"] == KEYER(kind, raw)
    listed = client.get("/admin/lists", headers=AUTH).json()["entries"]
    assert [e["value"] for e in listed] == [KEYER(kind, raw)]
    assert decide(client, **{field: raw})["decision"] == "block"
    assert decide(client, **{field: "someone-else"})["decision"] == "allow"

    log = (tmp_path / "decisions.jsonl").read_text()
    assert f"runtime-block:{entry['id']}" in log
    assert raw not in log
    if store_uri.startswith("redis"):
        server: RedisServer = request.getfixturevalue("redis_server")
        assert raw.encode() not in b"".join(everything_in_redis(server))


def everything_in_redis(server: RedisServer) -> Iterator[bytes]:
    """Every key and every stored value (strings, HyperLogLogs, hashes, sets, lists)."""
    with redis.Redis(port=server.port, socket_timeout=2) as raw:
        for key in raw.scan_iter():
            yield key
            kind = raw.type(key)
            if kind == b"string":
                yield raw.get(key) or b""
            elif kind == b"hash":
                yield from (part for pair in raw.hgetall(key).items() for part in pair)
            elif kind in (b"set", b"zset", b"list"):
                yield from {b"set": raw.smembers, b"zset": lambda k: raw.zrange(k, 0, -1),
                            b"list": lambda k: raw.lrange(k, 0, -1)}[kind](key)


@pytest.mark.parametrize(("user_agent", "expected"), [
    (SCORED_UA, "allow"),  # an allow entry beats any score
    (BLOCKED_UA, "block"),  # but never a block action
])
def test_an_allow_entry_lets_a_client_through_a_score_but_not_a_block_action(
    client: TestClient, user_agent: str, expected: str
) -> None:
    assert decide(client, user_agent=user_agent)["decision"] == "block"
    add(client, action="allow", reason="partner integration")
    assert decide(client, user_agent=user_agent)["decision"] == expected


def test_removing_an_entry_lifts_it(client: TestClient) -> None:
    entry = add(client)
    assert decide(client)["decision"] == "block"
    assert client.delete(f"/admin/lists/{entry['id']}", headers=AUTH).status_code == 204
    assert decide(client)["decision"] == "allow"
    assert client.get("/admin/lists", headers=AUTH).json() == {"entries": []}
    gone = client.delete(f"/admin/lists/{entry['id']}", headers=AUTH)
    assert (gone.status_code, gone.json()["field"]) == (404, "id")


# -- the engine: expiry, sharing, cost -----------------------------------------------------


async def test_entries_expire_at_their_ttl(store: Store, rules_dir: Path) -> None:
    engine = make_engine(store, rules_dir)
    lists = lists_of(engine)
    entry = await lists.add("ip", "198.51.100.7", "block", 60, "burst", now=1000.0)
    assert await verdict(engine, now=1059.9) == ("block", [entry.rule])
    assert await lists.refuses("198.51.100.7", None, None, 1059.9) == entry
    assert await verdict(engine, now=1060.0) == ("allow", [])
    assert await lists.refuses("198.51.100.7", None, None, 1060.0) is None
    assert await lists.entries(1060.0) == []


async def test_expired_entries_are_pruned_on_the_next_write(store: Store) -> None:
    lists = RuntimeLists(store, KEYER)
    old = await lists.add("ip", "192.0.2.1", "block", 10, "short", now=1000.0)
    new = await lists.add("ip", "192.0.2.2", "block", 600, "long", now=1020.0)
    assert await lists.entries(1020.0) == [new]
    assert await lists.remove(old.id, 1020.0) is False


async def test_two_engines_sharing_one_redis_see_each_others_entries(
    redis_url: str, rules_dir: Path
) -> None:
    first, second = open_store(redis_url), open_store(redis_url)
    try:
        a, b = make_engine(first, rules_dir), make_engine(second, rules_dir)
        assert await verdict(b) == ("allow", [])  # b caches "no entries"
        entry = await lists_of(a).add("ip", "198.51.100.7", "block", 3600, "seen on a", 1000.0)
        assert await verdict(b) == ("block", [entry.rule])
        assert await lists_of(a).remove(entry.id, 1000.0)
        assert await verdict(b) == ("allow", [])
    finally:
        await first.close()
        await second.close()


def evalsha_calls(server: RedisServer) -> int:
    with server.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_decision_stays_one_evalsha_while_the_lists_do_not_change(
    redis_server: RedisServer, redis_url: str, rules_dir: Path
) -> None:
    store = open_store(redis_url)
    try:
        engine = make_engine(store, rules_dir)
        editor = RuntimeLists(open_store(redis_url), KEYER)
        await editor.add("cidr", "203.0.113.0/24", "block", 3600, "farm", 1000.0)
        await editor.store.close()
        before = evalsha_calls(redis_server)
        await verdict(engine)  # the change: one decision plus one fetch of the document
        assert evalsha_calls(redis_server) - before == 2
        before = evalsha_calls(redis_server)
        for _ in range(5):
            await verdict(engine)
        assert evalsha_calls(redis_server) - before == 5
    finally:
        await store.close()


async def test_a_store_failure_decides_degraded_without_runtime_lists(
    redis_server: RedisServer, redis_url: str, rules_dir: Path
) -> None:
    store = open_store(redis_url, timeout=0.2)
    try:
        engine = make_engine(store, rules_dir)
        await lists_of(engine).add("ip", "198.51.100.7", "block", 3600, "x", 1000.0)
        with redis_server.stopped():
            decision = await engine.decide_facts("r1", "login", {"ip": "198.51.100.7"}, 1000.0)
        assert (decision.verdict.decision, decision.degraded) == ("allow", True)
    finally:
        await store.close()


# -- the admin API ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/admin/lists"), ("POST", "/admin/lists"), ("DELETE", "/admin/lists/abc"),
    ("POST", "/admin/rules/reload"),
])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_admin_endpoints_need_an_admin_token(
    client: TestClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("change", "field", "error"), [
    ({"kind": "asn"}, "kind", "`kind` must be one of ip, cidr, device, account"),
    ({"action": "challenge"}, "action", "`action` must be one of allow, block"),
    ({"value": "198.51.100.300"}, "value",
     "`value` '198.51.100.300' is not an IP address; networks take kind `cidr`"),
    ({"kind": "cidr", "value": "203.0.113.7/24"}, "value",
     "`value` is not a network: 203.0.113.7/24 has host bits set"),
    ({"kind": "device", "value": ""}, "value", "`value` must be the device id, 1 to 512 "
                                               "characters"),
    ({"ttl": 0}, "ttl", "`ttl` must be more than 0 and at most 2592000 seconds (30 days)"),
    ({"ttl": "31d"}, "ttl", "`ttl` must be more than 0 and at most 2592000 seconds (30 days)"),
    ({"ttl": "soon"}, "ttl", "`ttl` must be seconds or a duration like 30m, 1h, 7d; got 'soon'"),
    ({"reason": " "}, "reason", "`reason` is required, at most 200 characters: say why, for "
                                "whoever finds the entry later"),
    ({"reason": "x" * 201}, "reason", "`reason` is required, at most 200 characters: say why, "
                                      "for whoever finds the entry later"),
    ({"reason": None}, "reason", "`reason` is required and must be a string"),
])
def test_bad_list_entries_are_a_400_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str, error: str
) -> None:
    body = {"kind": "ip", "value": "198.51.100.7", "action": "block", "ttl": 60,
            "reason": "r", **change}
    response = client.post("/admin/lists", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"error": error, "field": field}


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    response = client.post("/admin/lists", content=b"{", headers=AUTH)
    assert (response.status_code, response.json()["field"]) == (400, None)


def test_the_rule_reload_endpoint_still_works_with_the_token(client: TestClient) -> None:
    response = client.post("/admin/rules/reload", headers=AUTH)
    assert response.status_code == 200
    assert "version" in response.json()


# -- the gateway's unscored routes ----------------------------------------------------------


def small_app() -> Starlette:
    async def page(_: Request) -> Response:
        return PlainTextResponse("page")

    return Starlette(routes=[StarletteRoute("/about", page)])


@pytest.mark.parametrize(("entry", "peer", "headers", "refused"), [
    (("ip", "203.0.113.7", "block"), "203.0.113.7", {}, True),
    (("ip", "203.0.113.7", "block"), "203.0.113.8", {}, False),
    (("cidr", "203.0.113.0/24", "block"), "203.0.113.200", {}, True),
    (("device", "dev-42", "block"), "192.0.2.1", {"x-device-id": "dev-42"}, True),
    (("device", "dev-42", "block"), "192.0.2.1", {"x-device-id": "dev-43"}, False),
    (("ip", "203.0.113.7", "allow"), "203.0.113.7", {}, False),  # allow changes nothing
])
def test_the_gateway_refuses_an_unscored_route_for_a_blocked_client(
    store_uri: str, rules_dir: Path, entry: tuple[str, str, str], peer: str,
    headers: dict[str, str], refused: bool,
) -> None:
    serving = open_store(store_uri)
    engine = make_engine(serving, rules_dir)
    kind, value, action = entry

    async def add_entry() -> None:
        # A separate connection for Redis: the app serves on the test client's loop.
        store = serving if store_uri.startswith("memory") else open_store(store_uri)
        await RuntimeLists(store, KEYER).add(kind, value, action, 600, "test", 1e10 - 600)
        if store is not serving:
            await store.close()

    # Far-future "now" so the entry is live whatever the clock says.
    asyncio.run(add_entry())
    config = Config(secret=SECRET, store=store_uri, rules=rules_dir, decision_log=None,
                    watch_rules=False)
    app = RiskGateMiddleware(small_app(), config=config, engine=engine)
    with TestClient(app, client=(peer, 50000)) as test_client:
        response = test_client.get("/about", headers={"accept": "application/json", **headers})
        assert test_client.portal is not None
        test_client.portal.call(serving.close)  # on the loop its connections belong to
    if refused:
        assert response.status_code == 403
        assert response.headers["x-riskgate-decision"] == "block"
        assert response.json()["request_id"] == response.headers["x-riskgate-request-id"]
    else:
        assert (response.status_code, response.text) == (200, "page")
        assert "x-riskgate-decision" not in response.headers


# -- the CLI -----------------------------------------------------------------------------------


def riskgate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "riskgate", "lists", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def write_config(tmp_path: Path, rules: Path, store: str) -> str:
    config = tmp_path / "riskgate.yaml"
    config.write_text(json.dumps({"secret": SECRET, "store": store, "rules": str(rules)}))
    return str(config)


def test_the_cli_adds_shows_and_removes_entries_in_redis(
    redis_url: str, rules_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, rules_dir, redis_url)
    added = riskgate_cli("add", "--config", config, "--kind", "device", "--value", "dev-raw-9",
                         "--action", "block", "--ttl", "1h", "--reason", "card testing")
    assert added.returncode == 0, added.stderr
    entry_id, rule = added.stdout.split("\t")
    assert rule.startswith(f"runtime-block:{entry_id} until ")

    shown = riskgate_cli("show", "--config", config)
    assert shown.returncode == 0, shown.stderr
    (line,) = shown.stdout.splitlines()
    fields = line.split("\t")
    assert fields[:4] == [entry_id, "block", "device", KEYER("device", "dev-raw-9")]
    assert fields[5] == "card testing"
    assert "dev-raw-9" not in shown.stdout + added.stdout + added.stderr

    removed = riskgate_cli("remove", "--config", config, entry_id)
    assert (removed.returncode, removed.stdout) == (0, f"removed {entry_id}\n")
    assert riskgate_cli("show", "--config", config).stdout == ""
    again = riskgate_cli("remove", "--config", config, entry_id)
    assert again.returncode == 1
    assert again.stderr == (f"riskgate: no live runtime list entry has id {entry_id}; "
                            "`riskgate lists show` lists them\n")


def test_the_cli_refuses_bad_input_with_the_field(
    redis_url: str, rules_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, rules_dir, redis_url)
    result = riskgate_cli("add", "--config", config, "--kind", "ip", "--value", "203.0.113.7",
                          "--action", "block", "--ttl", "90d", "--reason", "x")
    assert (result.returncode, result.stderr) == (
        2, "riskgate: `ttl` must be more than 0 and at most 2592000 seconds (30 days)\n")


def test_the_cli_says_a_memory_store_is_out_of_its_reach(rules_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, rules_dir, "memory://")
    result = riskgate_cli("show", "--config", config)
    assert result.returncode == 2
    assert "cannot be reached from here; use the admin API" in result.stderr
