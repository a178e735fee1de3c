"""Where counters and remembered values live in Redis: shared generation pages.

:func:`Pages.encode` turns a batch of ops into one ``EVALSHA`` of :data:`SCRIPT`, and
:func:`decode` reads its reply; the standalone store sends it whole, the cluster store
one per hash slot (:meth:`Pages.slot_key` says which).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis

from riskgate.store.base import (
    BUCKETS_PER_WINDOW,
    Count,
    Distinct,
    Op,
    Put,
    Remember,
    Result,
)
from riskgate.store.window import Span, window_span

#: Members a distinct set counts exactly before it moves to HyperLogLog. Eleven 5-byte
#: members and the byte of the newest bucket take 56 of the 64 bytes a listpack value
#: may hold; a twelfth would fit too, but eleven keeps the answers riskgate gave before.
SMALL_SET = 11

#: Buckets per generation of a counter's pages: two windows (see SCRIPT).
GENERATION = 2 * BUCKETS_PER_WINDOW

#: Identities share 2**15 groups of pages (see SCRIPT for how the number was chosen).
GROUP_BITS = 15

#: Bytes of a field's name in its page (see SCRIPT for why six).
FIELD_BYTES = 6
_FIELD_MASK = (1 << 8 * FIELD_BYTES) - 1

#: The whole batch in one script, on a layout built around one cost: Redis spends some
#: 100 bytes on every key (dict entry, name, object header, expiry entry) before any
#: data, more than all of an address's counters take. So identities share keys: every
#: count, distinct set and remembered value (:class:`~riskgate.store.base.Remember`) is a
#: field of a *page*, the hash ``rg:p:{<group>}:<generation length>:<generation>``.
#:
#: - group: 15 bits of a digest of the key's hash tag, keyed by the secret, so that the
#:   counters and history of one address (device, account ...) share a group, hence one
#:   Redis Cluster slot, and nobody without the secret can aim identities at one page.
#:   A page must stay a listpack, a compact array where a field costs its bytes and a
#:   few more, 14 B for a count against 56 B as a hash table entry; Redis keeps a hash
#:   one up to ``hash-max-listpack-entries`` fields (512 by default) and 64-byte values.
#:   bench/memory_bench.py (a million addresses, 200,000 devices and accounts) fills the
#:   one-hour pages with some 66 fields, the fullest page with 140: three and a half
#:   times that traffic within a generation still fits. Beyond it the fullest pages
#:   turn into hash tables one by one, each of their fields costing four times as much,
#:   unless the limit is raised, and every lookup scans longer pages (a miss costs
#:   2.7 µs in 512 fields, 0.9 in 128), or GROUP_BITS grows by a bit per doubling. Half
#:   as many groups would save 10 MB of keys per million addresses and scan pages twice
#:   as long; twice as many cost 20 MB more and saved 0 to 4 % of Redis CPU.
#: - generation: a counter of window ``W`` (buckets of ``W/10``) lives in generation
#:   ``floor(newest bucket / 20)`` of pages 20 buckets, two windows, long. A gateway whose
#:   clock lags by up to a window must count what the others count (the contract suite
#:   holds Redis to the memory store there), so a reader must find every field whose
#:   newest bucket lies within a window of its own: those live in the generations of
#:   ``now - W`` and ``now + W``, two of them because a generation is two windows long.
#:   The script reads the later one first, so the first copy it finds is the newest; a
#:   write that moves a field's newest bucket on moves the field into the generation of
#:   ``now`` (HSET there, HDEL where it was), so each field exists once where readers
#:   look. A remembered value of time to live ``T`` is kept alike, by the time it was
#:   written, in generations ``2T`` long, and carries its expiry, so it lives exactly
#:   ``T`` whatever its page does.
#: - field: 48 bits, the identity's code (the rest of the digest that gave its group)
#:   XOR the counter's (a keyed digest of the key around the tag, the kind and the
#:   window or time to live): two digests per op cost the gateway more than Redis
#:   spends on the op, and this way an identity and a declared counter are each
#:   digested once, then remembered. Names need only differ within a page, and two of
#:   them collide only when two identities' codes differ by exactly what two counters'
#:   do, a chance of 2**-48 per pair as for a digest of the whole key: with 10**7
#:   fields live in pages of at most 128, some 6 * 10**8 pairs share a page, a
#:   one-in-400,000 chance per generation of merging two counters until their page
#:   expires.
#:
#: A page lives until the newest bucket written to it has left its window (a remembered
#: value's page: until the value expires), so an idle identity's fields go with their
#: page one to two windows after their last event, and no key lives without a TTL. A
#: page that must live longer gets a bucket (a twentieth of the time to live) more on
#: top: a busy page is then extended once per bucket, not by every write.
#:
#: Values stay under the 64 bytes of a listpack value:
#:
#: - a count is its newest bucket modulo 256 (a byte: readers are within 29 buckets of
#:   it, so their own bucket tells which), then per non-zero bucket of the
#:   ``BUCKETS_PER_WINDOW + 1`` it keeps, a byte ``age + 16 * count`` for counts of 1 to
#:   15, else a byte of age and an int32 (saturating): 2 bytes after one event, 56 at most;
#: - a distinct set is its newest bucket (a byte) then, per member, a 4-byte digest of
#:   the member and the age of the bucket it was last seen in: exact while it holds at
#:   most :data:`SMALL_SET` members in the window. One more and it moves to one
#:   HyperLogLog per bucket (``rg:h:{<group>}:<field in hex>:<bucket>``, a 12 kB ceiling
#:   each, about 1 % error, expiring with its bucket) and the field keeps only the
#:   newest bucket and ``H``; a NAT address or a device farm costs kilobytes, not a
#:   field per account it saw;
#: - a remembered value is its expiry (int48, ms of the event clock) then the value.
#:
#: The script reads and writes a page once per op, not once per batch: each Redis call
#: costs some 0.5 µs, but gathering a batch's fields per page in Lua cost more than the
#: calls it saved (measured: 84 µs per decision against 55). The batch travels compact:
#: each page once in KEYS, and each op a fixed binary record within one argument. Sent
#: as some 100 arguments, each packed by the gateway and parsed and copied into Lua by
#: Redis, a decision cost both sides more (measured: a tenth more instructions each).
#: Every key it touches is declared in KEYS but the HyperLogLogs: a set learns that it
#: is large only inside the script, and its HyperLogLogs carry the group's hash tag, so
#: they live in the slot of the keys declared with them.
SCRIPT = """
-- KEYS: the pages of the batch's paged ops, each pair once, the later first; a plain
-- value's own key.
-- ARGV[1]: now in ms. ARGV[2]: the ops, one record each, big-endian: its kind (a
-- byte), the index in KEYS of its later page or own key (uint32), then per kind
-- (field: 6 bytes; width, current, amount, ttl: int48; digest: 4 bytes):
--   c width current field amount   count (amount 0 reads): answers oldest bucket, sum of the rest
--   d width current field digest   distinct add: answers the estimate over the window
--   r width current field          distinct read: answers the estimate over the window
--   m field ttl | M field ttl      remember | remember if absent: answers the previous value
--   p | n                          put | put if absent: answers the previous value
--   g | x                          get | delete: answers the value
-- ARGV[3...]: the strings of the ops that carry some, in order: a remembered value; a
-- put's ttl and value.
local B = @BUCKETS@
local R = B + 1
local GENERATION = @GENERATION@
local SMALL = @SMALL@
local now, ops = tonumber(ARGV[1]), ARGV[2]
local out, need, grant = {}, {}, {}
local pos, a, size = 1, 3, #ops

