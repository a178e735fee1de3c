"""A request's facts and counters to the model's feature vector: a flat dict of floats.

Every feature lies in ``[0, 1]`` by a fixed transform, chosen here rather than learned
by an online scaler: a scaler learns its range from traffic, so a client that sends
one huge value moves every later request's features, and the detector's too. A fixed
squash ``v / (v + half)`` maps 0 to 0 and ``half`` to 0.5, and no value to more than 1,
whatever a client sends. ``docs/model.md`` lists the features and why each is there.

Names are the facts' own (``device.header_count``) or ``counters.NAME``; identities
(addresses, keyed account and device ids) never become features, so nothing a model
learns or a snapshot holds can name a client.

>>> x = features({"device.is_bot_ua": False, "device.header_count": 10,
...               "device.first_seen_age": None}, {"login_accounts_per_ip": 5.0})
>>> x["device.is_bot_ua"], x["device.header_count"], round(x["counters.login_accounts_per_ip"], 3)
(0.0, 0.5, 0.444)
>>> x["device.first_seen_age"], x["device.seen_before"]
(0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Yes/no facts: 1.0 when true, 0.0 when false or unknown.
FLAGS: Final = (
    "account.present", "device.present", "challenge.passed",
    "device.ua_missing", "device.is_bot_ua", "device.is_headless",
    "device.missing_browser_headers", "device.client_hints_mismatch",
    "ip.datacenter", "ip.is_anonymous", "ip.is_tor", "ip.is_proxy",
    "ip.is_residential_proxy", "account.disposable_email",
    "account.username_sequential", "account.new_country",
)
#: Numeric facts and the value each squashes to 0.5: a typical size, so that ordinary
#: values spread over the middle of the range and extreme ones crowd near 1.
SCALES: Final[Mapping[str, float]] = {
    "device.header_count": 10.0,
    "account.username_digit_ratio": 0.5,
    "account.username_entropy": 3.0,
    "device.first_seen_age": 86400.0,
    "account.travel_speed_kmh": 1000.0,
}
#: A counter's half-scale: five in a window is already more than most people do.
COUNTER_SCALE: Final = 5.0
#: What a counter reads when nothing but the request itself happened: most counters
#: count the request they are read for. A counter feature is what lies beyond it, so
#: an ordinary request's counters are 0. Were they not, the dozen counters every
#: request of a flow has would act together as a second intercept, and a classifier
#: fed a burst of bot labels would move it within minutes and call everyone a bot
#: (bench/model_eval.py seed 8: 15 % of people flagged). Counters of outcomes (failed
#: logins) lose their first: one failure is as ordinary as none.
COUNTER_BASELINE: Final = 1.0
#: Numeric attributes a route declares (``attributes.seats``) squash at this value.
ATTRIBUTE_SCALE: Final = 5.0


#: The types of fact values an attribute feature is made from (``bool``, an ``int``
#: subclass, is not among them).
_NUMBERS: Final = frozenset({int, float})


def _squash(value: float, half: float) -> float:
    return value / (value + half) if value > 0 else 0.0


def features(facts: Mapping[str, Any], counters: Mapping[str, float]) -> dict[str, float]:
    """The feature vector of one request (see the module docstring)."""
    get = facts.get
    x: dict[str, float] = {name: 1.0 if get(name) else 0.0 for name in FLAGS}
    for name, half in SCALES.items():
        value = get(name)
        x[name] = _squash(float(value), half) if isinstance(value, (int, float)) else 0.0
    # A first sighting and an unknown device both read 0 above; this tells them apart.
    age = get("device.first_seen_age")
    x["device.seen_before"] = 1.0 if isinstance(age, (int, float)) and age > 0 else 0.0
    x["device.automation"] = 1.0 if get("device.automation") else 0.0
    for name, value in facts.items():
        # The value's type first: it rules out all but a few of the fifty-odd facts at
        # half the cost of the name's prefix (the JSON a value comes from makes no
        # subclasses of int and float).
        if type(value) in _NUMBERS and name.startswith("attributes."):
            x[name] = _squash(float(value), ATTRIBUTE_SCALE)
    for name, count in counters.items():
        x[f"counters.{name}"] = _squash(count - COUNTER_BASELINE, COUNTER_SCALE)
    return x
