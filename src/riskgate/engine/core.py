"""Runs the stages for one risk event: signals → counters → rules → decision → log.

The engine owns no HTTP: the decision API, the proxy and the middleware all build a
:class:`RiskEvent` and await :meth:`Engine.decide`. Every store access a decision
needs — counters, the feedback record — goes out as one batch, so a decision is one
Redis round trip. A rule set is read once per request into a local, so a hot swap
never shows a request half of one set and half of another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskgate.decision.verdict import Match, Verdict, decide
from riskgate.engine.batch import Batch
from riskgate.engine.counters import CounterPlanner
from riskgate.engine.feedback import FeedbackRecord, record_key
from riskgate.errors import StoreError
from riskgate.event.types import EventName, Outcome, RiskEvent
from riskgate.model.base import Model, label_of
from riskgate.observability import metrics
from riskgate.observability.decisionlog import DecisionLog
from riskgate.rules.model import RuleSet
from riskgate.rules.runtime_lists import RuntimeLists, for_metrics
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.history import device_sighting, history_facts, history_ops
from riskgate.signals.keys import Keyer
from riskgate.store import Get, Op, Result, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine answers for one event."""

    request_id: str
    event: EventName
    verdict: Verdict
    degraded: bool
    counters: Mapping[str, float]
    #: Store keys (and distinct members) of the counters that outcomes feed, such as
    #: failed logins, so an outcome seen in-process needs no lookup.
    outcome_keys: Mapping[str, tuple[str, str | None]]


