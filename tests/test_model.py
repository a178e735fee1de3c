"""The online model (issue 11): River models scored on the request path, learned after
it, guarded against poisoning, and kept across restarts in signed snapshots."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from riskgate.cli import main
from riskgate.config import MODEL_DETECTORS, Config, ModelConfig, load_config
from riskgate.engine import Engine
from riskgate.errors import ConfigError
from riskgate.event import RiskEvent
from riskgate.model.online import DETECTORS, OnlineModel
from riskgate.model.snapshot import FORMAT, MAGIC, Snapshots, encode, read, snapshot_key
from riskgate.rules import load_ruleset
from riskgate.service import Service
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import MemoryStore
from support import only, riskgate_serve, worker_pids, write_rules

pytestmark = pytest.mark.anyio

SECRET = "model-test-secret-0123"
KEYER = Keyer(SECRET.encode())
RULES = """
thresholds:
  login: {challenge: 50, block: 90}
rules:
  - {id: model-unusual, events: [login], when: model.anomaly >= 0.6, score: 60}
  - {id: scripted, events: [login], when: device.is_bot_ua, score: 60}
"""
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")


def person(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """The facts of an ordinary login, from its own address."""
    facts: dict[str, Any] = {
        "ip": f"{rng.randint(24, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7",
        "account.present": True, "device.present": True,
        "device.header_count": rng.randint(9, 13),
        "account.username_entropy": rng.uniform(2.5, 3.2),
        "device.first_seen_age": rng.uniform(1e4, 1e6),
    }
    facts["ip.prefix"] = facts["ip"].rsplit(".", 1)[0] + ".0/24"
    return facts | overrides


ATTACK = {"device.header_count": 3, "account.username_entropy": 4.2,
          "device.first_seen_age": 0, "account.username_digit_ratio": 0.6}
ATTACK_COUNTERS = {"login_accounts_per_ip": 8.0}


def learn(model: OnlineModel, facts: dict[str, Any], counters: dict[str, float],
          label: bool | None = None) -> None:
    """What the engine does with a decided login: learn its features as normal traffic
    (``label`` None), or under a label."""
    x = model.features("login", facts, counters)
    if label is None:
        model.learn_one("login", x, facts)
    else:
        model.learn_label("login", x, label)


def score(model: OnlineModel, facts: dict[str, Any], counters: dict[str, float],
          ) -> dict[str, float]:
    return model.score_one("login", model.features("login", facts, counters))


def warmed(rng: random.Random, **settings: Any) -> OnlineModel:
    model = OnlineModel(warmup=200, **settings)
    for _ in range(1500):
        learn(model, person(rng), {"login_accounts_per_ip": 1.0})
    return model


def anomaly(model: OnlineModel, facts: dict[str, Any], counters: dict[str, float]) -> float:
    return score(model, facts, counters)["model.anomaly"]


def test_the_detector_lists_of_config_and_model_agree() -> None:
    assert set(MODEL_DETECTORS) == set(DETECTORS)
    assert ModelConfig().detector == OnlineModel().detector


def test_the_model_says_nothing_until_it_has_learned_its_warm_up() -> None:
    rng = random.Random(1)
    model = OnlineModel(warmup=50, min_labels=5)
    for _ in range(49):
        learn(model, person(rng), {})
    assert score(model, person(rng), {}) == {}
    learn(model, person(rng), {})
    assert set(score(model, person(rng), {})) == {"model.anomaly"}


def test_an_attack_unlike_the_flows_traffic_scores_as_anomalous() -> None:
    rng = random.Random(2)
    model = warmed(rng)
    ordinary = [anomaly(model, person(rng), {"login_accounts_per_ip": 1.0}) for _ in range(200)]
    assert sorted(ordinary)[189] < 0.6  # nineteen people in twenty stay clear of the rule
    assert anomaly(model, person(rng, **ATTACK), ATTACK_COUNTERS) > 0.8


def test_an_attacker_streaming_near_normal_traffic_cannot_drag_the_model_to_its_attack(
) -> None:
    """One client sends thousands of allowed requests, each a step from normal towards
    its attack, interleaved with ordinary traffic, to teach the model that the attack is
    normal. The share limit keeps it to a small part of what the model learns, and the
    attack still scores far beyond every ordinary request."""
    rng = random.Random(3)
    model = warmed(rng)
    steps = 4000
    for i in range(steps):
        learn(model, person(rng), {"login_accounts_per_ip": 1.0})
        start = person(rng)
        near = {name: start[name] + (value - start[name]) * i / steps
                for name, value in ATTACK.items() if name in start}
        learn(model, person(rng, ip="203.0.113.66", **near,
                            **{"ip.prefix": "203.0.113.0/24", "device.key": "k-attacker"}),
              {"login_accounts_per_ip": 1 + 7 * i / steps})
    learned = model.summary()["login"]
    assert learned["refused_by_share_limit"] >= 0.95 * steps
    ordinary = [anomaly(model, person(rng), {"login_accounts_per_ip": 1.0}) for _ in range(200)]
    attack = anomaly(model, person(rng, **ATTACK), ATTACK_COUNTERS)
    assert attack >= 0.5 and attack > max(ordinary)


@pytest.mark.parametrize("detector", DETECTORS)
def test_learning_a_scored_request_teaches_what_learning_it_unscored_does(
    detector: str,
) -> None:
    """The engine scores every request before it learns it, and learning reuses that
    score for the calibration instead of scoring again: the two must come out alike."""
    rng = random.Random(7)
    stream = [person(rng, **(ATTACK if rng.random() < 0.05 else {})) for _ in range(900)]
    scored, unscored = (OnlineModel(warmup=100, detector=detector) for _ in range(2))
    for facts in stream:
        x = scored.features("login", facts, {})
        scored.score_one("login", x)
        scored.learn_one("login", x, facts)
        unscored.learn_one("login", unscored.features("login", facts, {}), facts)
    probes = [person(rng, **(ATTACK if i % 5 == 0 else {})) for i in range(50)]
    assert [score(scored, facts, {}) for facts in probes] == \
        [score(unscored, facts, {}) for facts in probes]


def test_labels_teach_the_classifier_what_bots_look_like() -> None:
    rng = random.Random(4)
    model = OnlineModel(min_labels=20)
    bot = {"device.header_count": 3, "account.username_digit_ratio": 0.6,
           "account.username_entropy": 4.2}
    for _ in range(500):
        learn(model, person(rng, **bot), {}, True)
        # People are confirmed far less often than bots: the prior must not decide.
        if rng.random() < 0.2:
            learn(model, person(rng), {}, False)
    # Past the 0.7 of rules/model.yaml's model-likely-bot, and far from it for people.
    assert score(model, person(rng, **bot), {})["model.bot_probability"] > 0.7
    assert score(model, person(rng), {})["model.bot_probability"] < 0.3


def test_labels_teach_the_classifier_the_velocity_its_counters_read() -> None:
    """Bots that look like people but for how fast they go: only counters tell them
    apart, and a label carries the counters the request was scored with."""
    rng = random.Random(6)
    model = OnlineModel(min_labels=20)
    for _ in range(1000):
        learn(model, person(rng), ATTACK_COUNTERS, True)
        if rng.random() < 0.3:
            learn(model, person(rng), {"login_accounts_per_ip": 1.0}, False)
    fast = score(model, person(rng), ATTACK_COUNTERS)["model.bot_probability"]
    calm = score(model, person(rng), {"login_accounts_per_ip": 1.0})
    assert fast > 0.7 and calm["model.bot_probability"] < 0.3


# --- in the engine --------------------------------------------------------------------------


def engine_with(model: OnlineModel, tmp_path: Path) -> Engine:
    return Engine(load_ruleset(write_rules(tmp_path, RULES)), MemoryStore(),
                  SignalExtractor(KEYER), KEYER, model=model)


def login(request_id: str, ip: str = "198.51.100.7", ua: str = CHROME) -> RiskEvent:
    return RiskEvent(request_id, "login", ipaddress.ip_address(ip), 1000.0,
                     account="alice@example.com", user_agent=ua)


async def test_a_request_is_learned_after_its_decision_not_during_it(tmp_path: Path) -> None:
    model = OnlineModel(warmup=1)
    engine = engine_with(model, tmp_path)
    decision = await engine.decide(login("r1"))
    assert decision.verdict.decision == "allow"
    assert "login" not in model.flows  # decided on what the model knew before it
    assert await engine.learn_pending() == 1
    assert model.flows["login"].samples == 1


async def test_a_burst_beyond_the_learning_budget_is_sampled_and_time_refills_it(
    tmp_path: Path,
) -> None:
    model = OnlineModel(warmup=1, max_share=1.0)
    engine = Engine(load_ruleset(write_rules(tmp_path, RULES)), MemoryStore(),
                    SignalExtractor(KEYER), KEYER, model=model, learn_per_second=5)

    async def burst(at: float, size: int) -> int:
        for i in range(size):
            await engine.decide(RiskEvent(f"r{at}-{i}", "login",
                                          ipaddress.ip_address(f"198.51.100.{i}"), at,
                                          account="alice@example.com", user_agent=CHROME))
        return await engine.learn_pending()

    assert await burst(1000.0, 40) == 5  # forty in one instant: a second's budget
    assert await burst(1002.0, 40) == 5  # two seconds on: refilled, to one second's worth
    assert model.flows["login"].samples == 10


async def test_rules_that_read_the_model_stay_silent_while_it_warms_up(tmp_path: Path) -> None:
    engine = engine_with(OnlineModel(warmup=10_000), tmp_path)
    for i in range(20):
        await engine.decide(login(f"r{i}", ip=f"198.51.100.{i}"))
        await engine.learn_pending()
    odd = await engine.decide(RiskEvent("odd", "login", ipaddress.ip_address("203.0.113.9"),
                                        1000.0, user_agent=CHROME,
                                        headers={f"x-{i}": "1" for i in range(40)}))
    assert (odd.verdict.decision, odd.verdict.reasons, odd.degraded) == ("allow", (), False)


GUARDED_RULES = """
thresholds:
  login: {challenge: 50, block: 90}
