"""The shared store: Redis, one EVALSHA per batch of ops, batched per event-loop tick.

Every :meth:`RedisStore.apply` becomes exactly one ``EVALSHA`` of :data:`SCRIPT`, which
carries out the whole batch atomically inside Redis. A :class:`Channel` drives the
connections to one server, packing the commands of every ``apply`` issued during one
event-loop tick into one send; the cluster store (:mod:`riskgate.store.cluster`) keeps
one channel per primary and reuses :func:`encode` and :func:`decode` per hash slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riskgate.errors import StoreError, StoreVersionError
from riskgate.store.base import BUCKETS_PER_WINDOW, Count, Distinct, Op, Put, Result, Store
from riskgate.store.window import Span, to_ms, window_span

#: The whole batch in one script. A count is one string ``{key}:c<width>``: a ring of
#: ``BUCKETS_PER_WINDOW + 1`` bucket counts then the last bucket written, packed as
#: little-endian doubles (exact for integers below 2**53). One GET and at most one SET
#: per op keep Redis's CPU and memory per counter low; a hash of eleven fields cost
#: Redis twice the time to convert its arguments and replies. A distinct count is one
#: HyperLogLog per bucket, ``{key}:d<width>:<bucket>``, as PFCOUNT unions keys.
#:
#: Every Redis key an op touches is in the hash slot of the key it declares, so a call
#: whose declared keys share a slot is legal on a Redis Cluster: counts and distinct
#: sets declare their *base* (:func:`base_key`, the op key inside a hash tag unless it
#: carries one) and append suffixes to it; values declare and use the op key itself.
SCRIPT = """
-- KEYS: one per op (a count's or distinct set's base, a value's key).
-- ARGV, per op, its kind and arguments:
--   c width current amount   count (amount 0 reads): answers oldest bucket, sum of the rest
--   d width current member   distinct add: answers the estimate over the window
--   r width current          distinct read: answers the estimate over the window
--   p ttl value | n ttl value   put | put if absent: answers the previous value
--   g | x                    get | delete: answers the value
local B = @BUCKETS@
local R = B + 1
local RING = '<' .. string.rep('d', R + 1)
local out = {}
local a = 1
for i = 1, #KEYS do
  local key, kind = KEYS[i], ARGV[a]
  if kind == 'c' then
    local width, cur, amount = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local ring = key .. ':c' .. ARGV[a + 1]
    a = a + 4
    local packed = redis.call('GET', ring)
    local vals, last = {}, nil
    if packed then
      vals = {struct.unpack(RING, packed)}
      last = vals[R + 1]
    else
      for s = 1, R do vals[s] = 0 end
    end
    if amount ~= 0 then
      local write = true
      if last == nil or cur > last then
        -- Slots of the buckets since `last` held buckets that have left the window.
        local from = cur - B
        if last ~= nil and last + 1 > from then from = last + 1 end
        for b = from, cur - 1 do vals[b % R + 1] = 0 end
        vals[cur % R + 1] = amount
        last = cur
      elseif cur >= last - B then
        vals[cur % R + 1] = vals[cur % R + 1] + amount
      else
        write = false  -- older than every bucket kept: nothing left to count towards
      end
      if write then
        vals[R + 1] = last
        -- Read until a window and a bucket after its newest bucket began.
        redis.call('SET', ring, struct.pack(RING, unpack(vals, 1, R + 1)), 'PX', R * width)
      end
    end
    local oldest, newer = 0, 0
    if last ~= nil then
      for b = math.max(cur - B, last - B), math.min(cur, last) do
        if b == cur - B then oldest = vals[b % R + 1] else newer = newer + vals[b % R + 1] end
      end
    end
    out[#out + 1] = oldest
    out[#out + 1] = newer
  elseif kind == 'd' or kind == 'r' then
    local cur = tonumber(ARGV[a + 2])
    local prefix = key .. ':d' .. ARGV[a + 1] .. ':'
    local names = {}
    for b = cur - B, cur do
      names[#names + 1] = prefix .. b
    end
    if kind == 'd' then
      -- A bucket is read until a window and one bucket after it began; a PFADD
      -- that changed nothing did not create it, so its TTL is already set.
      if redis.call('PFADD', names[B + 1], ARGV[a + 3]) == 1 then
        redis.call('PEXPIRE', names[B + 1], (B + 1) * tonumber(ARGV[a + 1]))
      end
      a = a + 4
    else
      a = a + 3
    end
    out[#out + 1] = redis.call('PFCOUNT', unpack(names))
  elseif kind == 'p' then
    out[#out + 1] = redis.call('SET', key, ARGV[a + 2], 'PX', ARGV[a + 1], 'GET')
    a = a + 3
  elseif kind == 'n' then
    out[#out + 1] = redis.call('SET', key, ARGV[a + 2], 'PX', ARGV[a + 1], 'NX', 'GET')
    a = a + 3
  elseif kind == 'g' then
    out[#out + 1] = redis.call('GET', key)
    a = a + 1
  elseif kind == 'x' then
    out[#out + 1] = redis.call('GETDEL', key)
    a = a + 1
  else
    return redis.error_reply('riskgate: unknown op kind ' .. tostring(kind))
  end
end
return out
""".replace("@BUCKETS@", str(BUCKETS_PER_WINDOW))

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

# hiredis packs a whole command into RESP in C; its stub types the tuple too narrowly.
pack = cast(Callable[[tuple[object, ...]], bytes], hiredis.pack_command)
_LOAD = pack(("SCRIPT", "LOAD", SCRIPT))
#: The oldest Redis that runs the script: ``SET key value NX GET`` came with 7.0.
MIN_REDIS_MAJOR = 7
_EVALSHA = (b"EVALSHA", SCRIPT_SHA.encode())
_KIND = {"get": b"g", "delete": b"x"}
_DISTINCT, _VALUE = 1, 2

#: Per op, how to read its part of the script's reply: a count's Span, else _DISTINCT
#: or _VALUE.
Plan = list[Span | int]


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


def base_key(key: str) -> str:
    """The name a count's or distinct set's Redis keys start with: in ``key``'s hash slot.

    A key that carries a hash tag keeps it, so callers can place related keys in one
    slot (one call on a cluster); any other key becomes the tag itself.

    >>> base_key("rg:c:fails:203.0.113.5"), base_key("rg:c:fails:{203.0.113.5}")
    ('{rg:c:fails:203.0.113.5}', 'rg:c:fails:{203.0.113.5}')
    """
    opened = key.find("{")
    if opened >= 0 and key.find("}", opened + 2) > opened:
        return key
    return "{" + key + "}"


def encode(ops: Sequence[Op], now_ms: int) -> tuple[bytes, Plan]:
    """The packed EVALSHA that carries out ``ops``, and how to read its reply."""
    keys: list[str] = []
    args: list[object] = []
    plan: Plan = []
    spans: dict[int, Span] = {}  # a decision's counters share a few windows
    for op in ops:
        if isinstance(op, Count | Distinct):
            keys.append(base_key(op.key))
            span = spans.get(op.window_ms)
            if span is None:
                span = spans[op.window_ms] = window_span(op.window_ms, now_ms)
            if isinstance(op, Count):
                args += (b"c", span.width, span.current, op.amount)
                plan.append(span)
                continue
            if op.member is None:
                args += (b"r", span.width, span.current)
            else:
                args += (b"d", span.width, span.current, op.member)
            plan.append(_DISTINCT)
            continue
        keys.append(op.key)
        if isinstance(op, Put):
            args += (b"n" if op.only_if_absent else b"p", op.ttl_ms, op.value)
        else:
            args.append(_KIND[op.kind])
        plan.append(_VALUE)
    return pack((*_EVALSHA, len(keys), *keys, *args)), plan


def decode(plan: Plan, reply: list[Any]) -> list[Result]:
    """The results of the ops :func:`encode` planned, from the script's reply."""
    values = iter(reply)
    results: list[Result] = []
    for step in plan:
        if isinstance(step, Span):
            results.append(step.slide(next(values), next(values)))
        elif step == _DISTINCT:
            results.append(float(next(values)))
        else:
            results.append(next(values))
    return results


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
        """Refuse a server older than the script needs (``SET ... NX GET`` is Redis 7)."""
        reply = await self.submit(pack(("INFO", "server")))
        if isinstance(reply, BaseException):
            raise StoreError(f"counter store {self.where}: INFO failed: {reply}")
        old = too_old(reply.decode() if isinstance(reply, bytes) else str(reply))
        if old is not None:
            raise StoreVersionError(
                f"counter store {self.where} runs Redis {old}; riskgate's script needs Redis "
                f"{MIN_REDIS_MAJOR} or newer (SET ... NX GET): upgrade it (or use Valkey "
                "7.2+, or memory:// for one process)")

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

    Every :meth:`apply` is exactly one ``EVALSHA`` of :data:`SCRIPT`, which carries out
    the whole batch atomically inside Redis. ``timeout`` bounds connecting and every
    read, so a stalled Redis yields a :class:`StoreError` rather than a hung request.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, max_in_flight: int = 4) -> None:
        self.where = redact(url)
        self._channel = Channel(connection_pool(url, timeout=timeout), self.where,
                                timeout=timeout, max_in_flight=max_in_flight)

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r})"

    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        if not ops:
            return []
        command, plan = encode(ops, to_ms(now))
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


def open(uri: str, *, max_entries: int, timeout: float) -> RedisStore:
    """The registry's opener for ``redis://``, ``rediss://`` and ``unix://`` (Redis
    evicts by its own policy, so ``max_entries`` is the memory store's alone)."""
    return RedisStore(uri, timeout=timeout)
