"""The protocol a model stage implements, in River's style: score, then learn.

The engine calls :meth:`Model.score_one` on the request path with the decision's facts
and counters, and puts what it returns among the facts before the rules run
(``model.anomaly``, ``model.bot_probability``). Everything else happens after the
response, off the request path: :meth:`Model.learn_one` for a request that was allowed
and matched no rule adding risk, and :meth:`Model.label_vector` for every decision, kept
in the store so that a label arriving later, maybe at another worker, can teach
:meth:`Model.learn_label` exactly what the request was scored with. A model that raises
while scoring sets the decision's ``degraded`` flag and the decision goes on without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from riskgate.event.types import EventName, Outcome

#: What an outcome says about who sent the request: True a bot, False a person, None
#: nothing (a failed login is as human as it is automated).
Label = bool | None

_LABELS: Mapping[Outcome, Label] = {
    "fraud": True, "challenge_failed": True, "legit": False,
    "login_failed": None, "login_succeeded": None, "challenge_passed": None,
}


def label_of(outcome: Outcome) -> Label:
    """The label an outcome gives the decision it answers.

    >>> label_of("fraud"), label_of("legit"), label_of("login_failed")
    (True, False, None)
    """
    return _LABELS[outcome]


class Model(Protocol):
    """An online model per flow (``event``), scoring before it learns."""

    def score_one(self, event: EventName, facts: Mapping[str, Any],
                  counters: Mapping[str, float]) -> Mapping[str, float]:
        """Scores for one request, as facts named ``model.*``; must not learn."""
        ...

    def learn_one(self, event: EventName, facts: Mapping[str, Any],
                  counters: Mapping[str, float], label: Label) -> None:
        """Learn from one decided request and, when an outcome labelled it, its label."""
        ...

    def label_vector(self, event: EventName, facts: Mapping[str, Any],
                     counters: Mapping[str, float]) -> Mapping[str, float]:
        """What a label on this request will teach: the features it was scored with,
        numbers in [0, 1] that name no client (they are kept in the store)."""
        ...

    def learn_label(self, event: EventName, vector: Mapping[str, float], label: bool) -> None:
        """Learn a label (True: a bot) for a request with this :meth:`label_vector`."""
        ...
