"""Prometheus metrics, served at ``/metrics`` on the gateway's port.

Label values are bounded sets (events, decisions, rule ids from the loaded set) so
the number of series cannot grow with traffic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
