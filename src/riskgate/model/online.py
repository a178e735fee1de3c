"""The online model: per flow, a River anomaly detector and a River classifier.

``model.anomaly`` (0..1) says how unlike the flow's allowed traffic a request is;
``model.bot_probability`` (0..1) how like the requests that outcomes confirmed as
bots. Both are scored before the request is learned from (River's score-then-learn),
and neither says anything until it has learned enough (the warm-up): a fact the
model leaves out is None to the rules, and a comparison with None never matches.

What the anomaly detector learns is guarded, because an attacker who can teach it
what normal looks like can make its own traffic normal:

- the engine hands it only requests the rules allowed on their own merits: never one
  they refused, nor one that a rule lowering risk (a pass) brought under the line
  (the idea of River's ``QuantileFilter(protect_anomaly_detector=True)``, with the
  rule set as the filter, ``model.anomaly`` rules included);
- :class:`ShareLimiter` refuses a sample whose address, prefix, device or TLS
  fingerprint already supplied more than its share of the flow's recent samples.

>>> model = OnlineModel(warmup=2, min_labels=1)
>>> x = model.features("login", {"device.header_count": 10}, {})
>>> model.score_one("login", x)
{}
>>> for i in range(3):
...     model.learn_one("login", x, {"ip": f"198.51.100.{i}"})
>>> sorted(model.score_one("login", x))
['model.anomaly']
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from river import anomaly, linear_model, optim, stats
from river.base import AnomalyDetector

from riskgate.event.types import EventName
from riskgate.model.features import features


class StandardDistance(AnomalyDetector):
    """How many standard deviations a request lies from the learned mean, feature by
    feature: the mean of squared z-scores, each capped at 100 so one feature cannot
    drown the rest. River's ``StandardScaler | distance``, as one detector.

    >>> detector = StandardDistance()
    >>> for v in (0.4, 0.5, 0.6) * 10:
    ...     detector.learn_one({"a": v})
    >>> detector.score_one({"a": 0.5}) < 1 < detector.score_one({"a": 1.0})
    True
    """

    def __init__(self) -> None:
        self.stats: dict[Hashable, stats.Var] = {}

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        for name, value in x.items():
            var = self.stats.get(name)
            if var is None:
                var = self.stats[name] = stats.Var()
            var.update(value)

    def score_one(self, x: dict[Hashable, Any]) -> float:
        total = 0.0
        for name, value in x.items():
            var = self.stats.get(name)
            if var is None:
                continue
            # A feature that never varied (always 0) makes any change stand out, but
            # within reason: its deviation counts against a floor of 0.05.
            spread = max(var.get(), 0.0025)
            total += min(100.0, (value - var.mean.get()) ** 2 / spread)
        return total / max(len(x), 1)


#: Detectors by name; ``model.detector`` in the config picks one, bench/model_eval.py
#: compares them. Sizes are not River's defaults on purpose: HalfSpaceTrees at River's
#: height 15 costs ~830 µs to learn and a 52 MB snapshot; 10 trees of height 8 cost
#: ~20 µs and 167 KB.
DETECTORS: Final[Mapping[str, Callable[[int], AnomalyDetector]]] = {
    "half-space-trees": lambda seed: anomaly.HalfSpaceTrees(n_trees=10, height=8,
                                                            window_size=250, seed=seed),
    "one-class-svm": lambda _seed: anomaly.OneClassSVM(nu=0.02),
    "standard-distance": lambda _seed: StandardDistance(),
}
#: Chosen on bench/model_eval.py, seeds 7, 8 and 9 (docs/model.md has the tables). On
#: the burst waves (250 stuffing logins in three minutes), learning what ships (allowed
#: on its own merits, share-limited), the trees rank 0.998-0.999 AUC, unguarded
#: 0.85-0.90: unguarded they fail on bursts as River issue #260 says (a wave fills a
#: window's mass profile), and the guard keeps waves out. Standard distance ranks as
#: well, the one-class SVM worse (0.78-0.94). The SVM ranks all bots best (0.77-0.84
#: against the trees' 0.75-0.76) but its score spreads people out, so at the shipped
#: rules it flagged 5-10 % of people against the trees' 2.0-2.4 %, and rules + model
#: caught 0.1 % of bots at 1 % false positives against the trees' 42-43 %.
DEFAULT_DETECTOR: Final = "half-space-trees"

#: Identities whose share of the learned samples is bounded, with the fact naming them.
IDENTITIES: Final = (("address", "ip"), ("prefix", "ip.prefix"), ("device", "device.key"),
                     ("fingerprint", "device.tls_fingerprint"))
#: A TLS fingerprint names a browser build, which millions share; its bound only stops
#: one client stack from being most of what the model learns.
FINGERPRINT_SHARE: Final = 0.25


class Features(dict[str, float]):
    """A request's feature vector (:func:`~riskgate.model.features.features`), and what
    scoring it found that learning it needs again.

    ``scored`` is the flow's detector's view of the vector and its raw score, or None
    while unscored. The engine learns an allowed request after the response, from this
    very object, so the detector is not walked a second time for its calibration (its
    raw score only changes at a window's end, every 250 samples for the default trees;
    the second walk was a third of what learning a sample cost).
    """

    # A class default rather than __slots__ and an __init__: an unscored vector (a flow
    # warming up, a decision the store did not answer) then costs a plain dict's copy.
    scored: tuple[dict[Hashable, Any], float] | None = None


def _without_label_prior(proba: float, labels: Counter[str]) -> float:
    """The classifier's probability with the base rate of its labels taken out.

    Outcomes label far more bots than people (every failed challenge is one; a person is
    confirmed only now and then), and a logistic regression learns that base rate into
    its intercept: it would call most people bots. Subtracting the labels' log odds
    leaves what the request's features say, as if both kinds had been labelled alike.

    >>> round(_without_label_prior(0.9, Counter(bot=89, human=9)), 2)
    0.5
    """
    proba = min(max(proba, 1e-9), 1 - 1e-9)
    odds = math.log(proba / (1 - proba)) - math.log((labels["bot"] + 1) / (labels["human"] + 1))
    return 1 / (1 + math.exp(-odds))


class ShareLimiter:
    """Bounds the share of the last ``window`` learned samples any one identity supplies.

    Identities are kept as hashes, in memory only: a snapshot never holds them.

    >>> limiter = ShareLimiter(window=100, share=0.05)
    >>> [limiter.admit({"ip": "203.0.113.5"}) for _ in range(7)].count(True)
    5
    >>> limiter.admit({"ip": "198.51.100.7"})
    True
    """

    def __init__(self, window: int, share: float) -> None:
        self.window = window
        self._limits = {kind: max(1, int(window * (FINGERPRINT_SHARE if kind == "fingerprint"
                                                    else share)))
                        for kind, _ in IDENTITIES}
        self._recent: deque[tuple[int, ...]] = deque()
        self._counts: Counter[int] = Counter()

    def admit(self, facts: Mapping[str, Any]) -> bool:
        """Whether a sample from these identities may be learned; counts it if so."""
        keys = []
        counts, limits = self._counts, self._limits
        for kind, fact in IDENTITIES:
            value = facts.get(fact)
            if value is None:
                continue
            # Python's own 64-bit hash, keyed per process (SipHash): it names no client
            # to anyone outside this process, as blake2b did, and costs a tenth of it (a
            # quarter of the ~10 µs that admitting a sample took went to four digests).
            key = hash((kind, value))
            if counts[key] >= limits[kind]:
                return False
            keys.append(key)
        self._recent.append(tuple(keys))
        for key in keys:
            counts[key] += 1
        if len(self._recent) > self.window:
            # One key at a time: rebuilding the counter to drop the zeros walked every
            # identity in the window on every learned sample (200 µs at 2000 samples).
            for key in self._recent.popleft():
                left = counts[key] - 1
                if left:
                    counts[key] = left
                else:
                    del counts[key]
        return True


CALIBRATION_WINDOW: Final = 1000


@dataclass
class Calibration:
    """Maps a detector's raw score to 0..1 by where it falls among the scores of the
    last :data:`CALIBRATION_WINDOW` learned samples: 0 at or below their median, 0.5 at
    their 99th percentile, 1 at three times that distance. Detectors' raw scales differ
    (a margin, a mass), so ``model.anomaly > 0.6`` means the same whichever runs; the
    window is rolling because a detector's scale drifts as it learns."""

    median: stats.RollingQuantile = field(
        default_factory=lambda: stats.RollingQuantile(0.5, CALIBRATION_WINDOW))
    high: stats.RollingQuantile = field(
        default_factory=lambda: stats.RollingQuantile(0.99, CALIBRATION_WINDOW))

    def update(self, raw: float) -> None:
        self.median.update(raw)
        self.high.update(raw)

    def __call__(self, raw: float) -> float:
        median, high = self.median.get(), self.high.get()
        if median is None or high is None:
            return 0.0
        spread = max(high - median, 1e-9)
        # Smooth and never 1: scores far out stay ordered instead of tying at a cap.
        return float(1.0 - 0.5 ** (max(0.0, raw - median) / spread))


