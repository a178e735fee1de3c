"""The narrow interface every counter store implements.

A decision needs several things from the store — sliding counts, distinct counts,
runtime list entries, the last value written under a key — and must get them all
in **one round trip**. So the interface is a single batch call: the caller lists
:class:`Op` values, the store applies them atomically in order and answers one
result per op. Backends differ only in how they carry out a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: How many buckets a sliding window is cut into. The count of the oldest bucket is
#: weighted by the fraction of it still inside the window, so counts slide smoothly
#: instead of resetting on a boundary; distinct counts are exact to one bucket.
BUCKETS_PER_WINDOW = 10


@dataclass(frozen=True, slots=True)
class Count:
    """Add ``amount`` events (0 reads only) to a sliding-window count; answer the count."""

    key: str
    window_ms: int
    amount: int = 1
    kind: Literal["count"] = "count"


@dataclass(frozen=True, slots=True)
class Distinct:
    """Add ``member`` (None reads only) to a sliding distinct count; answer the estimate.

    Exact while the window holds a few members (Redis keeps up to eleven as digests);
    beyond that Redis answers from HyperLogLog, within about 1 % of the truth.
    """

    key: str
    window_ms: int
    member: str | None
    kind: Literal["distinct"] = "distinct"


@dataclass(frozen=True, slots=True)
class Get:
    """Answer the value stored under ``key``, or None."""

    key: str
    kind: Literal["get"] = "get"


@dataclass(frozen=True, slots=True)
class Put:
    """Store ``value`` under ``key`` for ``ttl_ms``; answer the previous value, or None.

    With ``only_if_absent`` the value is written only when the key does not exist,
    which makes "first seen at" a single op.
    """

    key: str
    value: str
    ttl_ms: int
    only_if_absent: bool = False
    kind: Literal["put"] = "put"


@dataclass(frozen=True, slots=True)
class Remember:
    """Keep a short ``value`` under ``key`` for ``ttl_ms``; answer the previous value, or None.

    A :class:`Put` for what a store keeps per identity in bulk (a device's first
    sighting, an account's last login): only ``Remember`` reads it back, not Get or
    Delete, which lets Redis keep it inside a page shared with other identities. Like a
    counter's window, ``ttl_ms`` is part of its name: remember a key with one time to
    live. Values up to some 50 bytes keep the page compact.
    """

    key: str
    value: str
    ttl_ms: int
    only_if_absent: bool = False
    kind: Literal["remember"] = "remember"


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; answer its value before removal, or None (single-use tokens)."""

    key: str
    kind: Literal["delete"] = "delete"


Op = Count | Distinct | Get | Put | Remember | Delete
Result = float | str | None


class Store(abc.ABC):
    """A counter store. Every method raises :class:`riskgate.errors.StoreError` on failure."""

    @abc.abstractmethod
    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        """Apply ``ops`` in order, atomically, in one round trip; one result per op.

        ``now`` is the event's time in Unix seconds: windows are computed from it, so
        replaying recorded traffic reproduces the counts it saw.
        ``Count`` and ``Distinct`` answer a float, the others a str or None.
        """

    @abc.abstractmethod
    async def health(self) -> None:
        """Return when the store answers; raise StoreError with the reason otherwise."""

    async def check_server(self) -> None:  # noqa: B027 - an optional hook
        """Raise :class:`~riskgate.errors.StoreVersionError` if the server behind the
        store cannot serve riskgate, :class:`StoreError` if it cannot be asked now."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections."""
