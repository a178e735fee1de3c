"""Request bodies: read within a size limit, decoded as one JSON object, or refused."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson

from riskgate.errors import InputError


def require_json(content_type: str | None) -> None:
    """Refuse (415) a body not declared as JSON.

    A browser page on another site can post a form or ``text/plain`` body anywhere
    without a CORS preflight, but not ``application/json``: insisting on it keeps the
    decision and feedback APIs out of reach of cross-site posts.

    >>> require_json("application/json; charset=utf-8"), require_json("application/problem+json")
    (None, None)
    >>> require_json("text/plain")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskgate.errors.InputError: the body must be sent as Content-Type: application/json, ...
    """
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")):
        return
    raise InputError("the body must be sent as Content-Type: application/json, not "
                     f"{media_type or 'no content type'}", None, status=415)


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


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class _Overflow(float):
    """A JSON number too large for a float (``1e400``): valid JSON, but infinity in
    Python, which no counter, log line or rule can use. Kept as a marker so the
    decoder can name the field instead of silently taking infinity."""


def _finite_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _Overflow(value)


#: A ``\\uD800``-``\\uDFFF`` escape: JSON can spell a lone UTF-16 surrogate, which decodes
#: to a ``str`` that cannot be encoded (hashed, stored, logged or answered) as UTF-8.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
#: An exponent or a run of digits long enough to overflow a float; a body without one
#: cannot hold an overflowing number, so most bodies skip the search for one.
_BIG_NUMBER: Final = re.compile(rb"[eE][+]?\d{3}|\d{300}")


#: Every ASCII digit to ``0`` and every other byte to ``a``: a body holds an integer orjson
#: would read as a float (past 64 bits, 19 digits or more) only if its translation holds
#: :data:`_DIGIT_RUN`. A translate and a substring search take half a microsecond on a
#: typical body; the regex ``\d{19}`` took three.
_DIGITS_ONLY: Final = bytes(48 if 48 <= byte <= 57 else 97 for byte in range(256))
_DIGIT_RUN: Final = b"0" * 19

#: The numbers a request may carry: what a signed or an unsigned 64-bit integer holds.
MIN_NUMBER: Final = -(2**63)
MAX_NUMBER: Final = 2**64 - 1


def fits_64_bits(number: int | float) -> bool:
    """Whether a number lies within the signed or unsigned 64 bits a log line can hold.

    JSON has one number type: ``2e19`` is the integer ``20000000000000000000``, so a
    float is held to the same range as the integer it may spell.

    >>> fits_64_bits(2**64 - 1), fits_64_bits(2**64), fits_64_bits(1.5), fits_64_bits(2e19)
    (True, False, True, False)
    """
    return MIN_NUMBER <= number <= MAX_NUMBER


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a lone surrogate does not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _first_path(value: Any, bad: Callable[[Any], bool], path: str = "") -> str | None:
    """The JSON path of the first value (or key) that ``bad`` refuses, depth first."""
    if bad(value):
        return path
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        name = f"{path}.{key}" if path else str(key)
        if bad(key):
            return name
        found = _first_path(item, bad, name)
        if found is not None:
            return found
    return None


def _lone_surrogate(value: Any) -> bool:
    return isinstance(value, str) and not encodable(value)


def _overflow(value: Any) -> bool:
    return isinstance(value, _Overflow)


#: Built once: ``json.loads`` with options builds a new decoder on every call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_json(body: bytes) -> Any:
    """Decode a client's JSON body, or raise InputError (400) saying what is wrong.

    The one decoder every body a client sends goes through (decision API, feedback,
    admin, challenge answers, and the gateway's reading of bodies it scores), so each
    refuses the same things the same way: bytes that are not UTF-8 JSON, nesting too
    deep to decode, ``NaN``/``Infinity``, and numbers too large for a float, the last
    naming the field (``InputError.field``) that holds one.

    >>> decode_json(b'{"seats": 2, "rate": 0.5}')
    {'seats': 2, 'rate': 0.5}
    >>> decode_json(b'{"attributes": {"seats": 1e400}}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskgate.errors.InputError: `attributes.seats` is not a finite number; send a number ...
    >>> decode_json(b"[" * 5000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskgate.errors.InputError: the body is nested too deeply to decode; ...
    """
    if _DIGIT_RUN not in body.translate(_DIGITS_ONLY):
        # orjson decodes a typical body ten times faster than the standard decoder, and
        # reads the documents both take alike. Whatever this function refuses (invalid
        # UTF-8, NaN, numbers that overflow a float, lone surrogates, deep nesting)
        # orjson raises on too, so the standard decoder below gives those their
        # messages; and it never answers infinity, so no overflow search is needed here.
        # Integers it would turn into floats (past 64 bits) skip this path.
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        # RFC 8259: JSON between systems is UTF-8; bytes that are not raise ValueError.
        payload = _DECODER.decode(body.decode("utf-8"))
    except RecursionError:
        raise InputError("the body is nested too deeply to decode; send at most a few "
                         "levels of objects and arrays", None) from None
    except ValueError:
        raise InputError("the body is not valid JSON", None) from None
    if _BIG_NUMBER.search(body):
        found = _first_path(payload, _overflow)
        if found is not None:
            raise InputError(f"`{found}` is not a finite number; send a number within "
                             "±1.8e308", found)
    return payload


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object, or raise InputError.

    Strings must also be valid Unicode: what riskgate itself is asked to keep (ids,
    attributes, headers) must encode as UTF-8 to be keyed, stored and logged.
    """
    payload = decode_json(body)
    if not isinstance(payload, dict):
        raise InputError("the body must be a JSON object", None)
    if _SURROGATE_ESCAPE.search(body):
        found = _first_path(payload, _lone_surrogate)
        if found is not None:
            field_path = found.encode("utf-8", "backslashreplace").decode()
            raise InputError(
                f"`{field_path}` holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                "which is not valid Unicode; send the text as UTF-8", field_path)
    return payload
