"""Request bodies: read within a size limit, decoded as one JSON object, or refused."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from riskgate.errors import InputError


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
