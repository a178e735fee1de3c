"""The embedded store: one process, bounded memory, the same answers as Redis."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from riskgate.store.base import (
    BUCKETS_PER_WINDOW,
    Count,
    Delete,
    Distinct,
    Get,
    Op,
    Put,
    Remember,
    Result,
    Store,
)
from riskgate.store.window import Span, to_ms, window_span

#: Default cap on entries (keys plus distinct members): a few hundred bytes each,
#: so the worst case stays around a hundred megabytes.
DEFAULT_MAX_ENTRIES = 250_000


_RING = BUCKETS_PER_WINDOW + 1
#: A bucket's count saturates where Redis's packed int32 does.
_LOWEST, _HIGHEST = -(2**31), 2**31 - 1


def _clamp(count: int) -> int:
    return min(max(count, _LOWEST), _HIGHEST)


class _Counts:
    """The buckets ``last - B .. last`` Redis keeps for a count, as a ring of slots."""

    __slots__ = ("expires", "last", "slots")

    def __init__(self) -> None:
        self.slots = [0] * _RING
        self.last = 0
        self.expires = 0


class _Members:
    """Exact distinct members, each with the last bucket it was seen in.

    Ordered by that bucket, so members that slid out of the window sit at the front.
    (A member first seen late, stamped by a lagging clock, joins at the back; it may
    be counted until the members ahead of it age out.)
    """

    __slots__ = ("expires", "seen")

    def __init__(self) -> None:
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.expires = 0


class _Value:
    __slots__ = ("expires", "value")

    def __init__(self, value: str, expires: int) -> None:
        self.value = value
        self.expires = expires


_Entry = _Counts | _Members | _Value
# Counts, distinct sets, plain and remembered values live in separate namespaces, and
# a window (a remembered value's time to live) is part of its identity, as in Redis.
_Slot = tuple[str, int, str]


def _forget_at(span: Span) -> int:
    """When a counter last written in ``span`` may be dropped.

    It counts nothing from ``span.read_until`` on, but is kept one window longer, so
    an event stamped by a clock that lags by less than a window, arriving after a
    newer one, still finds the count Redis would still hold; and a late write never
    brings the time forward.
    """
    return span.read_until + span.width * BUCKETS_PER_WINDOW


def _cost(entry: _Entry) -> int:
    return 1 + len(entry.seen) if isinstance(entry, _Members) else 1


class MemoryStore(Store):
    """A bounded in-process store; time comes only from ``now``.

    ``max_entries`` caps the entries held (keys plus distinct members); beyond it the
    least recently used keys are forgotten, so a flood of fresh IPs cannot exhaust
    memory, it only makes the store forget the coldest counters. One distinct set
    holds at most a tenth of the cap, forgetting its stalest members past that, so
    a flood of accounts against one key cannot push every other counter out; its
    count then saturates at that size, far above any sane rule threshold.

    >>> import asyncio
    >>> store = MemoryStore(max_entries=2)
    >>> asyncio.run(store.apply([Count("ip:a", 60_000), Count("ip:a", 60_000)], now=100.0))
    [1.0, 2.0]
    >>> _ = asyncio.run(store.apply([Count("ip:b", 60_000), Count("ip:c", 60_000)], now=101.0))
    >>> len(store), asyncio.run(store.apply([Count("ip:a", 60_000, amount=0)], now=102.0))
    (2, [0.0])
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 2:
            raise ValueError(f"max_entries must be at least 2, got {max_entries}")
        self.max_entries = max_entries
        self._max_members = max(1, max_entries // 10)
        self._entries: OrderedDict[_Slot, _Entry] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        """Entries held: keys plus distinct members, the quantity ``max_entries`` caps."""
        return self._size

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries})"

    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        now_ms = to_ms(now)
        spans: dict[int, Span] = {}  # a decision's counters share a few windows
        results: list[Result] = []
        for op in ops:
            if isinstance(op, Count | Distinct):
                span = spans.get(op.window_ms)
                if span is None:
                    span = spans[op.window_ms] = window_span(op.window_ms, now_ms)
                if isinstance(op, Count):
                    results.append(self._count(op, span, now_ms))
                else:
                    results.append(self._distinct(op, span, now_ms))
            else:
                results.append(self._value(op, now_ms))
        return results

    async def health(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._size = 0

    def _value(self, op: Get | Put | Remember | Delete, now_ms: int) -> Result:
        if isinstance(op, Put):
            return self._put(("v", 0, op.key), op, now_ms)
        if isinstance(op, Remember):
            return self._put(("r", op.ttl_ms, op.key), op, now_ms)
        if isinstance(op, Get):
            entry = self._live(("v", 0, op.key), now_ms)
            return entry.value if isinstance(entry, _Value) else None
        if isinstance(op, Delete):
            gone = self._entries.pop(("v", 0, op.key), None)
            if not isinstance(gone, _Value):
                return None
            self._size -= 1
            return gone.value if gone.expires > now_ms else None
        raise TypeError(f"not a store op: {op!r}")

    def _count(self, op: Count, span: Span, now_ms: int) -> float:
        slot = ("c", op.window_ms, op.key)
        entry = self._live(slot, now_ms)
        cur = span.current
        if op.amount:
            if not isinstance(entry, _Counts):
                entry = _Counts()
                entry.last = cur - _RING  # every slot holds a bucket long gone
                self._insert(slot, entry)
            slots = entry.slots
            if cur > entry.last:
                # Slots of the buckets since `last` held buckets that left the window.
                for b in range(max(entry.last + 1, cur - BUCKETS_PER_WINDOW), cur):
                    slots[b % _RING] = 0
                slots[cur % _RING] = _clamp(op.amount)
                entry.last = cur
                entry.expires = _forget_at(span)
            elif cur >= entry.last - BUCKETS_PER_WINDOW:
                slots[cur % _RING] = _clamp(slots[cur % _RING] + op.amount)
            # An event older than every bucket kept has nothing left to count towards.
        if not isinstance(entry, _Counts):
            return span.slide(0, 0)
        slots, last = entry.slots, entry.last
        if last == cur:
            oldest = slots[span.oldest % _RING]
            return span.slide(oldest, sum(slots) - oldest)
        oldest = newer = 0
        for b in range(max(span.oldest, last - BUCKETS_PER_WINDOW), min(cur, last) + 1):
            if b == span.oldest:
                oldest = slots[b % _RING]
            else:
                newer += slots[b % _RING]
        return span.slide(oldest, newer)

    def _distinct(self, op: Distinct, span: Span, now_ms: int) -> float:
        slot = ("d", op.window_ms, op.key)
        entry = self._live(slot, now_ms)
        if op.member is not None:
            if not isinstance(entry, _Members):
                entry = _Members()
                self._insert(slot, entry)
            seen = entry.seen
            last = seen.get(op.member)
            if last is None:
                self._size += 1
                if len(seen) >= self._max_members:
                    seen.popitem(last=False)
                    self._size -= 1
            if last is None or last < span.current:
                seen[op.member] = span.current
                seen.move_to_end(op.member)
            entry.expires = max(entry.expires, _forget_at(span))
            self._evict()
        if not isinstance(entry, _Members):
            return 0.0
        seen = entry.seen
        while seen:
            member, last = next(iter(seen.items()))
            if last >= span.oldest:
                break
            del seen[member]
            self._size -= 1
        return float(len(seen))

    def _put(self, slot: _Slot, op: Put | Remember, now_ms: int) -> str | None:
        entry = self._live(slot, now_ms)
        if not isinstance(entry, _Value):
            self._insert(slot, _Value(op.value, now_ms + op.ttl_ms))
            return None
        previous = entry.value
        if not op.only_if_absent:
            entry.value = op.value
            entry.expires = now_ms + op.ttl_ms
        return previous

    def _live(self, slot: _Slot, now_ms: int) -> _Entry | None:
        """The entry under ``slot`` unless it expired; marks it most recently used."""
        entry = self._entries.get(slot)
        if entry is None:
            return None
        if entry.expires <= now_ms:
            del self._entries[slot]
            self._size -= _cost(entry)
            return None
        self._entries.move_to_end(slot)
        return entry

    def _insert(self, slot: _Slot, entry: _Entry) -> None:
        self._entries[slot] = entry
        self._size += 1
        self._evict()

    def _evict(self) -> None:
        # The entry just used is the most recent, and on its own it fits the cap, so
        # it is never the one evicted.
        entries = self._entries
        while self._size > self.max_entries:
            slot, entry = next(iter(entries.items()))
            del entries[slot]
            self._size -= _cost(entry)


def open(uri: str, *, max_entries: int, timeout: float, secret: bytes) -> MemoryStore:
    """The registry's opener for ``memory://`` (nothing to time out in process, and no
    key to name)."""
    return MemoryStore(max_entries=max_entries)