@dataclass
class FlowModel:
    """The models of one flow, and what they have learned."""

    detector: AnomalyDetector
    #: The step 0.1: labels come in bursts (a stuffing wave fails a few hundred
    #: challenges in minutes), and at 0.2 the weights chased each burst, flagging 2.4-4.1 %
    #: of people at the shipped rules; at 0.05 they caught fewer bots (bench/model_eval.py:
    #: 42-43 % of bots at 1 % false positives and 2.0-2.4 % of people at 0.1, 39 % at 0.05).
    classifier: linear_model.LogisticRegression = field(
        default_factory=lambda: linear_model.LogisticRegression(optimizer=optim.SGD(0.1)))
    calibration: Calibration = field(default_factory=Calibration)
    #: The detector's feature names, fixed by its first sample: a detector's structure (a tree's
    #: splits) is built over them, so a rule reload that adds a counter cannot change
    #: what a vector holds under it.
    names: tuple[str, ...] = ()
    samples: int = 0
    refused: int = 0
    labels: Counter[str] = field(default_factory=Counter)

    def vector(self, x: Mapping[str, float]) -> dict[Hashable, Any]:
        return {name: x.get(name, 0.0) for name in self.names}


class OnlineModel:
    """The :class:`~riskgate.model.base.Model` riskgate runs: one :class:`FlowModel` per
    flow, made on its first sample.

    ``warmup``: unlabelled samples a flow's detector learns before ``model.anomaly`` is
    given; ``min_labels``: labels of each kind before ``model.bot_probability`` is;
    ``max_share``: the share of the last ``window`` samples one address, prefix or
    device may supply.
    """

    def __init__(self, *, warmup: int = 500, min_labels: int = 20, max_share: float = 0.02,
                 window: int = 2000, detector: str = DEFAULT_DETECTOR, seed: int = 42) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector `{detector}`; known: {', '.join(DETECTORS)}")
        self.warmup, self.min_labels, self.max_share = warmup, min_labels, max_share
        self.window, self.detector, self.seed = window, detector, seed
        self.flows: dict[EventName, FlowModel] = {}
        # Not part of what is learned, so not part of a snapshot (see __getstate__).
        self._limiters: dict[EventName, ShareLimiter] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_limiters"] = {}
        return state

    def _flow(self, event: EventName) -> FlowModel:
        flow = self.flows.get(event)
        if flow is None:
            flow = self.flows[event] = FlowModel(DETECTORS[self.detector](self.seed))
        return flow

    def features(self, event: EventName, facts: Mapping[str, Any],
                 counters: Mapping[str, float]) -> Features:
        """Every feature either model reads (:func:`~riskgate.model.features.features`),
        counters and remembered signals included: a label must teach what scoring saw."""
        return Features(features(facts, counters))

    def score_one(self, event: EventName, x: Mapping[str, float]) -> dict[str, float]:
        flow = self.flows.get(event)
        if flow is None:
            return {}
        scores: dict[str, float] = {}
        if flow.samples >= self.warmup:
            view = flow.vector(x)
            raw = flow.detector.score_one(view)
            scores["model.anomaly"] = flow.calibration(raw)
            if flow.names and isinstance(x, Features):  # no names: no view to learn from
                x.scored = (view, raw)
        # get(), not []: a Counter's missing key goes through a Python-level __missing__,
        # and most flows have no labels at all.
        if min(flow.labels.get("bot", 0), flow.labels.get("human", 0)) >= self.min_labels:
            proba = flow.classifier.predict_proba_one(x)  # type: ignore[no-untyped-call]
            scores["model.bot_probability"] = _without_label_prior(float(proba.get(True, 0.0)),
                                                                  flow.labels)
        return scores

    def learn_label(self, event: EventName, x: Mapping[str, float], label: bool) -> None:
        """Learn that a request with features ``x`` was a bot (True) or a person (False).

        A feature missing from ``x`` is 0, and a logistic regression's step leaves the
        weight of a 0 feature alone, so stored vectors may leave zeros out.
        """
        flow = self._flow(event)
        flow.classifier.learn_one(dict(x), label)
        flow.labels["bot" if label else "human"] += 1

    def learn_one(self, event: EventName, x: Mapping[str, float],
                  facts: Mapping[str, Any]) -> None:
        """Learn a request allowed on its own merits; refused when one of the identities
        in ``facts`` already supplied its share of the flow's recent samples."""
        flow = self._flow(event)
        limiter = self._limiters.get(event)
        if limiter is None:
            limiter = self._limiters[event] = ShareLimiter(self.window, self.max_share)
        if not limiter.admit(facts):
            flow.refused += 1
            return
        scored = x.scored if isinstance(x, Features) else None
        if scored is not None:
            vector, raw = scored
            flow.calibration.update(raw)
        else:
            if not flow.names:
                flow.names = tuple(sorted(x))
            vector = flow.vector(x)
            if flow.samples >= 1:  # the first sample builds the structure a score walks
                flow.calibration.update(flow.detector.score_one(vector))
        flow.detector.learn_one(vector)
        flow.samples += 1

    def summary(self) -> dict[str, dict[str, Any]]:
        """What each flow has learned, for ``riskgate model show`` and the logs."""
        return {
            event: {"samples": flow.samples, "refused_by_share_limit": flow.refused,
                    "anomaly_warm": flow.samples >= self.warmup,
                    "labels": {"bot": flow.labels["bot"], "human": flow.labels["human"]},
                    "classifier_warm": min(flow.labels["bot"],
                                           flow.labels["human"]) >= self.min_labels,
                    "features": len(flow.names)}
            for event, flow in sorted(self.flows.items())
        }
