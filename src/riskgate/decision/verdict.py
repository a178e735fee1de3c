"""Matched rules and a risk score to allow, challenge or block, with reasons.

Precedence, in order:

1. a matched ``block`` action blocks;
2. a matched ``allow`` action (an allow-list entry) allows;
3. the score — the sum of matched rules' scores, kept within 0 to 100 — meets the event's
   ``block`` threshold: block;
4. the score meets the ``challenge`` threshold, or a ``challenge`` action matched:
   challenge;
5. otherwise allow.

Shadow matches are kept apart: they are logged and counted, never decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, get_args

Action = Literal["allow", "challenge", "block"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
MAX_SCORE: Final = 100.0
#: Rule ids of matches made by runtime list entries start with this; rule files may
#: not use it, so a reason always says which of the two decided.
RUNTIME_RULE_PREFIX: Final = "runtime-"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Scores at which an event's requests are challenged and blocked."""

    challenge: float = 50.0
    block: float = 80.0


@dataclass(frozen=True, slots=True)
class Match:
    """One rule that matched a request."""

    rule: str
    score: float = 0.0
    action: Action | None = None
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one request: the decision, the score, and why."""

    decision: Action
    score: float
    reasons: tuple[Match, ...]
    shadow: tuple[Match, ...] = ()


def decide(matches: Iterable[Match], thresholds: Thresholds) -> Verdict:
    """Combine matched rules under the precedence above.

    >>> t = Thresholds(challenge=50, block=80)
    >>> decide([Match("a", 30), Match("b", 30)], t).decision
    'challenge'
    >>> decide([Match("a", 90), Match("vip", action="allow")], t).decision
    'allow'
    >>> decide([Match("vip", action="allow"), Match("bad", action="block")], t).decision
    'block'
    >>> decide([Match("a", 60), Match("b", 70, shadow=True)], t).score
    60.0
    """
    enforcing: list[Match] = []
    shadow: list[Match] = []
    for match in matches:
        (shadow if match.shadow else enforcing).append(match)
    actions = {m.action for m in enforcing}
    # Negative scores (a passed challenge, a trusted network) lower risk but not below 0.
    score = max(0.0, min(MAX_SCORE, float(sum(m.score for m in enforcing))))
    decision: Action
    if "block" in actions:
        decision = "block"
    elif "allow" in actions:
        decision = "allow"
    elif score >= thresholds.block:
        decision = "block"
    elif score >= thresholds.challenge or "challenge" in actions:
        decision = "challenge"
    else:
        decision = "allow"
    return Verdict(decision, score, tuple(enforcing), tuple(shadow))
