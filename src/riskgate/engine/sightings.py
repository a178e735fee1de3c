"""The devices whose browsing the gateway cannot vouch for: the store lost a sighting.

``device.browsed`` is derived from what the store remembers. A sighting it did not take
(slower than ``store_timeout``, or down) would make a person's device read as one that
never browsed, and the browsing rules would stop that person for a store fault. So the
devices whose sighting was lost read as unknown until that sighting would have expired.
Only those: a script that never browses had no sighting to lose, and the rules keep
telling it apart from everyone else.

Each process knows only its own losses; with several workers, or gateways sharing one
Redis, a sighting lost by one and a goal action decided by another can still meet
(docs/detection.md, Limits).

>>> lost = LostSightings(capacity=2)
>>> lost.lose("d1", 1000.0)
True
>>> lost.unknown("d1", 1001.0), lost.unknown("d2", 1001.0)
(True, False)
>>> lost.unknown("d1", 1000.0 + BROWSE_SECONDS)
False
>>> lost.lose("d2", 1002.0), lost.lose("d3", 1003.0)
(False, False)
>>> lost.unknown("d9", 1004.0)  # more losses than it can tell apart: nobody is vouched for
True
"""

from __future__ import annotations

from typing import Final

from riskgate.signals.history import BROWSE_SECONDS

#: Devices told apart at most; past it every device reads as unknown until the newest
#: loss expires. A store outage loses a sighting for every device that browses in it,
#: and telling those apart would not be worth the memory (about 150 bytes each).
CAPACITY: Final = 10_000


class LostSightings:
    """Devices whose sighting the store lost, each until the sighting would have expired."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._until: dict[str, float] = {}
        self._capacity = capacity
        #: While the losses are more than it can tell apart: no device is vouched for.
        self._everyone_until = 0.0
        #: When the newest loss expires.
        self._latest_until = 0.0

    def lose(self, device_key: str, now: float) -> bool:
        """Note that ``device_key``'s sighting at ``now`` was lost; True when no other
        loss was in force (the start of a spell, worth a warning)."""
        until = now + BROWSE_SECONDS
        first = now >= self._latest_until
        self._latest_until = until
        if now < self._everyone_until:
            self._everyone_until = until
            return first
        if device_key not in self._until and len(self._until) >= self._capacity:
            self._until = {device: t for device, t in self._until.items() if t > now}
            if len(self._until) >= self._capacity:
                self._everyone_until = until
                self._until.clear()
                return first
        self._until[device_key] = until
        return first

    def unknown(self, device_key: str | None, now: float) -> bool:
        """Whether the store may have lost a sighting of ``device_key`` still in force."""
        if now < self._everyone_until:
            return True
        if not self._until or device_key is None:
            return False
        until = self._until.get(device_key)
        return until is not None and now < until