class Engine:
    """Decides risk events and takes feedback on them.

    A decision runs these stages; those that need the store share one batch
    (:class:`~riskgate.engine.batch.Batch`), each under its own name:

    ``counters``  the declared counters of the event, updated and read;
    ``history``   first-seen and last-login records (store-backed signals);
    ``feedback``  the record an outcome will find (:mod:`riskgate.engine.feedback`);
    ``lists``     the runtime lists' version, to refresh them when it moved;
    ``model``     scores from the model (no store ops yet), before the rules run;

    then the rules, the verdict, the metrics and the decision log.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        store: Store,
        signals: SignalExtractor,
        keyer: Keyer,
        log: DecisionLog | None = None,
        feedback_ttl: float = 900.0,
        runtime_lists: RuntimeLists | None = None,
        model: Model | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.store = store
        self._signals = signals
        self._planner = CounterPlanner(keyer)
        self._log = log
        self._feedback_ttl_ms = int(feedback_ttl * 1000)
        #: None in replay: runtime entries are live operations, not part of a policy.
        self.runtime_lists = runtime_lists
        #: The model stage; None: rules alone.
        self.model = model

    async def decide(self, event: RiskEvent) -> Decision:
        started = time.perf_counter()
        facts = self._signals.facts(event)
        return await self.decide_facts(event.request_id, event.event, facts, event.time,
                                       degraded=self._signals.degraded, started=started)

    async def decide_facts(
        self, request_id: str, event: EventName, facts: dict[str, Any], now: float, *,
        degraded: bool = False, started: float | None = None,
    ) -> Decision:
        """Decide from facts already extracted: stages → rules → decision → log.

        :meth:`decide` ends here after extracting signals, and ``riskgate replay`` calls
        it with the facts a decision log recorded, so a replayed decision runs the same
        code as a live one. ``facts`` gains the store-backed and model signals in
        place. ``now`` (the event's time) drives counter windows and rule expiry;
        ``started`` is when timing began, for the latency metric.
        """
        started = time.perf_counter() if started is None else started
        ruleset = self.ruleset  # one set for the whole request, whatever a reload does
        batch = Batch()
        counter_ops, names, outcome_keys = self._planner.ops_for(ruleset, event, facts)
        batch.add("counters", counter_ops)
        remembered = history_ops(event, facts, now)
        batch.add("history", [op for _, op in remembered])
        # The facts are kept only when a model will learn from a label: without one,
        # nothing reads them back and the record stays a few dozen bytes.
        record = FeedbackRecord(event, outcome_keys, None if self.model is None else facts)
        batch.add("feedback", [record.put(request_id, self._feedback_ttl_ms)])
        lists = self.runtime_lists
        if lists is not None:
            batch.add("lists", [lists.version_op()])
        listed: list[Match] = []
        counters: dict[str, float] = {}
        remembered_results: list[Result] | None = None
        try:
            results = await batch.send(self.store, now)
        except StoreError as exc:
            degraded = True
            logger.warning("deciding %s without counters: %s", request_id, exc)
        else:
            counters = {name: float(value) for name, value in zip(names, results["counters"],
                                                                   strict=True)
                        if isinstance(value, (int, float))}
            remembered_results = results["history"]
            if lists is not None:
                try:
                    await lists.refresh(results["lists"][0], now)
                except StoreError as exc:
                    degraded = True
                    logger.warning("deciding %s without runtime lists: %s", request_id, exc)
                else:
                    listed = lists.matches(facts, now)
        facts.update(history_facts([name for name, _ in remembered], remembered_results,
                                   facts, now))
        if self.model is not None:
            try:
                facts.update(self.model.score_one(event, facts))
            except Exception:  # a model fault must never fail a decision
                degraded = True
                logger.exception("deciding %s without the model", request_id)
        matches = ruleset.evaluate(event, facts, counters, now=now)
        verdict = decide([*matches, *listed], ruleset.thresholds_for(event))
        elapsed = time.perf_counter() - started
        metrics.count_decision(event, verdict.decision, elapsed,
                               [*matches, *map(for_metrics, listed)], degraded)
        if self._log is not None:
            self._log.write({
                "type": "decision", "request_id": request_id, "time": now, "event": event,
                "decision": verdict.decision, "score": verdict.score,
                "reasons": [m.rule for m in verdict.reasons],
                "shadow": [m.rule for m in verdict.shadow],
                "latency_ms": round(elapsed * 1000, 3), "degraded": degraded,
                "rules_version": ruleset.version,
                # Unknown facts are left out: replay reads a missing fact as None.
                "facts": {name: value for name, value in facts.items() if value is not None},
                "counters": counters,
            })
        return Decision(request_id, event, verdict, degraded, counters, outcome_keys)

    async def note_device(self, device_key: str, now: float) -> None:
        """Record that a device id was seen on a request nobody scores (a page view).

        ``device.first_seen_age`` then dates from the device's first page, not its first
        login. A store failure only loses the sighting.
        """
        try:
            await self.store.apply([device_sighting(device_key, now)], now)
        except StoreError as exc:
            logger.warning("device sighting not recorded: %s", exc)

    async def feedback(self, request_id: str, outcome: Outcome, now: float) -> bool:
        """Record an outcome for a recent decision; False when the request id is unknown.

        Outcomes feed the counters that declare them (``on: [login_failed]``), label the
        decision's facts for the model, and are logged as labels.
        """
        (raw,) = await self.store.apply([Get(record_key(request_id))], now)
        if not isinstance(raw, str):
            return False
        record = FeedbackRecord.loads(raw)
        await self._count_outcome(request_id, record.event, record.counters, outcome, now)
        label = label_of(outcome)
        if self.model is not None and record.facts is not None and label is not None:
            try:
                self.model.learn_one(record.event, record.facts, label)
            except Exception:  # the outcome is recorded; only the model misses it
                logger.exception("the model could not learn the label of %s", request_id)
        return True

    async def record_outcome(self, decision: Decision, outcome: Outcome, now: float) -> None:
        """Record an outcome seen in-process (a gateway saw the login fail)."""
        await self._count_outcome(decision.request_id, decision.event, decision.outcome_keys,
                                  outcome, now)

    async def _count_outcome(
        self, request_id: str, event: str, keys: Mapping[str, tuple[str, str | None]],
        outcome: Outcome, now: float,
    ) -> None:
        planned = {c.name: c for c in self._planner.plan(self.ruleset, event)}
        ops: list[Op] = [
            self._planner.op(planned[name], key, member, update=True)
            for name, (key, member) in keys.items()
            if name in planned and outcome in planned[name].outcomes
        ]
        if ops:
            await self.store.apply(ops, now)
        if self._log is not None:
            self._log.write({"type": "feedback", "request_id": request_id, "time": now,
                             "event": event, "outcome": outcome})
