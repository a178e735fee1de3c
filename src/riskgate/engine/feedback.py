"""What a decision leaves in the store for an outcome to find, and how a label finds it.

An outcome (``/v1/feedback``, a failed login the gateway saw, a challenge it watched)
arrives after the decision, maybe on another worker. Two records, each kept for
``feedback_ttl`` seconds under the request id, hold what it needs then:

- the **feedback record**, written in the decision's own store batch: the event and
  the store keys of the counters outcomes feed. Taking it (:func:`take_ops`) overwrites
  it with :data:`ANSWERED`, so a request id takes one outcome;
- the **label vector**, written after the response when a model learns from labels:
  the feature vector the model scored the request with, counters and remembered
  (store-backed) signals included. Those are read in the decision's batch, so the
  feedback record, whose value is fixed before that batch goes out, could never hold
  them; the vector holds no identities (features never name a client).

>>> record = FeedbackRecord("login", {"fails": ("rg:c:fails:1.2.3.4", None)})
>>> FeedbackRecord.loads(record.dumps()).counters["fails"]
('rg:c:fails:1.2.3.4', None)
>>> loads_vector(dumps_vector({"counters.fails": 0.3333333, "device.present": 1.0}))
{'counters.fails': 0.3333, 'device.present': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from riskgate.event.types import EventName
from riskgate.store import Delete, Op, Put

#: What an answered record is overwritten with: a request id takes one outcome, so a
#: captured id cannot raise failure counters, or feed the model labels, again and again.
ANSWERED: Final = "answered"
#: How feedback for a request id came out.
FeedbackResult = Literal["recorded", "unknown", "answered"]
#: Digits a stored feature keeps: features lie in [0, 1], and a classifier step is not
#: changed by the fifth decimal, while the record shrinks by a third.
VECTOR_DIGITS: Final = 4
_SCALE: Final = 10**VECTOR_DIGITS


def record_key(request_id: str) -> str:
    return f"rg:r:{request_id}"


def vector_key(request_id: str) -> str:
    return f"rg:rv:{request_id}"


def take_ops(request_id: str, ttl_ms: int, *, with_vector: bool) -> list[Op]:
    """One batch that takes a request's outcome slot: the feedback record, swapped for
    :data:`ANSWERED` (its previous value answers), and, ``with_vector``, the label vector,
    deleted as it is read (a vector serves one label)."""
    ops: list[Op] = [Put(record_key(request_id), ANSWERED, ttl_ms)]
    if with_vector:
        ops.append(Delete(vector_key(request_id)))
    return ops


def dumps_vector(vector: Mapping[str, float]) -> str:
    """A feature vector as stored: zeros left out (they teach a linear model nothing)."""
    # round(v * 10**4) / 10**4, not round(v, 4): the same numbers for features in [0, 1]
    # but at exact ties, in a third of the time (round with digits formats a decimal).
    return orjson.dumps({name: round(value * _SCALE) / _SCALE
                         for name, value in vector.items() if value}).decode()


def loads_vector(raw: str) -> dict[str, float]:
    loaded: dict[str, float] = orjson.loads(raw)
    return loaded


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """What an outcome needs of the decision it answers."""

    event: EventName
    #: Counter name -> (store key, distinct member) of the counters outcomes feed.
    counters: Mapping[str, tuple[str, str | None]]

    def dumps(self) -> str:
        return orjson.dumps({"event": self.event, "counters": self.counters}).decode()

    @classmethod
    def loads(cls, raw: str) -> FeedbackRecord:
        record = orjson.loads(raw)
        counters = {name: (key, member) for name, (key, member) in record["counters"].items()}
        return cls(record["event"], counters)

    def put(self, request_id: str, ttl_ms: int) -> Put:
        return Put(record_key(request_id), self.dumps(), ttl_ms)
