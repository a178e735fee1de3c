"""The shared store: Redis, one EVALSHA per batch of ops, batched per event-loop tick.

Every :meth:`RedisStore.apply` becomes exactly one ``EVALSHA`` of the script in
:mod:`riskgate.store.pages`, which carries out the whole batch atomically inside Redis
on the page layout described there. A :class:`Channel` drives the connections to one
server, packing the commands of every ``apply`` issued during one event-loop tick into
one send; the cluster store (:mod:`riskgate.store.cluster`) keeps one channel per
primary and encodes one call per hash slot.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riskgate.errors import StoreError, StoreVersionError
from riskgate.store.base import Op, Result, Store
from riskgate.store.pages import SCRIPT, Pages, decode, pack
from riskgate.store.window import to_ms

_LOAD = pack(("SCRIPT", "LOAD", SCRIPT))
#: The oldest Redis that runs the script: ``SET key value NX GET`` came with 7.0.
MIN_REDIS_MAJOR = 7


def too_old(info: str) -> str | None:
    """The server's version from ``INFO server`` when it is too old for the script.

    >>> too_old("# Server\\r\\nredis_version:6.2.14\\r\\nredis_mode:standalone\\r\\n")
    '6.2.14'
    >>> too_old("redis_version:7.0.15\\r\\n") is None, too_old("valkey_version:8.0.1") is None
    (True, True)
    """
    found = re.search(r"^redis_version:((\d+)\.[\d.]+)", info, re.M)
    return found[1] if found is not None and int(found[2]) < MIN_REDIS_MAJOR else None


def redact(url: str) -> str:
    """``url`` without its password or query, fit for messages and logs.

    >>> redact("redis://:hunter2@cache:6379/0?socket_timeout=1")
    'redis://:***@cache:6379/0'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Call:
    """One pending command: packed, and the future its caller awaits."""

    __slots__ = ("command", "future")

    def __init__(self, command: bytes, future: asyncio.Future[Any]) -> None:
        self.command = command
        self.future = future


