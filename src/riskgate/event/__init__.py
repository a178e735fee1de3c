"""The one core type, :class:`RiskEvent`, and how request bytes become one.

``types`` holds the event and its vocabularies (events, outcomes); ``body`` reads and
decodes request bodies; ``ip`` parses client addresses; ``api`` builds an event from a
decision API body.
"""

from riskgate.event.types import (
    EVENTS,
    OUTCOMES,
    EventName,
    IPAddress,
    Outcome,
    RiskEvent,
    new_request_id,
)

__all__ = ["EVENTS", "OUTCOMES", "EventName", "IPAddress", "Outcome", "RiskEvent",
           "new_request_id"]
