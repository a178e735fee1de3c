"""The decision API body (CONTRACT §2) to a :class:`RiskEvent`, every fault named by field."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

from riskgate.errors import InputError
from riskgate.event.body import fits_64_bits, parse_json_object
from riskgate.event.ip import parse_ip
from riskgate.event.types import EVENTS, MAX_TEXT, RiskEvent

_API_KEYS: Final = ("event", "ip", "account", "device_id", "user_agent", "headers", "attributes")


def _optional_text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"`{name}` must be a string", name)
    if len(value) > MAX_TEXT:
        raise InputError(f"`{name}` is longer than {MAX_TEXT} characters", name)
    return value


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError("`headers` must be an object of header name to string value", "headers")
    headers: dict[str, str] = {}
    for name, header in value.items():
        if not isinstance(header, str):
            raise InputError(f"header `{name}` must be a string", f"headers.{name}")
        if len(header) > MAX_TEXT:
            raise InputError(f"header `{name}` is longer than {MAX_TEXT} characters",
                             f"headers.{name}")
        headers[name.lower()] = header
    return headers


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError("`attributes` must be an object", "attributes")
    for name, attribute in value.items():
        if attribute is not None and not isinstance(attribute, (str, int, float, bool)):
            raise InputError(
                f"attribute `{name}` must be a string, number, boolean or null",
                f"attributes.{name}",
            )
        if isinstance(attribute, str) and len(attribute) > MAX_TEXT:
            raise InputError(f"attribute `{name}` is longer than {MAX_TEXT} characters",
                             f"attributes.{name}")
        if isinstance(attribute, int | float) and not fits_64_bits(attribute):
            raise InputError(f"attribute `{name}` is out of range: integers must fit in 64 bits",
                             f"attributes.{name}")
    return dict(value)


def event_from_api(body: bytes, request_id: str, now: float) -> RiskEvent:
    """Build the event of a ``POST /v1/decide`` body, or raise InputError naming the field.

    >>> event_from_api(b'{"event": "login", "ip": "198.51.100.7"}', "r1", 0.0).ip
    IPv4Address('198.51.100.7')
    >>> event_from_api(b'{"event": "checkin", "ip": "1.2.3.4"}', "r1", 0.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskgate.errors.InputError: unknown event `checkin`; use one of registration, login, ...
    """
    payload = parse_json_object(body)
    for key in payload:
        if key not in _API_KEYS:
            close = difflib.get_close_matches(key, _API_KEYS, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "known: " + ", ".join(_API_KEYS)
            raise InputError(f"unknown field `{key}`; {hint}", key)
    name = payload.get("event")
    if name is None:
        raise InputError("`event` is required", "event")
    if not isinstance(name, str):
        raise InputError("`event` must be a string", "event")
    if name not in EVENTS:
        raise InputError(f"unknown event `{name}`; use one of {', '.join(EVENTS)}", "event")
    ip_text = payload.get("ip")
    if ip_text is None:
        raise InputError("`ip` is required", "ip")
    if not isinstance(ip_text, str):
        raise InputError("`ip` must be a string", "ip")
    try:
        ip = parse_ip(ip_text)
    except ValueError as exc:
        raise InputError(f"`ip` is not a valid address: {exc}", "ip") from None
    return RiskEvent(
        request_id=request_id,
        event=name,
        ip=ip,
        time=now,
        account=_optional_text(payload, "account"),
        device_id=_optional_text(payload, "device_id"),
        user_agent=_optional_text(payload, "user_agent"),
        headers=_headers(payload.get("headers")),
        attributes=_attributes(payload.get("attributes")),
    )
