"""Runs the stages for one risk event: signals → counters → rules → decision → log.

The engine owns no HTTP: the decision API, the proxy and the middleware all build a
:class:`RiskEvent` and await :meth:`Engine.decide`. Every store access a decision
needs — counters, the feedback record — goes out as one batch, so a decision is one
Redis round trip. A rule set is read once per request into a local, so a hot swap
never shows a request half of one set and half of another.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskgate import metrics
from riskgate.decision import Verdict, decide
from riskgate.decisionlog import DecisionLog
from riskgate.errors import StoreError
from riskgate.event import EventName, Outcome, RiskEvent
from riskgate.rules import CounterSpec, RuleSet
from riskgate.signals import Keyer, SignalExtractor
from riskgate.store import Count, Distinct, Get, Op, Put, Store

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


def _record_key(request_id: str) -> str:
    return f"rg:r:{request_id}"


class CounterPlanner:
    """Turns declared counters and a request's facts into store ops.

    Counter keys are the counter's name and the keyed values of its key facts, so
    neither raw identities nor raw IPs reach the store.
    """

    def __init__(self, keyer: Keyer) -> None:
        self._key = keyer

    def key(self, spec: CounterSpec, facts: Mapping[str, Any]) -> str | None:
        parts = [facts.get(fact) for fact in spec.key_facts]
        if any(part is None or part == "" for part in parts):
            return None  # the request lacks what this counter is keyed by
        return f"rg:c:{spec.name}:{self._key('counter', '|'.join(map(str, parts)))}"

    def member(self, spec: CounterSpec, facts: Mapping[str, Any]) -> str | None:
        if spec.distinct_fact is None:
            return None
        # Members need no keying of their own: identities in facts are keyed already,
        # and HyperLogLog keeps only hashes of what it is given.
        value = facts.get(spec.distinct_fact)
        return None if value is None or value == "" else str(value)

    def op(self, spec: CounterSpec, key: str, member: str | None, *, update: bool) -> Op:
        window_ms = int(spec.window_s * 1000)
        if spec.kind == "distinct":
            return Distinct(key, window_ms, member if update else None)
        return Count(key, window_ms, 1 if update else 0)


class Engine:
    """Decides risk events and takes feedback on them."""

    def __init__(
        self,
        ruleset: RuleSet,
        store: Store,
        signals: SignalExtractor,
        keyer: Keyer,
        log: DecisionLog | None = None,
        feedback_ttl: float = 900.0,
    ) -> None:
        self.ruleset = ruleset
        self.store = store
        self._signals = signals
        self._planner = CounterPlanner(keyer)
        self._log = log
        self._feedback_ttl_ms = int(feedback_ttl * 1000)

    async def decide(self, event: RiskEvent) -> Decision:
        started = time.perf_counter()
        ruleset = self.ruleset  # one set for the whole request, whatever a reload does
        facts = self._signals.facts(event)
        ops: list[Op] = []
        names: list[str] = []
        outcome_keys: dict[str, tuple[str, str | None]] = {}
        for spec in ruleset.counters_for(event.event):
            key = self._planner.key(spec, facts)
            if key is None:
                continue
            member = self._planner.member(spec, facts)
            # Feedback-fed counters (failed logins) are only read by decisions; the
            # record remembers their keys so feedback can update them later.
            fed_by_feedback = bool(spec.on)
            ops.append(self._planner.op(spec, key, member, update=not fed_by_feedback))
            names.append(spec.name)
            if fed_by_feedback:
                outcome_keys[spec.name] = (key, member)
        record = {"event": event.event, "counters": outcome_keys}
        ops.append(Put(_record_key(event.request_id), json.dumps(record), self._feedback_ttl_ms))
        degraded = self._signals.degraded
        counters: dict[str, float] = {}
        try:
            results = await self.store.apply(ops, event.time)
        except StoreError as exc:
            degraded = True
            logger.warning("deciding %s without counters: %s", event.request_id, exc)
        else:
            counters = {name: float(value) for name, value in zip(names, results, strict=False)
                        if isinstance(value, (int, float))}
        matches = ruleset.evaluate(event.event, facts, counters)
        verdict = decide(matches, ruleset.thresholds_for(event.event))
        elapsed = time.perf_counter() - started
        metrics.DECISIONS.labels(event.event, verdict.decision).inc()
        metrics.DECISION_SECONDS.observe(elapsed)
        for match in matches:
            metrics.RULE_HITS.labels(match.rule, "shadow" if match.shadow else "enforce").inc()
        if degraded:
            metrics.DEGRADED.inc()
        if self._log is not None:
            self._log.write(
                {
                    "type": "decision",
                    "request_id": event.request_id,
                    "time": event.time,
                    "event": event.event,
                    "decision": verdict.decision,
                    "score": verdict.score,
                    "reasons": [m.rule for m in verdict.reasons],
                    "shadow": [m.rule for m in verdict.shadow],
                    "latency_ms": round(elapsed * 1000, 3),
                    "degraded": degraded,
                    "rules_version": ruleset.version,
                    "facts": facts,
                    "counters": counters,
                }
            )
        return Decision(event.request_id, event.event, verdict, degraded, counters, outcome_keys)

    async def feedback(self, request_id: str, outcome: Outcome, now: float) -> bool:
        """Record an outcome for a recent decision; False when the request id is unknown.

        Outcomes feed the counters that declare them (``on: [login_failed]``) and are
        logged as labels for the model.
        """
        (raw,) = await self.store.apply([Get(_record_key(request_id))], now)
        if not isinstance(raw, str):
            return False
        record = json.loads(raw)
        keys = {name: (key, member) for name, (key, member) in record["counters"].items()}
        await self._count_outcome(request_id, record["event"], keys, outcome, now)
        return True

    async def record_outcome(self, decision: Decision, outcome: Outcome, now: float) -> None:
        """Record an outcome seen in-process (a gateway saw the login fail)."""
        await self._count_outcome(decision.request_id, decision.event, decision.outcome_keys,
                                  outcome, now)

    async def _count_outcome(
        self, request_id: str, event: str, keys: Mapping[str, tuple[str, str | None]],
        outcome: Outcome, now: float,
    ) -> None:
        specs = self.ruleset.counters
        ops: list[Op] = [
            self._planner.op(specs[name], key, member, update=True)
            for name, (key, member) in keys.items()
            if name in specs and outcome in specs[name].on
        ]
        if ops:
            await self.store.apply(ops, now)
        if self._log is not None:
            self._log.write({"type": "feedback", "request_id": request_id, "time": now,
                             "event": event, "outcome": outcome})