rules:
  - {id: new-device, events: [login], when: not device.present, score: 20}
  - {id: scripted, events: [login], when: device.is_bot_ua, score: 60}
  - {id: passed-challenge, events: [login], when: challenge.passed, score: -40}
"""


@pytest.mark.parametrize(("ua", "passed", "decision", "learned"), [
    (CHROME, False, "allow", True),  # a weak signal (no device id) alone: ordinary
    ("python-requests/2.31", False, "challenge", False),
    # Under the line only thanks to its pass: a script that paid for a challenge.
    ("python-requests/2.31", True, "allow", False),
], ids=["weak-signal", "challenged", "allowed-by-a-pass"])
async def test_the_detector_learns_only_what_the_rules_allowed_on_its_own_merits(
    tmp_path: Path, ua: str, passed: bool, decision: str, learned: bool
) -> None:
    model = OnlineModel(warmup=1)
    engine = Engine(load_ruleset(write_rules(tmp_path, GUARDED_RULES)), MemoryStore(),
                    SignalExtractor(KEYER), KEYER, model=model)
    event = RiskEvent("r1", "login", ipaddress.ip_address("198.51.100.7"), 1000.0,
                      user_agent=ua, challenge_passed=passed)
    decided = await engine.decide(event)
    assert (decided.verdict.decision, decided.learned) == (decision, learned)
    assert await engine.learn_pending() == int(learned)


async def test_a_model_whose_state_is_corrupt_degrades_decisions_and_they_go_on(
    tmp_path: Path,
) -> None:
    model = OnlineModel(warmup=1)
    rng = random.Random(5)
    for _ in range(300):  # past the trees' first window, so scoring walks them
        learn(model, person(rng), {})
    engine = engine_with(model, tmp_path)
    model.flows["login"].detector.trees[0] = None  # a real River model, broken inside
    decision = await engine.decide(login("r2"))
    assert (decision.verdict.decision, decision.degraded) == ("allow", True)
    await engine.learn_pending()
    assert engine.learning_failures == 1  # learning fails as well, and is counted


# --- snapshots -------------------------------------------------------------------------------


def service_config(tmp_path: Path, secret: str = SECRET) -> Config:
    return Config(secret=secret, rules=write_rules(tmp_path, RULES), decision_log=None,
                  watch_rules=False,
                  model=ModelConfig(enabled=True, snapshot=tmp_path / "model.snapshot",
                                    warmup_samples=5))


async def learn_some(service: Service, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        await service.engine.decide(login(f"r{i}", ip=f"198.51.100.{i}"))
    await service.engine.learn_pending()


async def test_a_restart_keeps_what_the_model_learned(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    first = Service(config)
    await learn_some(first, 12)
    await first.close()
    again = Service(config)
    try:
        model = again.engine.model
        assert isinstance(model, OnlineModel)
        assert model.summary()["login"]["samples"] == 12
        assert model.summary()["login"]["anomaly_warm"]
    finally:
        await again.close()


async def test_the_snapshot_timer_writes_while_the_service_runs(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    service = Service(replace(config, model=replace(config.model,
                                                    snapshot_interval_minutes=0.002)))
    await service.start()
    try:
        await learn_some(service, 3)
        slot = tmp_path / "model.snapshot.0"
        deadline = time.monotonic() + 5
        # Read before close(), which writes a snapshot of its own: only the timer can
        # have written this one.
        while not slot.exists() or read(slot, SECRET.encode())[0].summary().get(
                "login", {}).get("samples") != 3:
            assert time.monotonic() < deadline, "no timed snapshot within 5 s"
            await asyncio.sleep(0.05)
    finally:
        await service.close()


def _written(tmp_path: Path) -> bytes:
    return encode(OnlineModel(), snapshot_key(SECRET.encode()))


BROKEN = {
    "garbage": lambda data: b"\x00\xff" * 100,
    "truncated": lambda data: data[: len(data) // 2],
    "damaged": lambda data: data[:-10] + b"0123456789",
    "another format": lambda data: data.replace(MAGIC + b"%d " % FORMAT, MAGIC + b"99 ", 1),
    "signed under another secret": lambda data: encode(
        OnlineModel(), snapshot_key(b"someone-elses-secret-0123")),
    "an older River": lambda data: data.replace(b"\x8c\x06" + b"0.26.1", b"\x8c\x06" + b"0.19.0"),
    "no riskgate model": lambda data: encode({"not": "a model"}, snapshot_key(SECRET.encode())),
}
REASONS = {
    "garbage": "not a riskgate model snapshot", "truncated": "is truncated",
    "damaged": "signature does not match", "another format": "snapshot format 99",
    "signed under another secret": "signature does not match",
    "an older River": "signature does not match",  # the payload changed under the HMAC
    "no riskgate model": "holds no riskgate model",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_an_unusable_snapshot_gives_a_warning_and_a_fresh_model(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = service_config(tmp_path)
    slot = tmp_path / "model.snapshot.0"
    slot.write_bytes(BROKEN[case](_written(tmp_path)))
    with caplog.at_level(logging.WARNING):
        service = Service(config)
    try:
        assert isinstance(service.engine.model, OnlineModel)
        assert service.engine.model.flows == {}
        assert REASONS[case] in caplog.text and "starting fresh" in caplog.text
    finally:
        await service.close()


async def test_a_snapshot_from_another_river_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    config = service_config(tmp_path)
    slot = tmp_path / "model.snapshot.0"
    monkeypatch.setattr("riskgate.model.snapshot.RIVER_VERSION", "0.19.0")
    slot.write_bytes(_written(tmp_path))
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):
        service = Service(config)
    await service.close()
    assert "written with River 0.19.0" in caplog.text


async def test_snapshots_hold_no_addresses_and_no_secret(tmp_path: Path) -> None:
    service = Service(service_config(tmp_path))
    await learn_some(service, 6)
    await service.close()
    data = (tmp_path / "model.snapshot.0").read_bytes()
    assert b"198.51.100." not in data and SECRET.encode() not in data
    assert KEYER("account", "alice@example.com").encode() not in data


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Snapshots, Snapshots]]:
    first = Snapshots(tmp_path / "model.snapshot", SECRET.encode())
    second = Snapshots(tmp_path / "model.snapshot", SECRET.encode())
    yield first, second
    first.release()
    second.release()


def test_each_worker_snapshots_to_its_own_slot(
    tmp_path: Path, two_workers: tuple[Snapshots, Snapshots]
) -> None:
    first, second = two_workers
    assert (first.path.name, second.path.name) == ("model.snapshot.0", "model.snapshot.1")
    first.save("learned by the first")
    second.save("learned by the second")
    assert (first.load()[0], second.load()[0]) == ("learned by the first",
                                                   "learned by the second")
    first.release()  # the first worker stops; a new one takes its slot and its learning
    replacement = Snapshots(tmp_path / "model.snapshot", SECRET.encode())
    assert (replacement.slot, replacement.load()[0]) == (0, "learned by the first")
    replacement.release()


def served_logins(base: str, ips: range) -> None:
    for n in ips:
        # A new connection each time: a kept-alive one would stay with the worker it has.
        response = httpx.post(f"{base}/v1/decide", timeout=5, json={
            "event": "login", "ip": f"198.51.100.{n}", "user_agent": CHROME})
        assert response.json()["decision"] == "allow", response.text


def test_each_served_worker_snapshots_its_own_slot_and_a_restart_restores_both(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    write_rules(tmp_path, RULES)
    config = tmp_path / "riskgate.yaml"
    config.write_text(f"secret: {SECRET}\nstore: {redis_url}\nrules: rules\n"
                      "decision_log: null\nmodel: {enabled: true, snapshot: model.snapshot}\n")

    def samples() -> list[int]:
        code, out, err = model_show(tmp_path / "model.snapshot", config, capsys)
        assert code == 0, err
        return sorted(int(line.split(":")[1].strip(" ,")) for line in out.splitlines()
                      if '"samples"' in line)

    for round_, (first_learns, second_learns) in enumerate([(3, 4), (1, 1)]):
        with riskgate_serve(config, workers=2) as (base, server):
            first, second = workers = worker_pids(server.pid)
            with only(first, workers):
                served_logins(base, range(10 * round_, 10 * round_ + first_learns))
            with only(second, workers):
                served_logins(base, range(50 + 10 * round_, 50 + 10 * round_ + second_learns))
        # Stopped with Ctrl-C: each worker wrote the slot it holds.
        assert sorted(p.name for p in tmp_path.glob("model.snapshot.?")) == [
            "model.snapshot.0", "model.snapshot.1"]
        # The second run's workers went on from what each slot held: 3 + 1 and 4 + 1.
        assert samples() == ([3, 4] if round_ == 0 else [4, 5])


def model_show(snapshot: Path, config: Path, capsys: pytest.CaptureFixture[str],
               ) -> tuple[int, str, str]:
    code = main(["model", "show", str(snapshot), "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


async def test_two_services_learning_at_once_keep_their_own_snapshots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = service_config(tmp_path)
    first, second = Service(config), Service(config)
    await learn_some(first, 7)
    await learn_some(second, 9, first=50)
    await first.close()
    await second.close()
    code, out, err = model_show(tmp_path / "model.snapshot", write_config(tmp_path), capsys)
    assert code == 0, err
    assert out.count('"samples": 7') == 1 and out.count('"samples": 9') == 1
    # Shown under the config's warm-up (500 samples), not the one they learned under.
    assert '"anomaly_warm": false' in out and '"bot": 0' in out


def write_config(tmp_path: Path, model: str = "{enabled: true, snapshot: model.snapshot}") -> Path:
    path = tmp_path / "riskgate.yaml"
    path.write_text(f"secret: {SECRET}\nrules: rules\ndecision_log: null\nmodel: {model}\n")
    return path


def test_model_show_refuses_a_snapshot_it_cannot_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "planted").write_bytes(BROKEN["signed under another secret"](b""))
    code, out, err = model_show(tmp_path / "planted", write_config(tmp_path), capsys)
    assert (code, out) == (2, "")
    assert "signature does not match" in err


@pytest.mark.parametrize(("section", "problem"), [
    ("{enabled: yes please}", "model.enabled must be true or false"),
    ("{warmup_samples: -5}", "model.warmup_samples must be at least 0 samples, not -5"),
    ("{max_share: 2}", "model.max_share must be at most 1 (a fraction of 1), not 2"),
    ("{detector: isolation-forest}", "unknown detector `isolation-forest`; use one of "
                                     "half-space-trees, one-class-svm, standard-distance"),
    ("{warm_up: 5}", "unknown key `warm_up` in model"),
])
def test_a_bad_model_section_is_refused_at_its_line(
    tmp_path: Path, section: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, section))
    [found] = error.value.problems
    assert found.line == 4 and problem in found.message


def test_a_model_section_reads_into_the_typed_config(tmp_path: Path) -> None:
    config = load_config(write_config(
        tmp_path, "{enabled: true, snapshot: m.snap, snapshot_interval_minutes: 5, "
                  "warmup_samples: 1000, detector: standard-distance}"))
    assert config.model == ModelConfig(enabled=True, snapshot=tmp_path / "m.snap",
                                       snapshot_interval_minutes=5.0, warmup_samples=1000,
                                       detector="standard-distance")
