"""Declared counters to store ops for one request, planned once per rule set."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskgate.rules.model import RuleSet
from riskgate.signals.keys import Keyer
from riskgate.store import Count, Distinct, Op


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
#: values) is hashed first, so keys stay short and free of braces but the hash tag's.
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
        # The values are the hash tag: every counter of one address (device, account ...)
        # lands in one Redis Cluster slot, so a decision sends one call per identity.
        return f"rg:c:{counter.name}:{{{'|'.join(parts)}}}"

    @staticmethod
    def member(counter: PlannedCounter, facts: Mapping[str, Any]) -> str | None:
        if counter.distinct_fact is None:
            return None
        # Members need no keying of their own: identities in facts are keyed already,
        # and the Redis store keeps only 4-byte digests of members.
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
