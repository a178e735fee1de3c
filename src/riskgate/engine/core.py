"""Runs the stages for one risk event: signals → counters → rules → decision → log.

The engine owns no HTTP: the decision API, the proxy and the middleware all build a
:class:`RiskEvent` and await :meth:`Engine.decide`. Every store access a decision
needs — counters, the feedback record — goes out as one batch, so a decision is one
Redis round trip. A rule set is read once per request into a local, so a hot swap
never shows a request half of one set and half of another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from riskgate.decision.verdict import Action, Match, Verdict, decide
from riskgate.engine.batch import Batch
from riskgate.engine.counters import CounterPlanner
from riskgate.engine.feedback import ANSWERED, FeedbackRecord, FeedbackResult, record_key
from riskgate.errors import StoreError
from riskgate.event.types import EventName, Outcome, RiskEvent
from riskgate.model.base import Label, Model, label_of
from riskgate.observability import metrics
from riskgate.observability.decisionlog import DecisionLog
from riskgate.rules.model import RuleSet
from riskgate.rules.runtime_lists import RuntimeLists, for_metrics
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.history import browsing, history_facts, history_ops
from riskgate.signals.keys import Keyer
from riskgate.store import Delete, Op, Put, Result, Store

logger = logging.getLogger(__name__)

#: The reason a decision names when a route's ``fail_mode`` decided it (store down).
STORE_UNAVAILABLE_RULE = "store-unavailable"
#: Requests waiting for the model to learn them. Learning is a sample, not a ledger:
#: when a burst outruns it the oldest are dropped, and scoring never waits.
LEARNING_QUEUE: Final = 10_000
#: Requests learned between yields to the loop, so a backlog never holds up a response.
_LEARN_CHUNK: Final = 64

_Learning = tuple[EventName, Mapping[str, Any], Mapping[str, float], Label]


def _teaches_normal(verdict: Verdict, matches: list[Match]) -> bool:
    """Whether the anomaly model may learn from a request as normal traffic: allowed,
    and no rule adding risk matched, in shadow either (a shadow rule is one being tried
    on traffic it suspects)."""
    return verdict.decision == "allow" and not any(
        m.score > 0 or m.action in ("challenge", "block") for m in matches)


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

    then the rules, the verdict, the metrics and the decision log. What the model is to
    learn waits in a queue that :meth:`learn_in_background` drains after responses
    are sent (:meth:`learn_pending` drains it at once).
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
        self._learning: deque[_Learning] = deque(maxlen=LEARNING_QUEUE)
        self._to_learn = asyncio.Event()
        #: Learning steps that raised (the request was decided; only the model missed it).
        self.learning_failures = 0
        #: Whether unscored requests with a device id have reached this engine (the
        #: gateway reports them): ``device.browsed`` is derived only once they have.
        self.sees_browsing = False

    async def decide(self, event: RiskEvent, *, fail_mode: Action | None = None) -> Decision:
        """Decide ``event``; ``fail_mode`` is the action taken while the store is
        unreachable (None: the rules decide on what is left)."""
        started = time.perf_counter()
        facts = self._signals.facts(event)
        return await self.decide_facts(event.request_id, event.event, facts, event.time,
                                       degraded=self._signals.degraded, started=started,
                                       fail_mode=fail_mode)

    async def decide_facts(
        self, request_id: str, event: EventName, facts: dict[str, Any], now: float, *,
        degraded: bool = False, started: float | None = None, fail_mode: Action | None = None,
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
            # Debug only: while the store is down every decision lands here, and the
            # breaker has already said why, once (store/breaker.py).
            logger.debug("deciding %s without counters: %s", request_id, exc)
            if fail_mode is not None:
                listed.append(Match(STORE_UNAVAILABLE_RULE, 0.0, fail_mode))
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
                                   facts, now, sees_browsing=self.sees_browsing))
        if self.model is not None:
            try:
                facts.update(self.model.score_one(event, facts, counters))
            except Exception:  # a model fault must never fail a decision
                degraded = True
                logger.exception("deciding %s without the model", request_id)
        matches = ruleset.evaluate(event, facts, counters, now=now)
        verdict = decide([*matches, *listed], ruleset.thresholds_for(event))
        if self.model is not None and _teaches_normal(verdict, [*matches, *listed]):
            self._learn_later((event, facts, counters, None))
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
        login, and ``device.browsed`` holds for an hour. A store failure only loses the
        sighting.
        """
        self.sees_browsing = True
        try:
            await self.store.apply(browsing(device_key, now), now)
        except StoreError as exc:
            logger.warning("device sighting not recorded: %s", exc)

    async def feedback(self, request_id: str, outcome: Outcome, now: float) -> FeedbackResult:
        """Record an outcome for a recent decision, once.

        ``recorded``: the outcome fed the counters that declare it (``on:
        [login_failed]``), labelled the decision's facts for the model, and was logged;
        ``unknown``: no recent decision has this id; ``answered``: it already took an
        outcome. Taking the record and marking it answered is one atomic op, so two
        workers given the same id at once cannot both record it.
        """
        key = record_key(request_id)
        (raw,) = await self.store.apply([Put(key, ANSWERED, self._feedback_ttl_ms)], now)
        if raw == ANSWERED:
            return "answered"
        if not isinstance(raw, str):
            # Nothing was there: take back the marker rather than keep one per made-up id.
            await self.store.apply([Delete(key)], now)
            return "unknown"
        record = FeedbackRecord.loads(raw)
        await self._count_outcome(request_id, record.event, record.counters, outcome, now)
        label = label_of(outcome)
        if self.model is not None and record.facts is not None and label is not None:
            self._learn_later((record.event, record.facts, {}, label))
        return "recorded"

    def _learn_later(self, item: _Learning) -> None:
        self._learning.append(item)
        self._to_learn.set()

    def learn_pending(self, limit: int | None = None) -> int:
        """Let the model learn what is waiting (at most ``limit``); how many it took."""
        model, taken = self.model, 0
        while self._learning and (limit is None or taken < limit) and model is not None:
            event, facts, counters, label = self._learning.popleft()
            taken += 1
            try:
                model.learn_one(event, facts, counters, label)
            except Exception:  # the decision was made; only the model misses this sample
                self.learning_failures += 1
                if self.learning_failures == 1 or self.learning_failures % 10_000 == 0:
                    logger.exception("the model could not learn (%d failures so far)",
                                     self.learning_failures)
        return taken

    async def learn_in_background(self) -> None:
        """Drain the learning queue for as long as the service runs, a chunk at a time
        between the loop's other work, so learning happens after responses are sent."""
        while True:
            await self._to_learn.wait()
            self._to_learn.clear()
            # Not a poll: the sleep lets waiting responses out between chunks.
            while self.learn_pending(_LEARN_CHUNK):  # noqa: ASYNC110
                await asyncio.sleep(0)

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
