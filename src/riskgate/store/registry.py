"""Store backends by URI scheme: the one list that config validation and ``open_store`` read.

A backend names its schemes, an example URL for each (for messages), and the module
whose ``open`` function opens it, imported when a store of its kind is opened. A new backend
is one more entry here and a module with an ``open`` function, and ships once the store
contract suite passes on it.

>>> backend_for("redis://cache:6379/0").module
'riskgate.store.redis'
>>> backend_for("postgres://db")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: store postgres:// is not supported; use memory://, redis://host:port/db, ...
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from riskgate.store.base import Store


@dataclass(frozen=True, slots=True)
class Backend:
    """One store implementation and the URI schemes that choose it."""

    schemes: tuple[str, ...]
    #: Example URLs, one per scheme, as messages show them.
    examples: tuple[str, ...]
    #: Defines ``open(uri, *, max_entries, timeout, secret) -> Store``.
    module: str


BACKENDS: Final[tuple[Backend, ...]] = (
    Backend(("memory",), ("memory://",), "riskgate.store.memory"),
    Backend(("redis", "rediss", "unix"),
            ("redis://host:port/db", "rediss://host:port/db", "unix:///path/to/redis.sock"),
            "riskgate.store.redis"),
    Backend(("redis+cluster",), ("redis+cluster://host:port[,host:port...]",),
            "riskgate.store.cluster"),
)
SCHEMES: Final[dict[str, Backend]] = {s: b for b in BACKENDS for s in b.schemes}


def _one_of(examples: list[str]) -> str:
    return f"{', '.join(examples[:-1])} or {examples[-1]}" if len(examples) > 1 else examples[0]


#: What messages offer instead of a URL that names no backend.
SUPPORTED: Final = _one_of([example for backend in BACKENDS for example in backend.examples])


def backend_for(uri: str) -> Backend:
    """The backend ``uri`` chooses; ValueError naming what is supported if none.

    Only the scheme is quoted back: the rest of a URL may hold a password.
    """
    scheme = urlsplit(uri).scheme.lower()
    backend = SCHEMES.get(scheme)
    if backend is not None:
        return backend
    if not scheme:
        raise ValueError(f"store {uri!r} names no scheme; use {SUPPORTED}")
    raise ValueError(f"store {scheme}:// is not supported; use {SUPPORTED}")


def open_store(uri: str, *, max_entries: int, timeout: float, secret: bytes) -> Store:
    """Open the store ``uri`` names with its backend; nothing connects until first use."""
    opener = importlib.import_module(backend_for(uri).module).open
    store: Store = opener(uri, max_entries=max_entries, timeout=timeout, secret=secret)
    return store
