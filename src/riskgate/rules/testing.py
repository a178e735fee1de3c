"""Runs the ``tests:`` a rule set carries."""

from __future__ import annotations

from riskgate.decision.verdict import (
    decide,
)
from riskgate.rules.model import RuleSet, RuleTestResult


def run_rule_tests(ruleset: RuleSet, now: float | None = None) -> list[RuleTestResult]:
    """Run the set's ``tests:``; each result says what was expected and what came out."""
    results = []
    for test in ruleset.tests:
        counters = {name: 0.0 for name in ruleset.counters} | dict(test.counters)
        matches = ruleset.evaluate(test.event, test.facts, counters, now=now)
        verdict = decide(matches, ruleset.thresholds_for(test.event))
        got = frozenset(m.rule for m in verdict.reasons)
        wrong = []
        if test.expect_decision is not None and verdict.decision != test.expect_decision:
            wrong.append(f"expected decision {test.expect_decision}, got {verdict.decision} "
                         f"(score {verdict.score:g})")
        if test.expect_rules is not None and got != test.expect_rules:
            wrong.append(f"expected rules [{', '.join(sorted(test.expect_rules))}], "
                         f"got [{', '.join(sorted(got))}]")
        results.append(RuleTestResult(test, not wrong, verdict.decision, got, "; ".join(wrong)))
    return results
