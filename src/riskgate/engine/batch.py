"""One store round trip shared by the engine's stages, each reading back its own part.

Every stage of a decision that needs the store (counters, history, the runtime lists'
version, the feedback record, and whatever a later stage adds) puts its ops in one
:class:`Batch` under its own name; the batch goes out as one call, so a decision stays
one Redis round trip however many stages it has, and each stage reads its results by
name instead of by counting offsets into a shared list.

>>> from riskgate.store import Count, Get, MemoryStore
>>> import asyncio
>>> batch = Batch()
>>> batch.add("counters", [Count("a", 60_000), Count("b", 60_000)])
>>> batch.add("history", [Get("last-seen")])
>>> results = asyncio.run(batch.send(MemoryStore(), now=0.0))
>>> results["counters"], results["history"], results["model"]
([1.0, 1.0], [None], [])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from riskgate.store import Op, Result, Store


class BatchResults:
    """The results of a sent :class:`Batch`, by stage name; a stage that added no ops
    reads as empty."""

    __slots__ = ("_parts", "_results")

    def __init__(self, results: Sequence[Result], parts: Mapping[str, slice]) -> None:
        self._results = results
        self._parts = parts

    def __getitem__(self, stage: str) -> list[Result]:
        part = self._parts.get(stage)
        return [] if part is None else list(self._results[part])


class Batch:
    """Store ops of named stages, in the order they were added."""

    __slots__ = ("_parts", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._parts: dict[str, slice] = {}

    def add(self, stage: str, ops: Iterable[Op]) -> None:
        """Append ``stage``'s ops; a stage adds its ops once."""
        if stage in self._parts:
            raise ValueError(f"stage {stage!r} already added its ops to this batch")
        start = len(self.ops)
        self.ops.extend(ops)
        self._parts[stage] = slice(start, len(self.ops))

    async def send(self, store: Store, now: float) -> BatchResults:
        """One store call for every stage; raises :class:`~riskgate.errors.StoreError`."""
        return BatchResults(await store.apply(self.ops, now), self._parts)
