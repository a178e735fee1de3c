"""Runs the stages for one risk event: signals → counters → rules → decision → log.

The engine owns no HTTP: the decision API, the proxy and the middleware all build a
:class:`RiskEvent` and await :meth:`Engine.decide`. Every store access a decision
needs — counters, the feedback record — goes out as one batch, so a decision is one
Redis round trip. A rule set is read once per request into a local, so a hot swap
never shows a request half of one set and half of another.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from riskgate import metrics
from riskgate.decision import Match, Verdict, decide
from riskgate.decisionlog import DecisionLog
from riskgate.errors import StoreError
from riskgate.event import EventName, Outcome, RiskEvent
from riskgate.history import history_facts, history_ops
from riskgate.rules import RuleSet
from riskgate.runtime_lists import RuntimeLists, for_metrics
from riskgate.signals import Keyer, SignalExtractor
from riskgate.store import Count, Distinct, Get, Op, Put, Result, Store

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


@dataclass(frozen=True, slots=True)
class PlannedCounter:
    """A declared counter as one event's decisions use it, resolved once per rule set."""

    name: str
    key_facts: tuple[str, ...]
    distinct_fact: str | None
    window_ms: int
    distinct: bool
    #: Outcomes that update it; decisions then only read it.
    outcomes: frozenset[str]


#: Fact values that may stand in a store key as they are: addresses, prefixes, domains,
#: keyed identities, flight numbers. Anything else (long or odd client-sent attribute
#: values) is hashed first, so keys stay short and free of Redis hash-tag braces.
_KEY_SAFE = re.compile(r"[A-Za-z0-9.:/_@-]{1,64}")


class CounterPlanner:
    """Turns declared counters and a request's facts into store ops.

    Identities are keyed in the facts already, so counter keys carry fact values as
    they are; no raw account id or email can reach the store.
    """

    def __init__(self, keyer: Keyer) -> None:
        self._key = keyer
        self._plans: dict[str, tuple[PlannedCounter, ...]] = {}
        self._plans_of: RuleSet | None = None

    def plan(self, ruleset: RuleSet, event: str) -> tuple[PlannedCounter, ...]:
        """The counters a decision on ``event`` touches; computed once per rule set."""
        if ruleset is not self._plans_of:
            self._plans, self._plans_of = {}, ruleset
        plan = self._plans.get(event)
        if plan is None:
            plan = self._plans[event] = tuple(
                PlannedCounter(spec.name, spec.key_facts, spec.distinct_fact,
                               int(spec.window_s * 1000), spec.kind == "distinct", spec.on)
                for spec in ruleset.counters_for(event)
            )
        return plan

    def key(self, counter: PlannedCounter, facts: Mapping[str, Any]) -> str | None:
        parts = []
        for fact in counter.key_facts:
            value = facts.get(fact)
            if value is None or value == "":
                return None  # the request lacks what this counter is keyed by
            text = str(value)
            parts.append(text if _KEY_SAFE.fullmatch(text) else self._key("counter", text))
        return f"rg:c:{counter.name}:{'|'.join(parts)}"

    @staticmethod
    def member(counter: PlannedCounter, facts: Mapping[str, Any]) -> str | None:
        if counter.distinct_fact is None:
            return None
        # Members need no keying of their own: identities in facts are keyed already,
        # and HyperLogLog keeps only hashes of what it is given.
        value = facts.get(counter.distinct_fact)
        return None if value is None or value == "" else str(value)

    def ops_for(
        self, ruleset: RuleSet, event: str, facts: Mapping[str, Any]
    ) -> tuple[list[Op], list[str], dict[str, tuple[str, str | None]]]:
        """A decision's counter ops, the counter name of each, and the keys outcomes feed.

        Counters fed by outcomes (failed logins) are only read by decisions; their keys
        are handed back so that a later outcome can update the very same counters.
        """
        ops: list[Op] = []
        names: list[str] = []
        outcome_keys: dict[str, tuple[str, str | None]] = {}
        for counter in self.plan(ruleset, event):
            key = self.key(counter, facts)
            if key is None:
                continue
            member = self.member(counter, facts)
            ops.append(self.op(counter, key, member, update=not counter.outcomes))
            names.append(counter.name)
            if counter.outcomes:
                outcome_keys[counter.name] = (key, member)
        return ops, names, outcome_keys

    @staticmethod
    def op(counter: PlannedCounter, key: str, member: str | None, *, update: bool) -> Op:
        if counter.distinct:
            return Distinct(key, counter.window_ms, member if update else None)
        return Count(key, counter.window_ms, 1 if update else 0)


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
        runtime_lists: RuntimeLists | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.store = store
        self._signals = signals
        self._planner = CounterPlanner(keyer)
        self._log = log
        self._feedback_ttl_ms = int(feedback_ttl * 1000)
        #: None in replay: runtime entries are live operations, not part of a policy.
        self.runtime_lists = runtime_lists

    async def decide(self, event: RiskEvent) -> Decision:
        started = time.perf_counter()
        facts = self._signals.facts(event)
        return await self.decide_facts(event.request_id, event.event, facts, event.time,
                                       degraded=self._signals.degraded, started=started)

    async def decide_facts(
        self, request_id: str, event: EventName, facts: dict[str, Any], now: float, *,
        degraded: bool = False, started: float | None = None,
    ) -> Decision:
        """Decide from facts already extracted: counters → rules → decision → log.

        :meth:`decide` ends here after extracting signals, and ``riskgate replay`` calls
        it with the facts a decision log recorded, so a replayed decision runs the same
        code as a live one. ``facts`` gains the store-backed signals (history.py) in
        place. ``now`` (the event's time) drives counter windows and rule expiry;
        ``started`` is when timing began, for the latency metric.
        """
        started = time.perf_counter() if started is None else started
        ruleset = self.ruleset  # one set for the whole request, whatever a reload does
        # Everything the decision needs from the store goes in one batch, in this order:
        # counters, history, the feedback record, the runtime lists' version.
        ops, names, outcome_keys = self._planner.ops_for(ruleset, event, facts)
        remembered = history_ops(event, facts, now)
        ops.extend(op for _, op in remembered)
        record = orjson.dumps({"event": event, "counters": outcome_keys}).decode()
        ops.append(Put(_record_key(request_id), record, self._feedback_ttl_ms))
        lists = self.runtime_lists
        if lists is not None:
            ops.append(lists.version_op())
        listed: list[Match] = []
        counters: dict[str, float] = {}
        remembered_results: list[Result] | None = None
        try:
            results = await self.store.apply(ops, now)
        except StoreError as exc:
            degraded = True
            logger.warning("deciding %s without counters: %s", request_id, exc)
        else:
            counters = {name: float(value) for name, value in zip(names, results, strict=False)
                        if isinstance(value, (int, float))}
            remembered_results = results[len(names):len(names) + len(remembered)]
            if lists is not None:
                try:
                    await lists.refresh(results[-1], now)
                except StoreError as exc:
                    degraded = True
                    logger.warning("deciding %s without runtime lists: %s", request_id, exc)
                else:
                    listed = lists.matches(facts, now)
        facts.update(history_facts([name for name, _ in remembered], remembered_results,
                                   facts, now))
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

    async def feedback(self, request_id: str, outcome: Outcome, now: float) -> bool:
        """Record an outcome for a recent decision; False when the request id is unknown.

        Outcomes feed the counters that declare them (``on: [login_failed]``) and are
        logged as labels for the model.
        """
        (raw,) = await self.store.apply([Get(_record_key(request_id))], now)
        if not isinstance(raw, str):
            return False
        record = orjson.loads(raw)
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
