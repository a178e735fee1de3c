"""The protocol a model stage implements, in River's style: score, then learn.

The engine asks :meth:`Model.features` for a decision's feature vector once, when its
facts and counters are all known (after the store batch, before the rules), and hands
that one vector to everything else: :meth:`Model.score_one` on the request path, whose
scores join the facts before the rules run (``model.anomaly``,
``model.bot_probability``); after the response, the store, where it waits for a label
that may come later, maybe at another worker, to teach :meth:`Model.learn_label` exactly
what the request was scored with; and :meth:`Model.learn_one` for a request the rules
allowed on its own merits. A model that raises while scoring sets the decision's
``degraded`` flag and the decision goes on without it.
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

    def features(self, event: EventName, facts: Mapping[str, Any],
                 counters: Mapping[str, float]) -> Mapping[str, float]:
        """The feature vector of one request, which every other method reads: numbers in
        [0, 1] that name no client (a label finds it in the store)."""
        ...

    def score_one(self, event: EventName, x: Mapping[str, float]) -> Mapping[str, float]:
        """Scores for a request with features ``x``, as facts named ``model.*``; must
        not learn."""
        ...

    def learn_one(self, event: EventName, x: Mapping[str, float],
                  facts: Mapping[str, Any]) -> None:
        """Learn a request with features ``x`` as normal traffic; ``facts`` say who sent
        it (addresses, devices), which the features never do."""
        ...

    def learn_label(self, event: EventName, x: Mapping[str, float], label: bool) -> None:
        """Learn a label (True: a bot) for a request with features ``x``, as the store
        kept them (zeros left out)."""
        ...
