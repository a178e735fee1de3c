"""The store on a Redis Cluster: one EVALSHA per hash slot, one send per primary.

A cluster refuses a call whose keys hash to different slots (CROSSSLOT), so an
:meth:`ClusterStore.apply` groups its ops by the slot of the keys they touch (a
counter's pages, named by the group of its identity; a value's own key) and sends one
EVALSHA of the standalone store's script per slot, every key it touches declared. The
calls for one primary leave in one write (a :class:`~riskgate.store.redis.Channel` per
primary batches what is submitted in one event-loop tick), all primaries at once: a
decision costs one network round trip per primary it involves, in parallel.

Ops on one key always share a slot, so they keep their order and atomicity; ops on
keys of different slots are each applied atomically per slot but not together. Callers
that need two keys written together give them one hash tag: counters and remembered
values of one tag share its group's slot, plain values of one tag (``rg:{lists}:...``)
the tag's own.

Why not redis-py's ``RedisCluster``: its pipeline runs every command through redis-py's
per-command layers (command packing, pool checkout, response callbacks), the very work
the standalone store skips because it costs more than Redis itself; and it sends one
pipeline per call, where channels merge the calls of every concurrent decision. What
it does well and this module borrows is small: the slot function (``redis.crc``), the
connection class, and the error-reply parsing (``MovedError``, ``AskError``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from riskgate.errors import StoreError
from riskgate.store.base import Op, Result, Store
from riskgate.store.pages import Pages, decode, pack
from riskgate.store.redis import Channel, connection_pool, redact
from riskgate.store.window import to_ms

#: Redis Cluster's fixed number of hash slots.
SLOTS = 16384
_CLUSTER_SLOTS = pack(("CLUSTER", "SLOTS"))
_ASKING = pack(("ASKING",))
#: A dead primary makes every call to it fail; asking the cluster for its map again
#: on each of them would add a command per decision, so refreshes are spaced by this.
REFRESH_INTERVAL_S = 0.1
#: How long to wait before asking again a cluster that said it cannot serve a slot right
#: now: a fraction of the default store timeout (75 ms), so the second answer still counts.
CLUSTER_SETTLE_S = 0.02

Address = tuple[str, int]


def parse_url(url: str) -> tuple[list[Address], str]:
    """The seed nodes of a ``redis+cluster://`` URL and the ``user:password@`` part.

    >>> parse_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    ([('10.0.0.1', 7000), ('10.0.0.2', 7001)], ':pw@')
    >>> parse_url("redis+cluster://10.0.0.1:7000/1")
    Traceback (most recent call last):
    ...
    ValueError: store redis+cluster://10.0.0.1:7000/1: a Redis Cluster has only database 0; \
