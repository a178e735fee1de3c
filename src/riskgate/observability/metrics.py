"""Prometheus metrics, served at ``/metrics`` on the gateway's port.

Label values are bounded sets (events, decisions, rule ids from the loaded set) so
the number of series cannot grow with traffic.

With ``riskgate serve --workers N`` a scrape reaches one worker of N, so the workers
keep their values in files under :data:`MULTIPROCESS_ENV` (prometheus_client's
multiprocess mode, chosen when it is imported) and every scrape adds up all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cache
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from riskgate.decision.verdict import Match

#: The folder where the workers of one ``riskgate serve`` keep their values.
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "riskgate_decisions", "Decisions made, by event and decision.", ["event", "decision"],
    registry=REGISTRY,
)
RULE_HITS = Counter(
    "riskgate_rule_hits", "Rules that matched, by rule id and mode (enforce or shadow).",
    ["rule", "mode"], registry=REGISTRY,
)
DEGRADED = Counter(
    "riskgate_degraded_decisions", "Decisions made without a signal source that failed.",
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "riskgate_decision_seconds", "Time to decide one event, store round trip included.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
RULE_RELOADS = Counter(
    "riskgate_rule_reloads", "Rule set reloads, by result: swapped, or refused as invalid.",
    ["result"], registry=REGISTRY,
)
DECISION_LOG_DROPPED = Counter(
    "riskgate_decision_log_dropped_lines",
    "Decision log lines lost because the writer fell behind or the target failed.",
    registry=REGISTRY,
)

ATTRIBUTES_DROPPED = Counter(
    "riskgate_attribute_conversion_failures",
    "Attribute values dropped because they did not convert to the type their route "
    "declares, by event and attribute name (both from the config).",
    ["event", "attribute"], registry=REGISTRY,
)

MODEL_LABELS = Counter(
    "riskgate_model_labels",
    "Labels the model learned, by source (feedback, unsolved-challenge, passed-challenge) "
    "and label (bot, human).",
    ["source", "label"], registry=REGISTRY,
)
MODEL_LABELS_UNLEARNED = Counter(
    "riskgate_model_labels_unlearned",
    "Labels the model could not learn because their decision's label vector was not "
    "stored (it came too soon, or the learning queue dropped it), by source.",
    ["source"], registry=REGISTRY,
)


# labels() takes a lock and builds a tuple on every call; a decision would pay for
# that several times, so the labelled children are looked up once and kept.
@cache
def _decisions(event: str, decision: str) -> Any:
    return DECISIONS.labels(event, decision)


@cache
def _rule_hits(rule: str, shadow: bool) -> Any:
    return RULE_HITS.labels(rule, "shadow" if shadow else "enforce")


def count_decision(
    event: str, decision: str, seconds: float, matches: Iterable[Match], degraded: bool
) -> None:
    """Count one decision, its duration and the rules it matched."""
    _decisions(event, decision).inc()
    DECISION_SECONDS.observe(seconds)
    for match in matches:
        _rule_hits(match.rule, match.shadow).inc()
    if degraded:
        DEGRADED.inc()


def exposition() -> bytes:
    """The text ``/metrics`` answers: this process's values, or all workers' added up."""
    if os.environ.get(MULTIPROCESS_ENV):
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)
    return generate_latest(REGISTRY)
