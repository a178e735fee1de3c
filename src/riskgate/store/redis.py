"""The shared store: Redis, one EVALSHA per batch of ops, batched per event-loop tick.

Every :meth:`RedisStore.apply` becomes exactly one ``EVALSHA`` of :data:`SCRIPT`, which
carries out the whole batch atomically inside Redis. A :class:`Channel` drives the
connections to one server, packing the commands of every ``apply`` issued during one
event-loop tick into one send; the cluster store (:mod:`riskgate.store.cluster`) keeps
one channel per primary and reuses :func:`encode` and :func:`decode` per hash slot.
"""

from __future__ import annotations

import asyncio
import base64
import functools
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

#: Members a distinct set counts exactly: eleven 5-byte members and the newest bucket
#: are the most a listpack value of 64 bytes holds.
SMALL_SET = 11

#: The whole batch in one script. Redis spends about a hundred bytes on every key (its
#: dict entry, name, object header and expiry entry) before any data, so the layout
#: spends one key per *identity*, not per counter: every count and distinct set whose
#: key carries one hash tag is a field of the hash ``rg:c:{tag}`` (:func:`home`), named
#: by six characters of a digest of the rest of the key, the kind and the window
#: (:func:`field`). Fields stay under ``hash-max-listpack-value`` (64 B), so Redis keeps
#: the hash as one compact listpack rather than a table of entries:
#:
#: - a count is its newest bucket (a double) then, for each non-zero bucket of the
#:   ``BUCKETS_PER_WINDOW + 1`` it keeps, its age (a byte) and count (int32, saturating):
#:   13 B for one event, 63 B at most;
#: - a distinct set is its newest bucket then, per member, a 4-byte digest of the member
#:   and the age of the bucket it was last seen in: exact while it holds at most
#:   :data:`SMALL_SET` members in the window (63 B). One more and it moves to one
#:   HyperLogLog per bucket (``rg:c:{tag}:<field>:<bucket>``, a 12 kB ceiling each, about
#:   1 % error) and the field keeps only the newest bucket and ``H``, 9 B; a NAT address
#:   or a device farm costs kilobytes, not one entry per account it saw.
#:
#: The hash expires a window and a bucket after a write to its longest-windowed field;
#: fields of shorter windows inside it count nothing once their buckets are old, and
#: their next write starts them afresh.
#:
#: Every key an op touches is in the hash slot of the key it declares (the identity's
#: hash, or a value's own key), so a call whose declared keys share a slot is legal on
#: a Redis Cluster.
SCRIPT = """
-- KEYS: one per op: a count's or distinct set's identity hash, a value's key.
-- ARGV, per op, its kind and arguments:
--   c width current amount field   count (amount 0 reads): answers oldest bucket, sum of the rest
--   d width current digest field   distinct add: answers the estimate over the window
--   r width current field          distinct read: answers the estimate over the window
--   p ttl value | n ttl value      put | put if absent: answers the previous value
--   g | x                          get | delete: answers the value
local B = @BUCKETS@
local R = B + 1
local SMALL = @SMALL@
local out, ttl = {}, {}
local a = 1

local function keep(key, ms)
  if (ttl[key] or 0) < ms then ttl[key] = ms end
end

local function clamp(n)
  if n > 2147483647 then return 2147483647 elseif n < -2147483648 then return -2147483648 end
  return n
end

-- Adds a member to the HyperLogLog of bucket b; it is read until a window and a bucket
-- after the bucket began. A PFADD that changed nothing did not create it: TTL set.
local function hll_add(prefix, b, digest, cur, width)
  if redis.call('PFADD', prefix .. b, digest) == 1 then
    redis.call('PEXPIRE', prefix .. b, (b - cur + R) * width)
  end
end

for i = 1, #KEYS do
  local key, kind = KEYS[i], ARGV[a]
  if kind == 'c' then
    local width, cur, amount = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local field = ARGV[a + 4]
    a = a + 5
    local packed = redis.call('HGET', key, field)
    local vals, last = {}, nil
    if packed then
      last = struct.unpack('<d', packed)
      for p = 9, #packed, 5 do
        local age, n = struct.unpack('<Bi4', packed, p)
        vals[last - age] = n
      end
    end
    if amount ~= 0 then
      local write = true
      if last == nil or cur > last then
        -- Buckets more than a window before `cur` have left every window to come.
        local kept = {}
        for b, n in pairs(vals) do
          if b >= cur - B then kept[b] = n end
        end
        vals = kept
        vals[cur] = clamp(amount)
        last = cur
      elseif cur >= last - B then
        vals[cur] = clamp((vals[cur] or 0) + amount)
      else
        write = false  -- older than every bucket kept: nothing left to count towards
      end
      if write then
        local parts = {struct.pack('<d', last)}
        for b, n in pairs(vals) do
          if n ~= 0 then parts[#parts + 1] = struct.pack('<Bi4', last - b, n) end
        end
        redis.call('HSET', key, field, table.concat(parts))
        keep(key, R * width)
      end
    end
    local oldest, newer = 0, 0
    for b, n in pairs(vals) do
      if b == cur - B then
        oldest = n
      elseif b > cur - B and b <= cur then
        newer = newer + n
      end
    end
    out[#out + 1] = oldest
    out[#out + 1] = newer
  elseif kind == 'd' or kind == 'r' then
    local width, cur = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local digest, field
    if kind == 'd' then
      digest, field = ARGV[a + 3], ARGV[a + 4]
      a = a + 5
    else
      field = ARGV[a + 3]
      a = a + 4
    end
    local prefix = key .. ':' .. field .. ':'
    local packed = redis.call('HGET', key, field) or nil  -- a missing field is false
    local top = nil
    if packed then
      top = struct.unpack('<d', packed)
      if top < cur - B then packed, top = nil, nil end  -- every member has left the window
    end
    local large = packed ~= nil and #packed == 9
    if not large then
      local members, ages = {}, {}
      if packed then
        for p = 9, #packed, 5 do
          local m = string.sub(packed, p, p + 3)
          members[#members + 1] = m
          ages[m] = top - string.byte(packed, p + 4)
        end
      end
      if digest ~= nil and (top == nil or cur >= top - B) then
        local seen = ages[digest]
        if seen == nil then
          members[#members + 1] = digest
          ages[digest] = cur
        elseif seen < cur then
          ages[digest] = cur
        end
        if top == nil or cur > top then top = cur end
        local parts, live = {struct.pack('<d', top)}, 0
        for _, m in ipairs(members) do
          if ages[m] >= top - B then
            parts[#parts + 1] = m .. string.char(top - ages[m])
            live = live + 1
          end
        end
        if live > SMALL then
          for _, m in ipairs(members) do
            if ages[m] >= top - B then hll_add(prefix, ages[m], m, cur, width) end
          end
          redis.call('HSET', key, field, struct.pack('<d', top) .. 'H')
          large = true
        else
          redis.call('HSET', key, field, table.concat(parts))
        end
        keep(key, R * width)
      end
      if not large then
        local n = 0
        for _, m in ipairs(members) do
          if ages[m] >= cur - B then n = n + 1 end
        end
        out[#out + 1] = n
      end
    elseif digest ~= nil then
      hll_add(prefix, cur, digest, cur, width)
      if cur > top then
        redis.call('HSET', key, field, struct.pack('<d', cur) .. 'H')
        keep(key, R * width)
      end
    end
    if large then
      local names = {}
      for b = cur - B, cur do names[#names + 1] = prefix .. b end
      out[#out + 1] = redis.call('PFCOUNT', unpack(names))
    end
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
-- An identity's hash lives as long as the longest-lived field written to it.
for key, ms in pairs(ttl) do
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
return out
""".replace("@BUCKETS@", str(BUCKETS_PER_WINDOW)).replace("@SMALL@", str(SMALL_SET))

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


