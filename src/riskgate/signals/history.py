"""What the store remembers about a device or an account between its requests.

``device.first_seen_age`` and the travel signals need yesterday's answer, so they are
not signals of one request: each adds one ``Remember`` to the decision's store batch
(written and read back in the same round trip) and is derived from its answer.

The remembered values are keyed by already-keyed identities, and hold only a time,
or a location and time: no raw account or device id reaches the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from riskgate.signals.identity import travel_speed_kmh
from riskgate.store import Op, Remember, Result

#: How long a device's first sighting and an account's last login are remembered.
REMEMBER_SECONDS: Final = 90 * 86400
_REMEMBER_MS: Final = REMEMBER_SECONDS * 1000

#: How long a device id's last request on an unscored route (a page's script, a search)
#: counts as browsing for the protected requests that follow.
BROWSE_SECONDS: Final = 3600
_BROWSE_MS: Final = BROWSE_SECONDS * 1000

HISTORY_FACTS: Final = ("device.first_seen_age", "account.travel_speed_kmh",
                        "account.new_country")


def device_sighting(device_key: str, now: float) -> Op:
    """Remember when a (keyed) device id was first seen; later sightings change nothing.

    Unscored requests (page views, searches) record it too, so a device id a login
    brings for the first time is one the client never used while browsing.
    """
    # The hash tag keeps the record in the device's own cluster slot, with its counters.
    return Remember(f"rg:fs:{{{device_key}}}", repr(now), _REMEMBER_MS, only_if_absent=True)


def _browse_key(device_key: str) -> str:
    return f"rg:br:{{{device_key}}}"


def browsing(device_key: str, now: float) -> list[Op]:
    """What an unscored request carrying a (keyed) device id leaves behind: the device's
    first sighting, and that it browsed within the last :data:`BROWSE_SECONDS`.

    A person's device searches flights and reads offers before it holds, redeems or
    signs up; a script that knows the flight posts the hold and nothing else.
    """
    return [device_sighting(device_key, now), Remember(_browse_key(device_key), "1", _BROWSE_MS)]


def history_ops(event: str, facts: Mapping[str, Any], now: float) -> list[tuple[str, Op]]:
    """The store ops this request's history needs, each named by what it remembers.

    >>> [name for name, _ in history_ops("login", {"device.key": "d1", "account.key": "a1",
    ...     "ip.lat": 51.5, "ip.lon": -0.1, "ip.country": "GB"}, 1000.0)]
    ['first_seen', 'browsed', 'last_login']
    """
    ops: list[tuple[str, Op]] = []
    # Hash tags on the identity put these keys in the slot of that identity's counters.
    device = facts.get("device.key")
    if device:
        ops.append(("first_seen", device_sighting(device, now)))
        # Read by writing: a scored request leaves "0" where nothing is (Remember has no
        # plain read, which lets the store page it), and browsing overwrites it with "1".
        ops.append(("browsed", Remember(_browse_key(device), "0", _BROWSE_MS,
                                        only_if_absent=True)))
    account = facts.get("account.key")
    lat, lon = facts.get("ip.lat"), facts.get("ip.lon")
    # Travel is measured between logins: a booking from a hotel is not a new login place.
    if event == "login" and account and lat is not None and lon is not None:
        where = f"{lat},{lon},{now!r},{facts.get('ip.country') or ''}"
        ops.append(("last_login", Remember(f"rg:ll:{{{account}}}", where, _REMEMBER_MS)))
    return ops


def history_facts(
    names: Sequence[str], results: Sequence[Result] | None, facts: Mapping[str, Any],
    now: float, *, sees_browsing: bool = True,
) -> dict[str, Any]:
    """The history signals from the answers to :func:`history_ops` (None: store failed).

    ``sees_browsing``: whether unscored requests with device ids reach this process at
    all. Until one has, ``device.browsed`` is left as the facts have it (None live, the
    logged value in replay): a deployment whose pages never send a device id, or the
    decision API alone, must not read every device as one that never browsed.

    >>> history_facts(["first_seen"], ["400.0"], {}, 1000.0)["device.first_seen_age"]
    600.0
    >>> history_facts(["browsed"], [None], {}, 1000.0)["device.browsed"]
    False
    >>> "device.browsed" in history_facts(["browsed"], [None], {}, 1000.0, sees_browsing=False)
    False
    >>> history_facts(["last_login"], ["48.86,2.35,0.0,FR"],
    ...               {"ip.lat": 51.51, "ip.lon": -0.13, "ip.country": "GB"}, 3600.0)
    {'device.first_seen_age': None, 'account.travel_speed_kmh': 343.5, 'account.new_country': True}
    """
    derived: dict[str, Any] = dict.fromkeys(HISTORY_FACTS)
    if results is None:
        return derived
    for name, previous in zip(names, results, strict=True):
        if name == "first_seen":
            first = float(previous) if isinstance(previous, str) else now
            derived["device.first_seen_age"] = max(0.0, now - first)
        elif name == "browsed" and sees_browsing:
            derived["device.browsed"] = previous == "1"
        elif name == "last_login" and isinstance(previous, str):
            lat, lon, then, country = previous.split(",")
            derived["account.travel_speed_kmh"] = round(travel_speed_kmh(
                float(lat), float(lon), float(then), facts["ip.lat"], facts["ip.lon"], now), 1)
            current = facts.get("ip.country")
            derived["account.new_country"] = country != current if country and current else None
    return derived
