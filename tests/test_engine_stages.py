"""The engine's named stages: the model stage scores before the rules and learns from
labels, and a decision's label vector (counters included) reaches a later label."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from riskgate.engine import Engine
from riskgate.engine.feedback import record_key, vector_key
from riskgate.event import EventName, RiskEvent
from riskgate.model.online import OnlineModel
from riskgate.observability import metrics
from riskgate.rules import load_ruleset
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import Get, Store, open_store
from support import RedisServer, write_rules

pytestmark = pytest.mark.anyio

KEYER = Keyer(b"engine-stages-test")
RULES = """
counters:
  logins_per_ip: {events: [login], key: ip, window: 1h}
thresholds:
  login: {challenge: 50, block: 90}
rules:
  - {id: model-says-bot, events: [login], when: model.bot_probability > 0.8, score: 60}
"""
LONG_UA = "Mozilla/5.0 " + "x" * 5000


class RecordingModel:
    """A model of the engine's protocol that scores what it is told and records what it
    is given.

    Its features are the counters it was scored with and the user agent's length: the
    test sees which of them a label brings back."""

    def __init__(self, score: float = 0.0, fail: bool = False) -> None:
        self.score, self.fail = score, fail
        self.computed: list[Mapping[str, float]] = []
        self.scored: list[Mapping[str, float]] = []
        self.normal: list[Mapping[str, float]] = []
        self.learned: list[tuple[EventName, Mapping[str, float], bool]] = []

    def features(self, event: EventName, facts: Mapping[str, Any],
                 counters: Mapping[str, float]) -> Mapping[str, float]:
        ua = facts.get("device.user_agent") or ""
        x = {"ua_length": float(len(ua)),
             **{f"counters.{name}": value for name, value in counters.items()}}
        self.computed.append(x)
        return x

    def score_one(self, event: EventName, x: Mapping[str, float]) -> Mapping[str, float]:
        if self.fail:
            raise RuntimeError("the model broke")
        self.scored.append(x)
        return {"model.bot_probability": self.score}

    def learn_one(self, event: EventName, x: Mapping[str, float],
                  facts: Mapping[str, Any]) -> None:
        self.normal.append(x)

    def learn_label(self, event: EventName, x: Mapping[str, float], label: bool) -> None:
        self.learned.append((event, x, label))


def engine(store: Store, tmp_path: Path, model: RecordingModel | None) -> Engine:
    return Engine(load_ruleset(write_rules(tmp_path, RULES)), store, SignalExtractor(KEYER),
                  KEYER, model=model)


def login(request_id: str) -> RiskEvent:
    return RiskEvent(request_id, "login", ipaddress.ip_address("198.51.100.7"), 1000.0,
                     account="alice@example.com", user_agent=LONG_UA)


async def test_rules_read_the_model_score(store: Store, tmp_path: Path) -> None:
    suspicious = await engine(store, tmp_path, RecordingModel(0.95)).decide(login("r1"))
    calm = await engine(store, tmp_path, RecordingModel(0.1)).decide(login("r2"))
    assert [m.rule for m in suspicious.verdict.reasons] == ["model-says-bot"]
    assert suspicious.verdict.decision == "challenge"
    assert (calm.verdict.decision, calm.degraded) == ("allow", False)


async def test_a_failing_model_degrades_the_decision_and_the_rules_go_on(
    store: Store, tmp_path: Path
) -> None:
    decision = await engine(store, tmp_path, RecordingModel(fail=True)).decide(login("r1"))
    assert (decision.verdict.decision, decision.degraded) == ("allow", True)


async def test_a_label_on_another_worker_teaches_the_counters_the_decision_was_scored_with(
    store_uri: str, tmp_path: Path
) -> None:
    deciding, labelling = open_store(store_uri), open_store(store_uri)
    if store_uri.startswith("memory"):
        labelling = deciding  # one process: the memory store is not shared
    model = RecordingModel()
    try:
        decider = engine(deciding, tmp_path, RecordingModel())
        for request_id in ("r0", "r1"):  # the second login from this address counts 2
            await decider.decide(login(request_id))
        await decider.learn_pending()  # after the responses: the vectors are stored
        labeller = engine(labelling, tmp_path, model)
        assert await labeller.feedback("r1", "fraud", 1001.0) == "recorded"
        await labeller.learn_pending()
    finally:
        await deciding.close()
        await labelling.close()
    assert model.learned == [("login", {"ua_length": float(len(LONG_UA)),
                                        "counters.logins_per_ip": 2.0}, True)]


async def test_a_decision_computes_its_features_once_for_scoring_learning_and_its_label(
    store: Store, tmp_path: Path
) -> None:
    model = RecordingModel()
    decider = engine(store, tmp_path, model)
    decision = await decider.decide(login("r1"))
    await decider.learn_pending()
    assert decision.learned
    assert await decider.feedback("r1", "fraud", 1001.0) == "recorded"
    await decider.learn_pending()
    scored = {"ua_length": float(len(LONG_UA)), "counters.logins_per_ip": 1.0}
    # One vector: the detector learns the very one scored, and the label brings it back
    # from the store (zeros left out, four decimals: these are exact).
    assert model.computed == model.scored == model.normal == [scored]
    assert model.learned == [("login", scored, True)]


async def test_outcomes_that_say_nothing_about_bots_teach_the_model_nothing(
    store: Store, tmp_path: Path
) -> None:
    model = RecordingModel()
    decider = engine(store, tmp_path, model)
    for request_id, outcome in (("r1", "login_failed"), ("r2", "legit")):
        await decider.decide(login(request_id))
        await decider.learn_pending()
        assert await decider.feedback(request_id, outcome, 1001.0) == "recorded"
    await decider.learn_pending()
    assert [label for _, _, label in model.learned] == [False]


async def test_a_label_before_its_vector_is_stored_is_counted_not_learned(
    store: Store, tmp_path: Path
) -> None:
    model = RecordingModel()
    decider = engine(store, tmp_path, model)
    await decider.decide(login("r1"))
    unlearned = metrics.MODEL_LABELS_UNLEARNED.labels("feedback")._value.get()
    # The feedback overtakes the learning queue: the outcome still counts, only the
    # model misses the label, and the id has taken its one outcome.
    assert await decider.feedback("r1", "fraud", 1000.5) == "recorded"
    await decider.learn_pending()
    assert model.learned == []
    assert metrics.MODEL_LABELS_UNLEARNED.labels("feedback")._value.get() == unlearned + 1
    assert await decider.feedback("r1", "fraud", 1001.0) == "answered"


async def test_the_stored_records_hold_no_identity(store: Store, tmp_path: Path) -> None:
    for logins, model in enumerate((None, RecordingModel()), start=1):
        decider = engine(store, tmp_path, model)
        await decider.decide(login(f"r{logins}"))
        await decider.learn_pending()
        record, vector = await store.apply(
            [Get(record_key(f"r{logins}")), Get(vector_key(f"r{logins}"))], 1000.0)
        assert isinstance(record, str) and '"counters"' in record
        assert "198.51.100.7" not in record and "alice" not in record
        # Only a model's engine stores a vector: nothing else would read it back.
        assert (None if vector is None else json.loads(vector)) == (None if model is None else {
            "ua_length": float(len(LONG_UA)), "counters.logins_per_ip": float(logins)})


async def test_with_the_model_a_decision_stays_one_evalsha_and_label_vectors_go_in_batches(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    store = open_store(redis_url)
    decider = Engine(load_ruleset(write_rules(tmp_path, RULES)), store, SignalExtractor(KEYER),
                     KEYER, model=OnlineModel())
    try:
        await decider.decide(login("warm-up"))  # loads the script
        await decider.learn_pending()
        before = redis_server.command_calls("evalsha")
        for n in range(10):
            await decider.decide(login(f"r{n}"))
        assert redis_server.command_calls("evalsha") - before == 10
        # After the responses: the ten decisions' label vectors, in one store call.
        await decider.learn_pending()
        assert redis_server.command_calls("evalsha") - before == 11
    finally:
        await store.close()