def home(key: str) -> tuple[str, str]:
    """The identity hash a count or distinct set of ``key`` lives in, and the rest of ``key``.

    The hash is named by ``key``'s hash tag, so it lands in the Redis Cluster slot of
    ``key`` itself and every counter of one address (device, account ...) shares it; a
    key without a tag is its own identity.

    >>> home("rg:c:fails:{203.0.113.5}"), home("fails")
    (('rg:c:{203.0.113.5}', 'rg:c:fails:{}'), ('rg:c:{fails}', ''))
    """
    opened = key.find("{")
    if opened >= 0:
        closed = key.find("}", opened + 1)
        if closed > opened + 1:
            # The braces stay in the rest, so `a{x}b` and `ab{x}` stay two counters.
            return f"rg:c:{key[opened:closed + 1]}", f"{key[:opened]}{{}}{key[closed + 1:]}"
    return f"rg:c:{{{key}}}", ""


@functools.lru_cache(maxsize=4096)  # a rule set declares a few dozen counters
def field(rest: str, kind: str, window_ms: int) -> str:
    """The field of a counter in its identity hash: six characters of a digest.

    36 bits keep the chance that two of one identity's counters collide below one in
    ten million even for a hundred counters, in a sixth of the counter's name.

    >>> field("rg:c:fails:{}", "c", 60_000) != field("rg:c:fails:{}", "c", 10_000)
    True
    """
    digest = hashlib.blake2b(f"{kind}{window_ms}:{rest}".encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest)[:6].decode()


def declared_key(op: Op) -> str:
    """The key a call carrying ``op`` declares (the cluster routes calls by its slot)."""
    if isinstance(op, Count | Distinct):
        return home(op.key)[0]
    return op.key


def _member_digest(member: str) -> bytes:
    # Four bytes tell members apart (two of a dozen collide once in a hundred million
    # sets) and feed the HyperLogLog when the set grows large.
    return hashlib.blake2b(member.encode(), digest_size=4).digest()


def encode(ops: Sequence[Op], now_ms: int) -> tuple[bytes, Plan]:
    """The packed EVALSHA that carries out ``ops``, and how to read its reply."""
    keys: list[str] = []
    args: list[object] = []
    plan: Plan = []
    spans: dict[int, Span] = {}  # a decision's counters share a few windows
    for op in ops:
        if isinstance(op, Count | Distinct):
            identity, rest = home(op.key)
            keys.append(identity)
            span = spans.get(op.window_ms)
            if span is None:
                span = spans[op.window_ms] = window_span(op.window_ms, now_ms)
            if isinstance(op, Count):
                args += (b"c", span.width, span.current, op.amount,
                         field(rest, "c", op.window_ms))
                plan.append(span)
                continue
            name = field(rest, "d", op.window_ms)
            if op.member is None:
                args += (b"r", span.width, span.current, name)
            else:
                args += (b"d", span.width, span.current, _member_digest(op.member), name)
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