-- The newest copy of a field and the page it is in: copies in later pages are newer.
local function find(later, earlier, field)
  local packed = redis.call('HGET', later, field)
  if packed then return packed, later end
  packed = redis.call('HGET', earlier, field)
  if packed then return packed, earlier end
  return nil, nil
end

-- Writes a field to page `to` and drops the copy it replaces from page `from`.
local function put(to, field, packed, from)
  redis.call('HSET', to, field, packed)
  if from and from ~= to then redis.call('HDEL', from, field) end
end

-- Page `to` must live `ms` more; when it must be extended, it gets `extra` on top, so
-- that a busy page is extended about once per bucket rather than by every write.
local function keep(to, ms, extra)
  if (need[to] or 0) < ms then need[to] = ms end
  if (grant[to] or 0) < ms + extra then grant[to] = ms + extra end
end

local function clamp(n)
  if n > 2147483647 then return 2147483647 elseif n < -2147483648 then return -2147483648 end
  return n
end

-- A field's newest bucket from its first byte (that bucket modulo 256).
local function newest(packed, cur)
  local d = (string.byte(packed, 1) - cur) % 256
  if d >= 128 then d = d - 256 end
  return cur + d
end

-- The page a write at bucket `cur` moves a field to (the generation of `cur`), which
-- must then live until that bucket has left the window.
local function home(later, earlier, cur, width)
  local to = earlier
  if cur % GENERATION < B then to = later end
  keep(to, (cur + R) * width - now, width)
  return to
