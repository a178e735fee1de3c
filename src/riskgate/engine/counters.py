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
    distinct_fact: str | None
    window_ms: int
    distinct: bool
    #: Outcomes that update it; decisions then only read it.
    outcomes: frozenset[str]
    #: ``rg:c:NAME:{``, the start of every key it has: a key is this and the hash tag.
    prefix: str
    #: Where its key facts are in its plan's :attr:`CounterPlan.tags`.
    tag: int


@dataclass(frozen=True, slots=True)
class CounterPlan:
    """The counters a decision on one event touches, resolved once per rule set."""

    counters: tuple[PlannedCounter, ...]
    #: The different key facts among them. A decision works out each one's hash tag
    #: once: a login's fifteen counters are keyed by four identities (address, device,
    #: account, fingerprint), and what a tag costs (a str and a regex per fact, maybe
    #: a keyed hash) is most of what planning a counter costs.
    tags: tuple[tuple[str, ...], ...]


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
        self._plans: dict[str, CounterPlan] = {}
        self._plans_of: RuleSet | None = None

    def plan(self, ruleset: RuleSet, event: str) -> CounterPlan:
        """The counters a decision on ``event`` touches; computed once per rule set."""
        if ruleset is not self._plans_of:
            self._plans, self._plans_of = {}, ruleset
        plan = self._plans.get(event)
        if plan is None:
            specs = ruleset.counters_for(event)
            tags = tuple(dict.fromkeys(spec.key_facts for spec in specs))
            plan = self._plans[event] = CounterPlan(tuple(
                PlannedCounter(spec.name, spec.distinct_fact,
                               int(spec.window_s * 1000), spec.kind == "distinct", spec.on,
                               f"rg:c:{spec.name}:{{", tags.index(spec.key_facts))
                for spec in specs
            ), tags)
        return plan

    def tag(self, key_facts: tuple[str, ...], facts: Mapping[str, Any]) -> str | None:
        """The end of a key: the values of ``key_facts``, and the brace that closes the
        hash tag; None when the request lacks one of them.

        The values are the hash tag: every counter of one address (device, account ...)
        lands in one Redis Cluster slot, so a decision sends one call per identity.

        >>> planner = CounterPlanner(Keyer(b"a-secret-of-16-chars"))
        >>> planner.tag(("ip", "attributes.flight"), {"ip": "198.51.100.7",
        ...                                            "attributes.flight": "CA1234"})
        '198.51.100.7|CA1234}'
        >>> len(planner.tag(("attributes.note",), {"attributes.note": "{odd} value"}))
        25
        >>> planner.tag(("device.key",), {"device.key": None}) is None
        True
        """
        parts = []
        for fact in key_facts:
            value = facts.get(fact)
            if value is None or value == "":
                return None
            text = str(value)
            parts.append(text if _KEY_SAFE.fullmatch(text) else self._key("counter", text))
        return "|".join(parts) + "}"

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
        plan = self.plan(ruleset, event)
        tags = [self.tag(key_facts, facts) for key_facts in plan.tags]
        ops: list[Op] = []
        names: list[str] = []
        outcome_keys: dict[str, tuple[str, str | None]] = {}
        for counter in plan.counters:
            tag = tags[counter.tag]
            if tag is None:
                continue  # the request lacks what this counter is keyed by
            key = counter.prefix + tag
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