class Channel:
    """The few connections to one Redis server, and the batching of commands onto them.

    What costs time is not Redis but the client: redis-py's per-command Python work and
    a send system call per command. So the channel skips redis-py's command and pool
    layers: the commands submitted during one event-loop tick are written with one send
    and their replies read in order. ``max_in_flight`` bounds the batches (and so
    connections) outstanding at once; while they are all busy, new commands gather
    into the next batch. ``timeout`` bounds connecting and every batch's replies.
    """

    def __init__(self, pool: ConnectionPool, where: str, *, timeout: float,
                 max_in_flight: int = 4) -> None:
        self.where = where
        self._pool = pool
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[_Call] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: list[AbstractConnection] = []
        #: Network round trips so far: each is one send and the replies it asked for.
        self.round_trips = 0

    def submit(self, command: bytes) -> asyncio.Future[Any]:
        """Queue a packed command for this tick's batch; its future gets the reply.

        An error reply (``MOVED``, ``WRONGTYPE`` ...) is the future's *result*, as a
        :class:`~redis.exceptions.ResponseError`; a dead or stalled server is its
        exception, a :class:`StoreError`.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(command, future))
        self._schedule()
        return future

    async def ping(self) -> None:
        conn = self._take()
        try:
            (reply,) = await self._roundtrip(conn, [b"*1\r\n$4\r\nPING\r\n"])
            if isinstance(reply, Exception):  # e.g. LOADING while Redis reads its dataset
                raise reply
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            raise StoreError(f"counter store {self.where}: PING failed: {exc}") from None
        except BaseException:
            # Cancelled mid-read: the PONG may still come, so this connection is out of
            # step with its replies; a batch must never read it.
            await conn.disconnect(nowait=True)
            raise
        finally:
            self._idle.append(conn)

    async def check_version(self) -> None:
        """Refuse a server older than the script needs (``SET ... NX GET`` is Redis 7),
        and load the script.

        Loaded here, before the first request, rather than on the first ``NOSCRIPT``:
        that costs the first batch three round trips, and a burst of first requests on a
        busy machine outran ``store_timeout`` with it (decisions degraded, and the
        device sightings of the first visitors lost; docs/detection.md, Limits).
        """
        reply = await self.submit(pack(("INFO", "server")))
        if isinstance(reply, BaseException):
            raise StoreError(f"counter store {self.where}: INFO failed: {reply}")
        old = too_old(reply.decode() if isinstance(reply, bytes) else str(reply))
        if old is not None:
            raise StoreVersionError(
                f"counter store {self.where} runs Redis {old}; riskgate's script needs Redis "
                f"{MIN_REDIS_MAJOR} or newer (SET ... NX GET): upgrade it (or use Valkey "
                "7.2+, or memory:// for one process)")
        loaded = await self.submit(_LOAD)
        if isinstance(loaded, BaseException):
            raise StoreError(f"counter store {self.where}: SCRIPT LOAD failed: {loaded}")

    async def close(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()

    def _schedule(self) -> None:
        if self._flush_scheduled or self._in_flight >= self._max_in_flight:
            return
        self._flush_scheduled = True
        # The task's first step runs after every callback already queued, so all the
        # commands submitted in this tick join the same batch.
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        self._in_flight += 1
        try:
            await self._send(batch)
        finally:
            self._in_flight -= 1
            if self._pending:
                self._schedule()

    async def _send(self, batch: list[_Call]) -> None:
        conn = self._take()
        try:
            replies = await self._roundtrip(conn, [call.command for call in batch])
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                # Redis restarted, failed over or flushed its scripts: load once, resend.
                (loaded,) = await self._roundtrip(conn, [_LOAD])
                if isinstance(loaded, Exception):
                    raise loaded
                again = await self._roundtrip(conn, [batch[i].command for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            _fail(batch, StoreError(f"counter store {self.where}: EVALSHA failed: {exc}"))
            return
        except BaseException:
            await conn.disconnect(nowait=True)
            _fail(batch, StoreError(f"counter store {self.where}: batch cancelled"))
            raise
        finally:
            self._idle.append(conn)
        for call, reply in zip(batch, replies, strict=True):
            if not call.future.done():
                call.future.set_result(reply)

    def _take(self) -> AbstractConnection:
        """An idle connection, or a new one that connects on first use.

        The channel keeps its few connections itself: a pool checkout and return
        costs more Python time than the round trip it serves. A connection that
        failed was disconnected, and reconnects when next used.
        """
        if self._idle:
            return self._idle.pop()
        # redis-py leaves make_connection unannotated.
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return cast(AbstractConnection, conn)

    async def _roundtrip(self, conn: AbstractConnection, commands: list[bytes]) -> list[Any]:
        """Send packed ``commands`` at once; answer their replies, error replies as values."""
        replies: list[Any] = []
        self.round_trips += 1
        # One deadline for the whole batch: a timer per reply costs more than the read.
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(b"".join(commands), check_health=False)
                for _ in commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        # The error reply was consumed whole; the connection is still in step.
                        replies.append(exc)
        except TimeoutError:
            # Cancelled mid-read, redis-py already dropped the connection, out of step now.
            raise RedisTimeoutError(f"Timeout after {self._timeout} s awaiting replies") from None
        return replies


def _fail(batch: list[_Call], exc: StoreError) -> None:
    for call in batch:
        if not call.future.done():
            # One instance per caller: each raise writes its own traceback into it.
            call.future.set_exception(StoreError(*exc.args))


def connection_pool(url: str, *, timeout: float) -> ConnectionPool:
    """A factory of connections configured from ``url`` (the channel keeps its own)."""
    try:
        return ConnectionPool.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
    except (ValueError, RedisError) as exc:
        raise ValueError(f"cannot use store URL {redact(url)}: {exc}") from None


class RedisStore(Store):
    """A store shared by every gateway process that points at the same Redis.

    Every :meth:`apply` is exactly one ``EVALSHA`` of the store script, which carries out
    the whole batch atomically inside Redis. ``timeout`` bounds connecting and every
    read, so a stalled Redis yields a :class:`StoreError` rather than a hung request.
    ``secret`` keys the names of pages and fields (:class:`~riskgate.store.pages.Pages`).
    """

    def __init__(self, url: str, *, timeout: float = 1.0, max_in_flight: int = 4,
                 secret: bytes = b"") -> None:
        self.where = redact(url)
        self._pages = Pages(secret)
        self._channel = Channel(connection_pool(url, timeout=timeout), self.where,
                                timeout=timeout, max_in_flight=max_in_flight)

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r})"

    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        if not ops:
            return []
        command, plan = self._pages.encode(ops, to_ms(now))
        reply = await self._channel.submit(command)
        if isinstance(reply, Exception):
            raise StoreError(f"counter store {self.where}: the store script failed: {reply}")
        return decode(plan, reply)

    async def health(self) -> None:
        await self._channel.ping()

    async def check_server(self) -> None:
        await self._channel.check_version()

    async def close(self) -> None:
        await self._channel.close()


def open(uri: str, *, max_entries: int, timeout: float, secret: bytes) -> RedisStore:
    """The registry's opener for ``redis://``, ``rediss://`` and ``unix://`` (Redis
    evicts by its own policy, so ``max_entries`` is the memory store's alone)."""
    return RedisStore(uri, timeout=timeout, secret=secret)
