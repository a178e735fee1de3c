"""Runs the stages for one risk event: signals → counters → rules → decision → log.

The engine owns no HTTP: the decision API, the proxy and the middleware all build a
:class:`RiskEvent` and await :meth:`Engine.decide`. Every store access a decision
needs — counters, the feedback record — goes out as one batch, so a decision is one
Redis round trip. A rule set is read once per request into a local, so a hot swap
never shows a request half of one set and half of another. What the model does with a
decision besides scoring it waits until after the response (:meth:`Engine.learn_pending`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from riskgate.decision.verdict import Action, Match, Thresholds, Verdict, decide
from riskgate.engine.batch import Batch
from riskgate.engine.counters import CounterPlanner
from riskgate.engine.feedback import (
    ANSWERED,
    FeedbackRecord,
    FeedbackResult,
    dumps_vector,
    loads_vector,
    record_key,
    take_ops,
    vector_key,
)
from riskgate.engine.sightings import LostSightings
from riskgate.errors import StoreError
from riskgate.event.types import EventName, Outcome, RiskEvent
from riskgate.model.base import Model, label_of
from riskgate.observability import metrics
from riskgate.observability.decisionlog import DecisionLog
from riskgate.rules.model import RuleSet
from riskgate.rules.runtime_lists import RuntimeLists, for_metrics
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.history import BROWSE_SECONDS, browsing, history_facts, history_ops
from riskgate.signals.keys import Keyer
from riskgate.store import Delete, Op, Put, Result, Store

logger = logging.getLogger(__name__)

#: The reason a decision names when a route's ``fail_mode`` decided it (store down).
STORE_UNAVAILABLE_RULE = "store-unavailable"
#: Decisions and labels waiting for the model. Learning is a sample, not a ledger:
#: when a burst outruns it the oldest are dropped, and scoring never waits.
LEARNING_QUEUE: Final = 10_000
#: Items taken between yields to the loop, so a backlog never holds up a response; the
#: label vectors of one chunk go to the store in one batch.
_LEARN_CHUNK: Final = 64
#: Seconds the learner lets decisions gather before it takes a chunk, unless a chunk's
#: worth already waits. Taking whatever waited, it ran a task step and a store call for
#: every dozen decisions (bench/inprocess.py); 20 ms at a few thousand decisions a
#: second fill a chunk. A label misses its vector only if it comes within that much of
#: the decision, far sooner than any outcome comes back.
_LEARN_GATHER: Final = 0.02
#: Who gave a label: ``/v1/feedback``, or the gateway itself (riskgate.engine.implicit):
#: a challenge left unsolved, or solved and followed by normal behaviour.
LabelSource = Literal["feedback", "unsolved-challenge", "passed-challenge"]


class LearningBudget:
    """At most ``per_second`` allowed requests per second learned per flow: a token
    bucket holding one second's worth.

    A detector learns what normal traffic looks like from a sample as well as from all
    of it, and each learned request costs a worker about 40 µs (half-space trees and the
    share limiter): at thousands of decisions per second learning everything would cost
    more than scoring. Which requests get the tokens follows their arrival, so a client
    gains no more of the sample than its share of the traffic, and the share limiter
    still bounds that.

    >>> budget = LearningBudget(2)
    >>> [budget.take("login", 10.0) for _ in range(3)], budget.take("login", 10.5)
    ([True, True, False], True)
    >>> budget.take("booking", 10.5)
    True
    """

    __slots__ = ("_last", "_tokens", "per_second")

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._tokens: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def take(self, event: str, now: float) -> bool:
        """Whether a request of ``event`` at ``now`` may be learned; spends a token."""
        last = self._last.get(event)
        if last is None:
            tokens = self.per_second
        else:
            # Event times may step back a little (clients' clocks, replay): never a refill.
            tokens = min(self.per_second,
                         self._tokens[event] + max(0.0, now - last) * self.per_second)
        self._last[event] = now if last is None else max(now, last)
        if tokens < 1.0:
            self._tokens[event] = tokens
            return False
        self._tokens[event] = tokens - 1.0
        return True


@dataclass(frozen=True, slots=True)
class _Decided:
    """A decision the model has yet to see: its feature vector to store for a label, and,
    when it was allowed, a sample of normal traffic to learn."""

    request_id: str
    event: EventName
    #: The features it was scored with (Model.features), computed once per decision.
    x: Mapping[str, float]
    #: Who sent it, for the model's share limits (features name no client).
    facts: Mapping[str, Any]
    now: float
    #: Whether the detector learns it as normal traffic (see decide_facts).
    learn: bool
    #: Whether its feedback record reached the store (else no label can find it).
    recorded: bool


@dataclass(frozen=True, slots=True)
class _Labelled:
    event: EventName
    x: Mapping[str, float]
    label: bool


def _allowed_on_its_own(verdict: Verdict, thresholds: Thresholds) -> bool:
    """Whether the anomaly model learns a request as normal traffic: allowed, and it
    would have been without the rules that lower risk.

    Weak signals and all: most people's requests match some rule adding a little risk (a
    device not seen before), and a detector that learns only the rest takes people for
    outliers (bench/model_eval.py: 0.58 against 0.75 AUC). But not a risky request that a
    pass or a trusted network brought under the line: a script that pays for a
    challenge would teach the detector that its traffic is normal (the same bench, with
    the proxy's challenges: the burst waves went from all flagged to 77 %).
    """
    if verdict.decision != "allow":
        return False
    risk = sum(m.score for m in verdict.reasons if m.score > 0)
    return risk < thresholds.challenge and not any(
        m.action in ("challenge", "block") for m in verdict.reasons)


def _normal(verdict: Verdict, matches: list[Match]) -> bool:
    """Whether a request was beyond suspicion: allowed, and no rule adding risk matched,
    in shadow either (a shadow rule is one being tried on traffic it suspects)."""
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
    #: Beyond suspicion: allowed, and no rule adding risk matched (shadow rules
    #: included). A solved challenge followed by such a request labels the challenged
    #: request a person's (riskgate.engine.implicit).
    normal: bool = False
    #: Whether the model learns it as normal traffic, after the response (allowed on its
    #: own merits, with the store answering; see _allowed_on_its_own).
    learned: bool = False


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
    do with a decision after scoring it waits in a queue that :meth:`learn_in_background`
    drains after responses are sent (:meth:`learn_pending` drains it at once): store its
    label vector, for a label that may come later, and learn it as normal traffic if it
    was allowed.
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
        learn_per_second: float = 200.0,
    ) -> None:
        """``learn_per_second``: how many allowed requests per second each flow's detector
        learns at most (:class:`LearningBudget`)."""
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
        self._learning: deque[_Decided | _Labelled] = deque(maxlen=LEARNING_QUEUE)
        self._to_learn = asyncio.Event()
        #: Learning steps that raised (the request was decided; only the model missed it).
        self.learning_failures = 0
        self._learning_budget = LearningBudget(learn_per_second)
        #: Whether unscored requests with a device id have reached this engine (the
        #: gateway reports them): ``device.browsed`` is derived only once they have.
        self.sees_browsing = False
        #: Devices whose ``device.browsed`` stays unknown because a sighting was lost.
        self.lost_sightings = LostSightings()

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
        # A label needs more than this record: the features, counters included. Those
        # are only known once this batch has answered, so learn_pending stores them
        # after the response.
        record = FeedbackRecord(event, outcome_keys)
        batch.add("feedback", [record.put(request_id, self._feedback_ttl_ms)])
        lists = self.runtime_lists
        if lists is not None:
            batch.add("lists", [lists.version_op()])
        listed: list[Match] = []
        counters: dict[str, float] = {}
        remembered_results: list[Result] | None = None
        recorded = True
        try:
            results = await batch.send(self.store, now)
        except StoreError as exc:
            degraded, recorded = True, False
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
        knows_browsing = self.knows_browsing(facts.get("device.key"), now)
        facts.update(history_facts([name for name, _ in remembered], remembered_results,
                                   facts, now, sees_browsing=knows_browsing))
        model, x = self.model, None
        if model is not None:
            try:
                # Once per decision, here: every fact the features read is known by now
                # (counters, remembered signals), and the vector scored is the one the
                # store keeps for a label and the one the detector learns.
                x = model.features(event, facts, counters)
                facts.update(model.score_one(event, x))
            except Exception:  # a model fault must never fail a decision
                degraded = True
                logger.exception("deciding %s without the model", request_id)
        matches = ruleset.evaluate(event, facts, counters, now=now)
        thresholds = ruleset.thresholds_for(event)
        verdict = decide([*matches, *listed], thresholds)
        normal = _normal(verdict, [*matches, *listed])
        # Never a decision made without its counters (the store did not answer).
        learn = (x is not None and recorded and _allowed_on_its_own(verdict, thresholds)
                 and self._learning_budget.take(event, now))
        if x is not None:
            self._learn_later(_Decided(request_id, event, x, facts, now, learn, recorded))
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
        return Decision(request_id, event, verdict, degraded, counters, outcome_keys, normal,
                        learn)

    def knows_browsing(self, device_key: str | None, now: float) -> bool:
        """Whether ``device.browsed`` can be told for this device at ``now``: unscored
        requests with device ids reach this engine, and none of this device's sightings
        that still count was lost (engine/sightings.py)."""
        return self.sees_browsing and not self.lost_sightings.unknown(device_key, now)

    async def note_device(self, device_key: str, now: float) -> None:
        """Record that a device id was seen on a request nobody scores (a page view).

        ``device.first_seen_age`` then dates from the device's first page, not its first
        login, and ``device.browsed`` holds for an hour. A sighting the store does not
        take makes that device's ``device.browsed`` unknown for the hour instead.
        """
        self.sees_browsing = True
        try:
            await self.store.apply(browsing(device_key, now), now)
        except StoreError as exc:
            # One warning per spell of losses: in an outage every page would log one.
            if self.lost_sightings.lose(device_key, now):
                until = time.strftime("%H:%M:%S UTC", time.gmtime(now + BROWSE_SECONDS))
                logger.warning("device sighting not recorded (%s): the devices whose "
                               "sightings are lost are not said never to have browsed "
                               "until %s at the latest", exc, until)
            else:
                logger.debug("device sighting not recorded: %s", exc)

    async def feedback(self, request_id: str, outcome: Outcome, now: float) -> FeedbackResult:
        """Record an outcome for a recent decision, once.

        ``recorded``: the outcome fed the counters that declare it (``on:
        [login_failed]``), labelled the decision for the model when it says who sent
        it, and was logged; ``unknown``: no recent decision has this id; ``answered``: it
        already took an outcome, reported or seen by the gateway (:meth:`label`).
        """
        taken = await self._take(request_id, now)
        if isinstance(taken, str):
            return taken
        record, vector = taken
        await self._count_outcome(request_id, record.event, record.counters, outcome, now)
        label = label_of(outcome)
        if label is not None:
            self._label(request_id, record.event, vector, label, "feedback")
        return "recorded"

    async def label(self, request_id: str, label: bool, source: LabelSource,
                    now: float) -> FeedbackResult:
        """Label a recent decision from what the gateway saw (``source``), once: it takes
        the request id's one outcome as :meth:`feedback` does, so a ``/v1/feedback`` for
        it afterwards is ``answered`` (409). Counts nothing: counters declared ``on:`` an
        outcome count what frontends report, the same with the model on or off."""
        taken = await self._take(request_id, now)
        if isinstance(taken, str):
            return taken
        record, vector = taken
        self._label(request_id, record.event, vector, label, source)
        if self._log is not None:
            self._log.write({"type": "label", "request_id": request_id, "time": now,
                             "event": record.event, "label": "bot" if label else "human",
                             "source": source})
        return "recorded"

    async def _take(self, request_id: str, now: float
                    ) -> tuple[FeedbackRecord, Mapping[str, float] | None] | FeedbackResult:
        """Take a request id's one outcome: its record and label vector, or why not.

        Taking the record and marking it answered is one atomic op, so two workers given
        the same id at once cannot both take it; the vector comes in the same batch.
        """
        ops = take_ops(request_id, self._feedback_ttl_ms, with_vector=self.model is not None)
        raw, *stored = await self.store.apply(ops, now)
        if raw == ANSWERED:
            return "answered"
        if not isinstance(raw, str):
            # Nothing was there: take back the marker rather than keep one per made-up id.
            await self.store.apply([Delete(record_key(request_id))], now)
            return "unknown"
        vector = loads_vector(stored[0]) if stored and isinstance(stored[0], str) else None
        return FeedbackRecord.loads(raw), vector

    def _label(self, request_id: str, event: EventName, x: Mapping[str, float] | None,
               label: bool, source: LabelSource) -> None:
        if self.model is None:
            return
        if x is None:
            # Its vector was never stored: a label within a moment of the decision,
            # before learn_pending ran, or one the learning queue dropped in a burst.
            metrics.MODEL_LABELS_UNLEARNED.labels(source).inc()
            logger.debug("label for %s not learned: no label vector stored", request_id)
            return
        metrics.MODEL_LABELS.labels(source, "bot" if label else "human").inc()
        self._learn_later(_Labelled(event, x, label))

    def _learn_later(self, item: _Decided | _Labelled) -> None:
        self._learning.append(item)
        self._to_learn.set()

    async def learn_pending(self, limit: int | None = None) -> int:
        """Do what the model waits to do (at most ``limit`` items); how many requests it
        learned as normal traffic."""
        learned = 0
        while self._learning and (limit is None or limit > 0):
            _, chunk_learned = await self._learn_chunk(
                _LEARN_CHUNK if limit is None else min(limit, _LEARN_CHUNK))
            learned += chunk_learned
            limit = None if limit is None else limit - _LEARN_CHUNK
        return learned

    async def _learn_chunk(self, size: int) -> tuple[int, int]:
        """Up to ``size`` items: (taken, learned as normal)."""
        model = self.model
        if model is None:
            self._learning.clear()
            return 0, 0
        taken = learned = 0
        vectors: list[Op] = []
        now = 0.0
        while self._learning and taken < size:
            item = self._learning.popleft()
            taken += 1
            try:
                if isinstance(item, _Labelled):
                    model.learn_label(item.event, item.x, item.label)
                    continue
                now = item.now
                if item.recorded:
                    vectors.append(Put(vector_key(item.request_id), dumps_vector(item.x),
                                       self._feedback_ttl_ms))
                if item.learn:
                    model.learn_one(item.event, item.x, item.facts)
                    learned += 1
            except Exception:  # the decision was made; only the model misses this sample
                self.learning_failures += 1
                if self.learning_failures == 1 or self.learning_failures % 10_000 == 0:
                    logger.exception("the model could not learn (%d failures so far)",
                                     self.learning_failures)
        if vectors:
            # A second store call per chunk, not per decision, and after the responses:
            # the request path stays one round trip (what a label needs is only known
            # once the decision's batch has answered, see decide_facts).
            try:
                await self.store.apply(vectors, now)
            except StoreError as exc:
                logger.debug("label vectors of %d decisions not stored: %s", len(vectors), exc)
        return taken, learned

    async def learn_in_background(self) -> None:
        """Drain the learning queue for as long as the service runs, a chunk at a time
        between the loop's other work, so learning happens after responses are sent."""
        while True:
            await self._to_learn.wait()
            self._to_learn.clear()
            # A chunk at a time, each gathered first: draining on while anything waited
            # took what the last store write's round trip let in, a dozen decisions.
            if len(self._learning) < _LEARN_CHUNK:
                await asyncio.sleep(_LEARN_GATHER)
            await self._learn_chunk(_LEARN_CHUNK)
            if self._learning:
                self._to_learn.set()
            # The store write awaits only when there is one: let responses out.
            await asyncio.sleep(0)

    async def record_outcome(self, decision: Decision, outcome: Outcome, now: float) -> None:
        """Record an outcome seen in-process (a gateway saw the login fail)."""
        await self._count_outcome(decision.request_id, decision.event, decision.outcome_keys,
                                  outcome, now)

    async def _count_outcome(
        self, request_id: str, event: str, keys: Mapping[str, tuple[str, str | None]],
        outcome: Outcome, now: float,
    ) -> None:
        planned = {c.name: c for c in self._planner.plan(self.ruleset, event).counters}
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
