"""Counter stores, chosen by URI: ``memory://`` in process, ``redis://`` shared.

>>> open_store("memory://", max_entries=1000)
MemoryStore(max_entries=1000)
>>> open_store("redis://:hunter2@cache:6379/0")
RedisStore('redis://:***@cache:6379/0')
"""

from __future__ import annotations

from urllib.parse import urlsplit

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

_SUPPORTED = "memory://, redis://host:port/db, rediss://host:port/db or unix:///path/to/redis.sock"


def open_store(uri: str, *, max_entries: int = DEFAULT_MAX_ENTRIES, timeout: float = 1.0) -> Store:
    """Open the store ``uri`` names; raise ValueError, naming what is supported, if none.

    ``max_entries`` caps the memory store's entries; ``timeout`` (seconds) bounds every
    Redis connect and read. Nothing connects until the first call.
    """
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "memory":
        return MemoryStore(max_entries=max_entries)
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(uri, timeout=timeout)
    # Only the scheme is quoted back: the rest of a URL may hold a password.
    if scheme == "redis+cluster":
        raise ValueError(f"store redis+cluster:// is not supported yet; use {_SUPPORTED}")
    if not scheme:
        raise ValueError(f"store {uri!r} names no scheme; use {_SUPPORTED}")
    raise ValueError(f"store {scheme}:// is not supported; use {_SUPPORTED}")


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
