"""The one core type: a risk event, built once per request and read by every stage.

A :class:`RiskEvent` is built either from a decision API body or from a proxied
request, and then flows through signals → counters → rules → model → decision.
No stage goes back to the ASGI scope and none mutates the event.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from riskgate.errors import InputError

EventName = Literal["registration", "login", "promotion", "booking"]
EVENTS: Final[tuple[EventName, ...]] = get_args(EventName)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Outcome = Literal[
    "login_failed", "login_succeeded", "challenge_passed", "challenge_failed", "fraud", "legit"
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One protected request, as the decision stages see it.

    ``account`` and ``device_id`` are raw here and only here: signals key them with
    the HMAC secret before anything is counted, logged or stored.
    ``headers`` has lower-case names.

    >>> e = RiskEvent("r1", "login", ipaddress.ip_address("203.0.113.5"), 0.0)
    >>> e.event, str(e.ip)
    ('login', '203.0.113.5')
    """

    request_id: str
    event: EventName
    ip: IPAddress
    time: float
    account: str | None = None
    device_id: str | None = None
    user_agent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: The client carried a valid challenge pass bound to it (gateway modes).
    challenge_passed: bool = False


def new_request_id() -> str:
    """A unique, unguessable request id (96 random bits, hex)."""
    return os.urandom(12).hex()


async def read_body(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]], content_length: str | None,
    limit: int,
) -> bytes:
    """A request's whole body from its ASGI ``receive``, refusing (413) past ``limit`` bytes.

    A declared Content-Length over the limit is refused before anything is read; a
    body without one is refused as soon as it grows past the limit. A client that goes
    away mid-body leaves what arrived.
    """
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise InputError(f"the body is larger than {limit} bytes", None, status=413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise InputError(f"the body is larger than {limit} bytes", None, status=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


_API_KEYS: Final = ("event", "ip", "account", "device_id", "user_agent", "headers", "attributes")
_MAX_TEXT = 4096


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address as ``ipaddress`` reads it, without zone ids.

    IPv4-mapped IPv6 addresses are the IPv4 client they carry, so both forms count
    against the same counters.

    >>> parse_ip("::ffff:203.0.113.5")
    IPv4Address('203.0.113.5')
    >>> parse_ip("fe80::1%eth0")
    Traceback (most recent call last):
    ...
    ValueError: `fe80::1%eth0` has a zone id; send the address without `%...`
    """
    if "%" in text:
        raise ValueError(f"`{text}` has a zone id; send the address without `%...`")
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _optional_text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"`{name}` must be a string", name)
    if len(value) > _MAX_TEXT:
        raise InputError(f"`{name}` is longer than {_MAX_TEXT} characters", name)
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
        if isinstance(attribute, int) and not fits_64_bits(attribute):
            raise InputError(f"attribute `{name}` is out of range: integers must fit in 64 bits",
                             f"attributes.{name}")
    return dict(value)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


#: A ``\\uD800``-``\\uDFFF`` escape: JSON can spell a lone UTF-16 surrogate, which decodes
#: to a ``str`` that cannot be encoded (hashed, stored, logged or answered) as UTF-8.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def fits_64_bits(number: int) -> bool:
    """Whether an integer fits the signed or unsigned 64 bits a log line can hold."""
    return -(2**63) <= number <= 2**64 - 1


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a lone surrogate does not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate_path(value: Any, path: str) -> str | None:
    """The JSON path of the first string (key or value) holding a lone surrogate."""
    if isinstance(value, str):
        return None if encodable(value) else path
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        name = str(key)
        if not encodable(name):
            return f"{path}.{name}" if path else name
        found = _lone_surrogate_path(item, f"{path}.{name}" if path else name)
        if found is not None:
            return found
    return None


#: Built once: ``json.loads`` with options builds a new decoder on every call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object, or raise InputError."""
    try:
        # RFC 8259: JSON between systems is UTF-8; bytes that are not raise ValueError.
        payload = _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InputError("the body is not valid JSON", None) from None
    if not isinstance(payload, dict):
        raise InputError("the body must be a JSON object", None)
    if _SURROGATE_ESCAPE.search(body):
        found = _lone_surrogate_path(payload, "")
        if found is not None:
            field_path = found.encode("utf-8", "backslashreplace").decode()
            raise InputError(
                f"`{field_path}` holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                "which is not valid Unicode; send the text as UTF-8", field_path)
    return payload


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
