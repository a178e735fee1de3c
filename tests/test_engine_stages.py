"""The engine's named stages: the model stage scores before the rules and learns from
labels, and the feedback record carries the decision's facts to a later label."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from riskgate.engine import Engine
from riskgate.engine.feedback import MAX_FACT_TEXT, record_key
from riskgate.event import EventName, RiskEvent
from riskgate.model.base import Label
from riskgate.rules import load_ruleset
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import Get, Store, open_store
from support import write_rules

pytestmark = pytest.mark.anyio

KEYER = Keyer(b"engine-stages-test")
RULES = """
thresholds:
  login: {challenge: 50, block: 90}
rules:
  - {id: model-says-bot, events: [login], when: model.bot_probability > 0.8, score: 60}
"""
LONG_UA = "Mozilla/5.0 " + "x" * 5000


class RecordingModel:
    """A model of the engine's protocol that scores what it is told and records labels."""

    def __init__(self, score: float = 0.0, fail: bool = False) -> None:
        self.score, self.fail = score, fail
        self.learned: list[tuple[EventName, Mapping[str, Any], Label]] = []

    def score_one(self, event: EventName, facts: Mapping[str, Any],
                  counters: Mapping[str, float]) -> Mapping[str, float]:
        if self.fail:
            raise RuntimeError("the model broke")
        return {"model.bot_probability": self.score}

    def learn_one(self, event: EventName, facts: Mapping[str, Any],
                  counters: Mapping[str, float], label: Label) -> None:
        if label is not None:  # these tests are about labels; allowed traffic is elsewhere
            self.learned.append((event, facts, label))


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


async def test_a_label_reaches_the_model_with_the_decisions_facts_on_another_worker(
    store_uri: str, tmp_path: Path
) -> None:
    deciding, labelling = open_store(store_uri), open_store(store_uri)
    if store_uri.startswith("memory"):
        labelling = deciding  # one process: the memory store is not shared
    model = RecordingModel()
    try:
        await engine(deciding, tmp_path, RecordingModel()).decide(login("r1"))
        labeller = engine(labelling, tmp_path, model)
        assert await labeller.feedback("r1", "fraud", 1001.0) == "recorded"
        labeller.learn_pending()
    finally:
        await deciding.close()
        await labelling.close()
    [(event, facts, label)] = model.learned
    assert (event, label) == ("login", True)
    assert facts["ip"] == "198.51.100.7"
    assert facts["account.key"] == KEYER("account", "alice@example.com")
    assert len(facts["device.user_agent"]) == MAX_FACT_TEXT  # bounded, whatever was sent


async def test_outcomes_that_say_nothing_about_bots_teach_the_model_nothing(
    store: Store, tmp_path: Path
) -> None:
    model = RecordingModel()
    decider = engine(store, tmp_path, model)
    for request_id, outcome in (("r1", "login_failed"), ("r2", "legit")):
        await decider.decide(login(request_id))
        assert await decider.feedback(request_id, outcome, 1001.0) == "recorded"
    decider.learn_pending()
    assert [label for _, _, label in model.learned] == [False]


async def test_without_a_model_the_feedback_record_keeps_no_facts(
    store: Store, tmp_path: Path
) -> None:
    await engine(store, tmp_path, None).decide(login("r1"))
    (record,) = await store.apply([Get(record_key("r1"))], 1000.0)
    assert isinstance(record, str) and '"counters"' in record
    assert "facts" not in record and "198.51.100.7" not in record
