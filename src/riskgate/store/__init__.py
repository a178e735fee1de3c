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
    Result,
    Store,
)
from riskgate.store.memory import DEFAULT_MAX_ENTRIES, MemoryStore
from riskgate.store.redis import RedisStore


def open_store(uri: str, *, max_entries: int = DEFAULT_MAX_ENTRIES, timeout: float = 1.0) -> Store:
    """Open the store ``uri`` names; raise ValueError, naming what is supported, if none.

    ``max_entries`` caps the memory store's entries; ``timeout`` (seconds) bounds every
    Redis connect and read. Nothing connects until the first call.
    """
    return registry.open_store(uri, max_entries=max_entries, timeout=timeout)


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
    "Result",
    "Store",
    "open_store",
]
