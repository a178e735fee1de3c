"""The feedback record: what a decision leaves in the store for an outcome to find.

An outcome (``/v1/feedback``, or a failed login the gateway saw) arrives after the
decision, maybe on another worker. The record, kept for ``feedback_ttl`` seconds under
the request id, holds what it needs then: the store keys of the counters outcomes
feed, and, when a model learns from labels, the facts the decision was made from, each
text cut to a bounded length so a record stays small whatever the client sent.

>>> record = FeedbackRecord("login", {"fails": ("rg:c:fails:1.2.3.4", None)},
...                         facts={"ip": "1.2.3.4", "device.user_agent": "x" * 1000})
>>> again = FeedbackRecord.loads(record.dumps())
>>> again.counters["fails"], len(again.facts["device.user_agent"])
(('rg:c:fails:1.2.3.4', None), 256)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from riskgate.event.types import EventName
from riskgate.store import Put

#: Longest text fact a record keeps: enough for every categorical signal, and a user
#: agent's distinguishing start; a record stays under a few KiB.
MAX_FACT_TEXT: Final = 256


#: What an answered record is overwritten with: a request id takes one outcome, so a
#: captured id cannot raise failure counters, or feed the model labels, again and again.
ANSWERED: Final = "answered"
#: How feedback for a request id came out.
FeedbackResult = Literal["recorded", "unknown", "answered"]


def record_key(request_id: str) -> str:
    return f"rg:r:{request_id}"


def _bounded(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value[:MAX_FACT_TEXT] if isinstance(value, str) else value
            for name, value in facts.items() if value is not None}


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """What an outcome needs of the decision it answers."""

    event: EventName
    #: Counter name -> (store key, distinct member) of the counters outcomes feed.
    counters: Mapping[str, tuple[str, str | None]]
    #: The decision's facts, for a model to learn from a label; None when nothing learns.
    facts: Mapping[str, Any] | None = None

    def dumps(self) -> str:
        record: dict[str, Any] = {"event": self.event, "counters": self.counters}
        if self.facts is not None:
            record["facts"] = _bounded(self.facts)
        return orjson.dumps(record).decode()

    @classmethod
    def loads(cls, raw: str) -> FeedbackRecord:
        record = orjson.loads(raw)
        counters = {name: (key, member) for name, (key, member) in record["counters"].items()}
        return cls(record["event"], counters, record.get("facts"))

    def put(self, request_id: str, ttl_ms: int) -> Put:
        return Put(record_key(request_id), self.dumps(), ttl_ms)