drop `/1`
    """
    parts = urlsplit(url)
    where = redact(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"store {where}: a Redis Cluster has only database 0; "
                         f"drop `{parts.path}`")
    seeds: list[Address] = []
    for node in hosts.split(","):
        host, colon, port = node.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"store {where}: `{node}` is not host:port; write "
                             "redis+cluster://host:port[,host:port...]")
        seeds.append((unquote(host.strip("[]")), int(port)))
    return seeds, f"{auth}@" if auth else ""


class ClusterStore(Store):
    """A store on a Redis Cluster, shared by every gateway process that points at it.

    ``url`` names one or more nodes to learn the slot map from. The map is asked for
    again when a node answers ``MOVED`` (a failover or a resharding finished) or cannot
    be reached; until a replica has taken over a dead primary's slots, calls to those
    slots fail with :class:`StoreError`, and decisions go on without the store.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, secret: bytes = b"") -> None:
        self.where = redact(url)
        self._pages = Pages(secret)
        self._seeds, self._auth = parse_url(url)
        self._timeout = timeout
        self._channels: dict[Address, Channel] = {}
        self._owner: list[Address | None] = [None] * SLOTS
        self._mapped = False
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = -REFRESH_INTERVAL_S

    def __repr__(self) -> str:
        return f"ClusterStore({self.where!r})"

    @property
    def round_trips(self) -> dict[Address, int]:
        """Network round trips so far, per node (the slot map's included)."""
        return {node: channel.round_trips for node, channel in self._channels.items()}

    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        if not ops:
            return []
        if not self._mapped:
            await self._refresh()
        now_ms = to_ms(now)
        by_slot: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_slot.setdefault(key_slot(self._pages.slot_key(op).encode()), []).append(i)
        calls = []
        for slot, indexes in by_slot.items():
            command, plan = self._pages.encode([ops[i] for i in indexes], now_ms)
            calls.append((slot, indexes, command, plan))
        replies = await asyncio.gather(
            *(self._call(slot, command) for slot, _, command, _ in calls),
            return_exceptions=True,
        )
        results: list[Result] = [None] * len(ops)
        for (_, indexes, _, plan), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            for i, result in zip(indexes, decode(plan, reply), strict=True):
                results[i] = result
        return results

    async def health(self) -> None:
        await self._refresh()
        primaries = {owner for owner in self._owner if owner is not None}
        uncovered = self._owner.count(None)
        if uncovered:
            raise StoreError(f"counter store {self.where}: {uncovered} hash slots have no "
                             "primary; see CLUSTER SLOTS")
        await asyncio.gather(*(self._channel(node).ping() for node in primaries))

    async def check_server(self) -> None:
        await self._refresh()
        primaries = {owner for owner in self._owner if owner is not None}
        await asyncio.gather(*(self._channel(node).check_version() for node in primaries))

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def _call(self, slot: int, command: bytes) -> list[Any]:
        """One slot's EVALSHA on its primary, following one redirection, asked once more
        after a moment when the cluster says it cannot serve the slot right now."""
        reply = await self._redirected_call(slot, command)
        if isinstance(reply, ClusterDownError | TryAgainError):
            # Both answers come before the script runs, so asking again counts nothing
            # twice; both pass within moments of a failover or a resharding step (a node
            # that has not heard of the new owner yet), and Redis asks clients to retry.
            # Once, briefly: a cluster that stays down is a fault the breaker must see.
            self._refresh_soon()
            await asyncio.sleep(CLUSTER_SETTLE_S)
            reply = await self._redirected_call(slot, command)
        if isinstance(reply, ClusterDownError | TryAgainError):
            self._refresh_soon()
            raise StoreError(f"counter store {self.where}: the cluster cannot serve slot "
                             f"{slot} right now: {reply}")
        if isinstance(reply, Exception):
            raise StoreError(f"counter store {self.where}: the store script failed: {reply}")
        return list(reply)

    async def _redirected_call(self, slot: int, command: bytes) -> Any:
        """The reply of the slot's primary, following one MOVED or ASK."""
        node = self._owner[slot]
        if node is None:
            self._refresh_soon()
            raise StoreError(f"counter store {self.where}: hash slot {slot} has no primary")
        try:
            reply = await self._channel(node).submit(command)
        except StoreError:
            self._refresh_soon()
            raise
        if isinstance(reply, MovedError):
            # The slot has a new owner for good: learn the whole map, then retry there.
            self._owner[slot] = reply.node_addr
            self._refresh_soon()
            reply = await self._channel(reply.node_addr).submit(command)
        elif isinstance(reply, AskError):
            # The slot is migrating and this key already moved: ask the importing node
            # this once, without changing the map (the pair leaves in one write).
            channel = self._channel(reply.node_addr)
            asking = channel.submit(_ASKING)
            reply = await channel.submit(command)
            await asking
        return reply

    def _channel(self, node: Address) -> Channel:
        channel = self._channels.get(node)
        if channel is None:
            host, port = node
            url = f"redis://{self._auth}{host}:{port}/0"
            channel = self._channels[node] = Channel(
                connection_pool(url, timeout=self._timeout), f"{self.where} node {host}:{port}",
                timeout=self._timeout)
        return channel

    def _refresh_soon(self) -> None:
        """Ask for the slot map in the background, at most once per REFRESH_INTERVAL_S."""
        if self._refreshing is None and (
            time.monotonic() - self._refreshed_at >= REFRESH_INTERVAL_S
        ):
            self._start_refresh().add_done_callback(_retrieve)

    async def _refresh(self) -> None:
        """Learn the slot map now, joining a refresh already under way."""
        await asyncio.shield(self._refreshing or self._start_refresh())

    def _start_refresh(self) -> asyncio.Task[None]:
        self._refreshed_at = time.monotonic()
        self._refreshing = asyncio.get_running_loop().create_task(self._load_map())
        return self._refreshing

    async def _load_map(self) -> None:
        """Learn which primary owns each slot from the first node that answers."""
        problems = []
        try:
            for node in dict.fromkeys([*self._channels, *self._seeds]):
                try:
                    reply = await self._channel(node).submit(_CLUSTER_SLOTS)
                except StoreError as exc:
                    problems.append(str(exc))
                    continue
                if isinstance(reply, Exception):
                    problems.append(f"{node[0]}:{node[1]} answered {reply}")
                    continue
                owner: list[Address | None] = [None] * SLOTS
                for first, last, primary, *_replicas in reply:
                    host = primary[0] or node[0]  # an empty host means "the one you asked"
                    owner[first:last + 1] = [(host, int(primary[1]))] * (last - first + 1)
                self._owner, self._mapped = owner, True
                return
            raise StoreError(f"counter store {self.where}: no node answered CLUSTER SLOTS: "
                             + "; ".join(problems))
        finally:
            self._refreshing = None


def _retrieve(task: asyncio.Task[None]) -> None:
    # A background refresh that failed is retried by the next failing call; nobody
    # awaits it, so its exception is taken here instead of logged as never retrieved.
    if not task.cancelled():
        task.exception()


def open(uri: str, *, max_entries: int, timeout: float, secret: bytes) -> ClusterStore:
    """The registry's opener for ``redis+cluster://`` (``max_entries`` is the memory
    store's alone)."""
    return ClusterStore(uri, timeout=timeout, secret=secret)
