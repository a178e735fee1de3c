"""A rule set as data: counters, lists, rules and tests, validated and compiled (CONTRACT §5)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, get_args

from riskgate.decision.verdict import (
    Action,
    Match,
    Thresholds,
)
from riskgate.errors import Problem
from riskgate.event.types import EVENTS
from riskgate.rules.language import Expr, Namespace, compile_rules
from riskgate.rules.members import Members

Mode = Literal["enforce", "shadow"]
CounterKind = Literal["count", "distinct"]
ListType = Literal["cidr", "ip", "asn", "domain", "device", "string", "ua_pattern"]
LIST_TYPES: Final[tuple[ListType, ...]] = get_args(ListType)
#: Counter key words and the fact each reads; any other word is an attribute name.
KEY_FACTS: Final[dict[str, str]] = {
    "ip": "ip", "ip_prefix": "ip.prefix", "account": "account.key", "device": "device.key",
    "email_domain": "account.email_domain", "fingerprint": "device.fingerprint",
    # One key for the whole flow: site-wide counters (a wave of failures anywhere).
    "site": "event",
}
EXPIRY_WARNING: Final = timedelta(days=14)
#: For events a rule set gives no thresholds; one instance, not one per decision.
_DEFAULT_THRESHOLDS: Final = Thresholds()


def key_fact(word: str) -> str:
    """The fact a counter key or ``distinct`` word reads.

    >>> key_fact("ip_prefix"), key_fact("flight")
    ('ip.prefix', 'attributes.flight')
    """
    return KEY_FACTS.get(word, f"attributes.{word}")


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One declared counter: what it counts, keyed by what, over which window."""

    name: str
    events: frozenset[str]
    key: tuple[str, ...]
    kind: CounterKind
    distinct: str | None
    window_s: float
    #: Feedback outcomes that increment it; then decisions on ``events`` only read it.
    on: frozenset[str] = frozenset()

    @property
    def key_facts(self) -> tuple[str, ...]:
        """The facts whose values make up the counter's key, in order."""
        return tuple(key_fact(part) for part in self.key)

    @property
    def distinct_fact(self) -> str | None:
        """The fact whose distinct values a distinct counter counts."""
        return key_fact(self.distinct) if self.distinct else None


@dataclass(frozen=True, slots=True)
class ListSpec:
    """A named list loaded from a file next to the rule file."""

    name: str
    type: ListType
    file: str
    members: Members = field(repr=False, compare=False)
    size: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule; ``expr`` is its checked ``when``."""

    id: str
    when: str
    events: frozenset[str]
    score: float = 0.0
    action: Action | None = None
    mode: Mode = "enforce"
    description: str = ""
    tags: tuple[str, ...] = ()
    owner: str | None = None
    expires: date | None = None
    file: str = ""
    line: int = 0
    expr: Expr | None = field(default=None, repr=False, compare=False)

    @property
    def match(self) -> Match:
        return Match(self.id, self.score, self.action, self.mode == "shadow")

    @property
    def stops_at(self) -> float:
        """Epoch seconds when the rule stops matching: the end of ``expires`` (UTC)."""
        if self.expires is None:
            return float("inf")
        end = datetime.combine(self.expires + timedelta(days=1), datetime.min.time(), UTC)
        return end.timestamp()


@dataclass(frozen=True, slots=True)
class RuleTest:
    """One ``tests:`` entry: an event's facts and counters in, a decision out."""

    name: str
    event: str
    facts: Mapping[str, Any]
    counters: Mapping[str, float]
    expect_decision: Action | None
    expect_rules: frozenset[str] | None
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    """How one rule test came out; ``message`` says what differed."""

    test: RuleTest
    passed: bool
    decision: Action
    rules: frozenset[str]
    message: str = ""

    def __str__(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        detail = f": {self.message}" if self.message else ""
        return f"{self.test.file}:{self.test.line}: {status} {self.test.name}{detail}"


class Evaluator:
    """The compiled functions of a rule set, rebuilt when a rule's ``expires`` passes.

    Expiry is checked by comparing ``now`` with one float, so expired rules cost nothing.
    """

    def __init__(self, rules: tuple[Rule, ...], ns: Namespace) -> None:
        self.rules = rules
        self.ns = ns
        self.errors: Counter[str] = Counter()
        self._window = (float("inf"), float("-inf"))  # valid while lo <= now < hi
        self._fns: dict[str | None, Callable[..., list[Match]]] = {}

    def functions(self, now: float) -> dict[str | None, Callable[..., list[Match]]]:
        lo, hi = self._window
        if not lo <= now < hi:
            self._build(now)
        return self._fns

    def _build(self, now: float) -> None:
        live = [r for r in self.rules if now < r.stops_at]
        lo = max((r.stops_at for r in self.rules if now >= r.stops_at), default=float("-inf"))
        hi = min((r.stops_at for r in live), default=float("inf"))
        fns: dict[str | None, Callable[..., list[Match]]] = {}
        for event in (*EVENTS, None):  # None: an event no rule names; rules for all events
            chosen = [r for r in live if event in r.events or len(r.events) == len(EVENTS)]
            ids = [r.id for r in chosen]
            pairs = [(r.expr, r.match) for r in chosen if r.expr is not None]
            fns[event] = compile_rules(pairs, self.ns, self._reporter(ids))
        self._fns, self._window = fns, (lo, hi)

    def _reporter(self, ids: list[str]) -> Callable[[int], None]:
        def failed(index: int) -> None:
            self.errors[ids[index]] += 1

        return failed


@dataclass(frozen=True)
class RuleSet:
    """A validated, compiled rule set; swap it whole, never edit it."""

    version: str
    source: str
    counters: Mapping[str, CounterSpec]
    thresholds: Mapping[str, Thresholds]
    lists: Mapping[str, ListSpec]
    rules: tuple[Rule, ...]
    tests: tuple[RuleTest, ...] = ()
    warnings: tuple[Problem, ...] = ()
    _evaluator: Evaluator | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._evaluator is None:  # built by hand rather than by load_ruleset
            ns = Namespace.build(self.counters, {n: s.members for n, s in self.lists.items()})
            object.__setattr__(self, "_evaluator", Evaluator(self.rules, ns))

    def evaluate(
        self,
        event: str,
        facts: Mapping[str, Any],
        counters: Mapping[str, float],
        now: float | None = None,
    ) -> list[Match]:
        """Every rule of ``event`` that matches, enforcing and shadow (``Match.shadow``).

        A missing fact or counter reads as None. ``now`` (epoch seconds) decides expiry.
        """
        fns = self._evaluator.functions(time.time() if now is None else now)  # type: ignore[union-attr]
        return (fns.get(event) or fns[None])(facts, counters)

    @property
    def evaluation_errors(self) -> Mapping[str, int]:
        """Per rule id, how often the rule raised at run time and was treated as not matched."""
        return dict(self._evaluator.errors) if self._evaluator else {}

    def thresholds_for(self, event: str) -> Thresholds:
        return self.thresholds.get(event, _DEFAULT_THRESHOLDS)

    def counters_for(self, event: str) -> tuple[CounterSpec, ...]:
        """The counters a decision on ``event`` updates or reads, in declaration order."""
        return tuple(spec for spec in self.counters.values() if event in spec.events)