end

-- Adds a member to the HyperLogLog of bucket b; it is read until a window and a bucket
-- after the bucket began. A PFADD that changed nothing did not create it: TTL set.
local function hll_add(prefix, b, digest, cur, width)
  if redis.call('PFADD', prefix .. b, digest) == 1 then
    redis.call('PEXPIRE', prefix .. b, (b - cur + R) * width)
  end
end

local function hll_prefix(page, field)
  local hex = string.gsub(field, '.', function(c) return string.format('%02x', string.byte(c)) end)
  return 'rg:h:' .. string.match(page, '{[^}]*}') .. ':' .. hex .. ':'
end

while pos <= size do
  local kind, k
  kind, k, pos = struct.unpack('>c1I4', ops, pos)
  if kind == 'c' then
    local later, earlier = KEYS[k], KEYS[k + 1]
    local width, cur, field, amount
    width, cur, field, amount, pos = struct.unpack('>i6i6c6i6', ops, pos)
    local packed, at = find(later, earlier, field)
    local vals, last = {}, nil
    if packed then
      last = newest(packed, cur)
      local p = 2
      while p <= #packed do
        local byte = string.byte(packed, p)
        local n = math.floor(byte / 16)
        if n == 0 then
          n = struct.unpack('<i4', packed, p + 1)
          p = p + 5
        else
          p = p + 1
        end
        vals[last - byte % 16] = n
      end
    end
    if amount ~= 0 then
      local to = at
      if last == nil or cur > last then
        -- Buckets more than a window before `cur` have left every window to come.
        local kept = {}
        for b, n in pairs(vals) do
          if b >= cur - B then kept[b] = n end
        end
        vals = kept
        vals[cur] = clamp(amount)
        last = cur
        to = home(later, earlier, cur, width)
      elseif cur >= last - B then
        vals[cur] = clamp((vals[cur] or 0) + amount)
      else
        to = nil  -- older than every bucket kept: nothing left to count towards
      end
      if to then
        local parts = {string.char(last % 256)}
        for b, n in pairs(vals) do
          if n > 0 and n < 16 then
            parts[#parts + 1] = string.char(last - b + 16 * n)
          elseif n ~= 0 then
            parts[#parts + 1] = string.char(last - b) .. struct.pack('<i4', n)
          end
        end
        put(to, field, table.concat(parts), at)
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
    local later, earlier = KEYS[k], KEYS[k + 1]
    local width, cur, field, digest
    width, cur, field, pos = struct.unpack('>i6i6c6', ops, pos)
    if kind == 'd' then digest, pos = struct.unpack('c4', ops, pos) end
    local packed, at = find(later, earlier, field)
    local top = nil
    if packed then
      top = newest(packed, cur)
      if top < cur - B then packed, top = nil, nil end  -- every member has left the window
    end
    local large = packed ~= nil and #packed == 2
    if not large then
      local members, ages = {}, {}
      if packed then
        for p = 2, #packed, 5 do
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
        local to = at
        if top == nil or cur > top then
          top = cur
          to = home(later, earlier, cur, width)
        end
        local parts, live = {string.char(top % 256)}, 0
        for _, m in ipairs(members) do
          if ages[m] >= top - B then
            parts[#parts + 1] = m .. string.char(top - ages[m])
            live = live + 1
          end
        end
        if live > SMALL then
          local prefix = hll_prefix(to, field)
          for _, m in ipairs(members) do
            if ages[m] >= top - B then hll_add(prefix, ages[m], m, cur, width) end
          end
          put(to, field, string.char(top % 256) .. 'H', at)
          large = true
        else
          put(to, field, table.concat(parts), at)
        end
      end
      if not large then
        local n = 0
        for _, m in ipairs(members) do
          if ages[m] >= cur - B then n = n + 1 end
        end
        out[#out + 1] = n
      end
    elseif digest ~= nil then
      hll_add(hll_prefix(at, field), cur, digest, cur, width)
      if cur > top then
        put(home(later, earlier, cur, width), field, string.char(cur % 256) .. 'H', at)
      end
    end
    if large then
      local prefix, names = hll_prefix(later, field), {}
      for b = cur - B, cur do names[#names + 1] = prefix .. b end
      out[#out + 1] = redis.call('PFCOUNT', unpack(names))
    end
  elseif kind == 'm' or kind == 'M' then
    local later, earlier, value = KEYS[k], KEYS[k + 1], ARGV[a]
    local field, ms
    field, ms, pos = struct.unpack('>c6i6', ops, pos)
    a = a + 1
    local packed, at = find(later, earlier, field)
    local previous = false
    if packed and struct.unpack('<i6', packed) > now then previous = string.sub(packed, 7) end
    out[#out + 1] = previous
    if not (previous and kind == 'M') then
      local to = earlier
      if now % (2 * ms) < ms then to = later end
      put(to, field, struct.pack('<i6', now + ms) .. value, at)
      keep(to, ms, math.floor(ms / 20))
    end
  else
    local key = KEYS[k]
    if kind == 'p' then
      out[#out + 1] = redis.call('SET', key, ARGV[a + 1], 'PX', ARGV[a], 'GET')
      a = a + 2
    elseif kind == 'n' then
      out[#out + 1] = redis.call('SET', key, ARGV[a + 1], 'PX', ARGV[a], 'NX', 'GET')
      a = a + 2
    elseif kind == 'g' then
      out[#out + 1] = redis.call('GET', key)
    elseif kind == 'x' then
      out[#out + 1] = redis.call('GETDEL', key)
    else
      return redis.error_reply('riskgate: unknown op kind ' .. tostring(kind))
    end
  end
end
-- A page lives until the last bucket written to it has left its window (a remembered
-- value's page: until the value expires).
for page, ms in pairs(need) do
  if redis.call('PTTL', page) < ms then redis.call('PEXPIRE', page, grant[page]) end
end
return out
""".replace("@BUCKETS@", str(BUCKETS_PER_WINDOW)).replace(
    "@GENERATION@", str(GENERATION)).replace("@SMALL@", str(SMALL_SET))

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

# hiredis packs a whole command into RESP in C; its stub types the tuple too narrowly.
pack = cast(Callable[[tuple[object, ...]], bytes], hiredis.pack_command)
_EVALSHA = (b"EVALSHA", SCRIPT_SHA.encode())
_KIND = {"get": b"g", "delete": b"x"}
_DISTINCT, _VALUE = 1, 2

#: Per op, how to read its part of the script's reply: a count's Span, else _DISTINCT
#: or _VALUE.
Plan = list[Span | int]


def split(key: str) -> tuple[str, str | None, str | None]:
    """What Redis Cluster hashes of ``key`` (the text of its first ``{...}``, else all of
    it), and what precedes and follows that ``{...}`` (None, None: no tag). The parts
    name the counter among its identity's, so ``a{x}b``, ``ab{x}``, ``{x}`` and ``x`` differ.

    >>> split("rg:c:fails:{203.0.113.5}"), split("fails"), split("a{}b")
    (('203.0.113.5', 'rg:c:fails:', ''), ('fails', None, None), ('a{}b', None, None))
    """
    head, brace, tail = key.partition("{")
    if brace:
        tag, closing, after = tail.partition("}")
        if closing and tag:
            return tag, head, after
    return key, None, None


@functools.lru_cache(maxsize=4096)  # a decision adds one account or device to several sets
def _member_digest(member: str) -> bytes:
    # Four bytes tell members apart (two of a dozen collide once in a hundred million
    # sets) and feed the HyperLogLog when the set grows large.
    return hashlib.blake2b(member.encode(), digest_size=4).digest()


class Pages:
    """Names the pages and fields of ops under one secret, and packs batches of ops.

    Every gateway sharing a Redis must use the same secret, as for account keys.

    >>> pages = Pages(b"s3cret")
    >>> pages.pages(Count("rg:c:fails:{203.0.113.5}", 60_000), 1_700_000_000_000)
    ('rg:p:{7ee0}:120000:14166667', 'rg:p:{7ee0}:120000:14166666')
    >>> pages.slot_key(Count("rg:c:other:{203.0.113.5}", 600_000))
    'rg:p:{7ee0}:'
    """

    def __init__(self, secret: bytes) -> None:
        key = hashlib.blake2b(secret).digest()
        self._identities = hashlib.blake2b(key=key, digest_size=8, person=b"riskgate-page")
        self._counters = hashlib.blake2b(key=key, digest_size=FIELD_BYTES,
                                         person=b"riskgate-field")
        # Digests are the costly part of naming: one per identity (a decision has a
        # few, and the cluster names each twice, to route and to encode) and one per
        # declared counter, each remembered for the next use.
        self._identity = functools.lru_cache(maxsize=4096)(self._digest_identity)
        self._counter = functools.lru_cache(maxsize=1024)(self._digest_counter)
        # A window's pages and span bytes change once per bucket, not per batch.
        self._windows: dict[tuple[int, int], tuple[str, str, bytes]] = {}

    def _digest_identity(self, tag: str) -> tuple[str, int]:
        """The prefix of the pages of ``tag``'s group, and the code of its identity."""
        digest = self._identities.copy()
        digest.update(tag.encode())
        value = int.from_bytes(digest.digest())
        group = value >> (64 - GROUP_BITS)
        return f"rg:p:{{{group:04x}}}:", value & _FIELD_MASK

    def _digest_counter(self, head: str | None, after: str | None, kind: str,
                        length_ms: int) -> int:
        rest = "" if head is None else f"{head}{{}}{after}"
        digest = self._counters.copy()
        digest.update(f"{kind}{length_ms}:{rest}".encode())
        return int.from_bytes(digest.digest())

    def _window(self, window_ms: int, now_ms: int) -> tuple[Span, str, str, bytes]:
        """A window's span at ``now_ms``, the ends of its two pages' names, and its width
        and current bucket as the script reads them."""
        span = window_span(window_ms, now_ms)
        found = self._windows.get((window_ms, span.current))
        if found is None:
            if len(self._windows) >= 256:  # a rule set has a few windows
                self._windows.clear()
            found = self._windows[window_ms, span.current] = (
                *_generations(GENERATION * span.width,
                              generation(span.current, BUCKETS_PER_WINDOW)),
                span.width.to_bytes(6, signed=True) + span.current.to_bytes(6, signed=True))
        return (span, *found)

    def slot_key(self, op: Op) -> str:
        """A key in the hash slot of every key ``op`` touches (the cluster routes by it)."""
        if isinstance(op, Count | Distinct | Remember):
            return self._identity(split(op.key)[0])[0]
        return op.key

    def pages(self, op: Count | Distinct | Remember, now_ms: int) -> tuple[str, str]:
        """The two pages ``op`` is looked for in at ``now_ms``, the later first."""
        prefix = self._identity(split(op.key)[0])[0]
        if isinstance(op, Remember):
            later, earlier = _generations(2 * op.ttl_ms, generation(now_ms, op.ttl_ms))
        else:
            _, later, earlier, _ = self._window(op.window_ms, now_ms)
        return prefix + later, prefix + earlier

    def encode(self, ops: Sequence[Op], now_ms: int) -> tuple[bytes, Plan]:
        """The packed EVALSHA that carries out ``ops``, and how to read its reply."""
        keys: list[str] = []
        records: list[bytes] = []
        strings: list[object] = []
        plan: Plan = []
        # A decision's ops share a few identities and windows, hence pages: each pair
        # of pages goes once in KEYS, and its ops name it by index.
        pairs: dict[str, bytes] = {}
        windows: dict[int, tuple[Span, str, str, bytes]] = {}
        identity, counter = self._identity, self._counter
        for op in ops:
            if isinstance(op, Distinct):
                kind, length = "d", op.window_ms
            elif isinstance(op, Count):
                kind, length = "c", op.window_ms
            elif isinstance(op, Remember):
                kind, length = "m", op.ttl_ms
            else:
                keys.append(op.key)
                if isinstance(op, Put):
                    records += (b"n" if op.only_if_absent else b"p", len(keys).to_bytes(4))
                    strings += (op.ttl_ms, op.value)
                else:
                    records += (_KIND[op.kind], len(keys).to_bytes(4))
                plan.append(_VALUE)
                continue
            tag, head, after = split(op.key)
            prefix, code = identity(tag)
            name = (code ^ counter(head, after, kind, length)).to_bytes(FIELD_BYTES)
            if kind == "m":
                later, earlier = _generations(2 * length, generation(now_ms, length))
            else:
                window = windows.get(length)
                if window is None:
                    window = windows[length] = self._window(length, now_ms)
                span, later, earlier, where = window
            page = prefix + later
            index = pairs.get(page)
            if index is None:
                keys += (page, prefix + earlier)
                index = pairs[page] = (len(keys) - 1).to_bytes(4)
            if isinstance(op, Distinct):
                if op.member is None:
                    records += (b"r", index, where, name)
                else:
                    records += (b"d", index, where, name, _member_digest(op.member))
                plan.append(_DISTINCT)
            elif isinstance(op, Count):
                records += (b"c", index, where, name,
                            _AMOUNTS.get(op.amount) or _amount(op.amount))
                plan.append(span)
            else:
                records += (b"M" if op.only_if_absent else b"m", index, name,
                            length.to_bytes(6, signed=True))
                strings.append(op.value)
                plan.append(_VALUE)
        return pack((*_EVALSHA, len(keys), *keys, now_ms, b"".join(records), *strings)), plan


def _amount(amount: int) -> bytes:
    # Redis keeps a bucket's count as a saturating int32, so an amount past 2**40 adds
    # up to what 2**40 does; clamped, every amount fits the script's int48.
    return max(-(1 << 40), min(amount, 1 << 40)).to_bytes(6, signed=True)


_AMOUNTS = {n: _amount(n) for n in (0, 1)}  # nearly every count adds one or reads


@functools.lru_cache(maxsize=256)  # a rule set has a few windows, each a generation at a time
def _generations(length: int, index: int) -> tuple[str, str]:
    return f"{length}:{index}", f"{length}:{index - 1}"


def generation(at: int, reach: int) -> int:
    """The later of the two generations, each ``2 * reach`` long, that hold everything
    written within ``reach`` of ``at``: those of ``at - reach`` and ``at + reach``.

    >>> generation(39, 10), generation(40, 10), generation(49, 10), generation(50, 10)
    (2, 2, 2, 3)
    """
    return (at + reach) // (2 * reach)


def decode(plan: Plan, reply: list[Any]) -> list[Result]:
    """The results of the ops :meth:`Pages.encode` planned, from the script's reply."""
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
