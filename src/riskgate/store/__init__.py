"""Counter stores, chosen by URI (:mod:`riskgate.store.registry`): ``memory://`` in
process, ``redis://`` and ``redis+cluster://`` shared.

>>> open_store("memory://", max_entries=1000)
MemoryStore(max_entries=1000)
>>> open_store("redis://:hunter2@cache:6379/0")
RedisStore('redis://:***@cache:6379/0')
>>> open_store("redis+cluster://cache-1:7000,cache-2:7000")
ClusterStore('redis+cluster://cache-1:7000,cache-2:7000')
"""

from __future__ import annotations

from riskgate.store import registry
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
from riskgate.store.memory import DEFAULT_MAX_ENTRIES, MemoryStore
from riskgate.store.redis import RedisStore


def open_store(uri: str, *, max_entries: int = DEFAULT_MAX_ENTRIES, timeout: float = 1.0,
               secret: bytes = b"") -> Store:
    """Open the store ``uri`` names; raise ValueError, naming what is supported, if none.

    ``max_entries`` caps the memory store's entries; ``timeout`` (seconds) bounds every
    Redis connect and read; ``secret`` keys the names Redis keeps counters under (every
    gateway sharing a Redis passes the same). Nothing connects until the first call.
    """
    return registry.open_store(uri, max_entries=max_entries, timeout=timeout, secret=secret)


__all__ = [
    "BUCKETS_PER_WINDOW",
    "Count",
    "Delete",
    "Distinct",
    "Get",
    "MemoryStore",
    "Op",
    "Put",
    "RedisStore",
    "Remember",
    "Result",
    "Store",
    "open_store",
]
