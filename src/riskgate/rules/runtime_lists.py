"""Runtime lists: temporary block or allow entries for an IP, CIDR, device or account.

Operators add them while the service runs (``/admin/lists``, ``riskgate lists``), each
with a TTL and a reason; every riskgate process sharing the store applies them from
the next request on. Matches become synthetic rules ``runtime-block:<id>`` and
``runtime-allow:<id>`` with an ``action``, so the precedence of :func:`decide` holds:
a runtime block beats everything, a runtime allow beats every score.

Storage is one small JSON document under :data:`DOCUMENT_KEY` plus a version under
:data:`VERSION_KEY`, written together by every change. A decision only adds a ``Get``
of the version to the batch it sends anyway, so lists cost no round trip; the
document is fetched once per process after each change. Device and account values
are keyed with the secret (as ``device.key`` / ``account.key`` are) before they are
stored, so a raw id never reaches the store, the logs or the admin listing.

>>> import asyncio
>>> from riskgate.store import MemoryStore
>>> from riskgate.signals.keys import Keyer
>>> lists = RuntimeLists(MemoryStore(), Keyer(b"s3cret"))
>>> entry = asyncio.run(lists.add("cidr", "203.0.113.0/24", "block", 3600, "scalper farm", 0.0))
>>> (entry.rule == f"runtime-block:{entry.id}", entry.expires)
(True, 3600.0)
>>> [m.action for m in lists.matches({"ip": "203.0.113.9"}, 10.0)]
['block']
>>> lists.matches({"ip": "203.0.113.9"}, 3600.0)  # expired
[]
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, get_args

import orjson

from riskgate.decision.verdict import RUNTIME_RULE_PREFIX, Match
from riskgate.errors import InputError, StoreError
from riskgate.signals.keys import Keyer
from riskgate.store import Delete, Get, Op, Put, Result, Store

logger = logging.getLogger(__name__)

Kind = Literal["ip", "cidr", "device", "account"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
ListAction = Literal["allow", "block"]
LIST_ACTIONS: Final[tuple[ListAction, ...]] = get_args(ListAction)

# One hash tag: on a Redis Cluster both keys share a slot, so a change writes them in one
# atomic call there too.
DOCUMENT_KEY: Final = "rg:{lists}:runtime"
VERSION_KEY: Final = "rg:{lists}:runtime:version"
#: Runtime entries are stop-gaps for an incident; anything meant to last belongs in a
#: reviewed rule or list file.
MAX_TTL_S: Final = 30 * 86400
MAX_REASON: Final = 200
#: The whole set travels as one document and is matched with small in-memory tables;
#: a bound keeps both cheap. Bulk lists belong in rule-set list files.
MAX_ENTRIES: Final = 1000
#: How stale the lists may be on unscored routes (see :meth:`RuntimeLists.refuses`).
RECHECK_S: Final = 1.0
_MAX_IDENTITY = 512
_UNITS: Final[dict[str, float]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
#: Which fact an entry kind is compared with; ``cidr`` entries test ``ip`` too.
_FACT: Final[dict[Kind, str]] = {"ip": "ip", "cidr": "ip", "device": "device.key",
                                 "account": "account.key"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One runtime list entry. ``value`` is an address or network in clear, and a
    keyed id (never the raw one) for ``device`` and ``account``. Times are Unix seconds."""

    id: str
    kind: Kind
    value: str
    action: ListAction
    reason: str
    created: float
    expires: float

    @property
    def rule(self) -> str:
        """The rule id this entry's matches carry in ``reasons`` and the decision log."""
        return f"{RUNTIME_RULE_PREFIX}{self.action}:{self.id}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        return cls(str(data["id"]), data["kind"], str(data["value"]), data["action"],
                   str(data["reason"]), float(data["created"]), float(data["expires"]))


def parse_ttl(value: object) -> float:
    """A TTL in seconds from a number of seconds or a duration such as ``"90m"``.

    >>> parse_ttl("1h"), parse_ttl(90), parse_ttl("45")
    (3600.0, 90.0, 45.0)
    >>> parse_ttl("soon")
    Traceback (most recent call last):
    ...
    riskgate.errors.InputError: `ttl` must be seconds or a duration like 30m, 1h, 7d; got 'soon'
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        shown = value if isinstance(value, str | int | float | None) else type(value).__name__
        raise InputError(f"`ttl` must be seconds or a duration like 30m, 1h, 7d; got {shown!r}",
                         "ttl")
    return float(found[1]) * _UNITS.get(found[2], 1)


def for_metrics(match: Match) -> Match:
    """A runtime match under its bounded metric label (``runtime-block``): metric
    labels must not grow with every entry an operator ever adds."""
    return Match(match.rule.partition(":")[0], match.score, match.action, match.shadow)


class _Matcher:
    """The live entries of one version, indexed for a request's facts.

    Addresses, devices and accounts are exact matches: dictionaries on the canonical
    text. Networks are few (an operator types each one) and may overlap, so they are
    kept as integer ranges and scanned linearly: a few hundred integer comparisons
    cost less than parsing the address, and sorted ranges with bisect would need the
    overlapping entries (with their own actions and expiries) split first.
    """

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.exact: dict[tuple[str, str], list[Entry]] = {}
        self.networks: list[tuple[int, int, int, Entry]] = []
        for entry in entries:
            if entry.kind == "cidr":
                net = ipaddress.ip_network(entry.value)
                self.networks.append((net.version, int(net.network_address),
                                      int(net.broadcast_address), entry))
            else:
                self.exact.setdefault((_FACT[entry.kind], entry.value), []).append(entry)
        self.empty = not self.exact and not self.networks

    def find(self, facts: Mapping[str, Any], now: float) -> list[Entry]:
        """The live entries matching ``facts`` (``ip``, ``device.key``, ``account.key``)."""
        if self.empty:
            return []
        found: list[Entry] = []
        for fact in ("ip", "device.key", "account.key"):
            value = facts.get(fact)
            if value:
                found += self.exact.get((fact, value), ())
        ip = facts.get("ip")
        if self.networks and ip:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                address = None
            if address is not None:
                number = int(address)
                found += [entry for version, first, last, entry in self.networks
                          if version == address.version and first <= number <= last]
        return [entry for entry in found if entry.expires > now]


class RuntimeLists:
    """The runtime lists of one store, with this process's cached view of them.

    Concurrent edits from two processes (two admins, or the CLI and the admin API)
    are a read-modify-write of one key, and the last writer wins: an entry added in
    the same instant by the other side can be lost. The store has no compare-and-set
    op, edits are rare and made by people, and both sides see the outcome in the
    listing, so this stays simple on purpose.
    """

    def __init__(self, store: Store, keyer: Keyer) -> None:
        self.store = store
        self._key = keyer
        self._version: str | None = None
        self._loaded = False
        self._matcher = _Matcher(())
        self._checked_at = -math.inf
        # One fetch per change per process, however many decisions notice it at once.
        self._fetching = asyncio.Lock()

    # -- deciding -------------------------------------------------------------------

    @staticmethod
    def version_op() -> Get:
        """The op a decision adds to its batch; its answer goes to :meth:`refresh`."""
        return Get(VERSION_KEY)

    async def refresh(self, version: Result, now: float) -> None:
        """Bring the cached entries up to ``version`` (the answer to :meth:`version_op`).

        Unchanged: returns at once. Changed: one extra round trip for the document.
        Raises :class:`StoreError` when the document cannot be fetched; the cached
        version then stays, so the next decision tries again.
        """
        self._checked_at = now
        current = version if isinstance(version, str) else None
        if self._loaded and current == self._version:
            return
        async with self._fetching:
            if self._loaded and current == self._version:
                return  # another decision fetched it while this one waited
            if current is None:
                # Both keys are written (and expire) together: no version, no entries.
                self._install(None, [])
                return
            fetched, entries = await self._read(now)
            self._install(fetched, entries)

    def matches(self, facts: Mapping[str, Any], now: float) -> list[Match]:
        """Synthetic matches of the entries covering this request's ``ip``,
        ``device.key`` and ``account.key`` facts, from the cached entries."""
        return [Match(entry.rule, action=entry.action)
                for entry in self._matcher.find(facts, now)]

    async def refuses(self, ip: str, device_key: str | None, account_key: str | None,
                      now: float) -> Entry | None:
        """The block entry refusing a request of an unscored route, or None.

        Unscored requests have no decision batch to carry the version check, and a
        store round trip on every pass-through request (static files, pages) would
        cost more than the lists are worth there; so the version is re-checked at
        most once per :data:`RECHECK_S` per process, and scored decisions refresh it
        too. When the store cannot answer, the last known entries keep applying: the
        failed check is retried a second later, not on every request.
        """
        if not now - RECHECK_S < self._checked_at <= now:
            self._checked_at = now  # set first: concurrent requests skip the check
            try:
                (version,) = await self.store.apply([self.version_op()], now)
                await self.refresh(version, now)
            except StoreError as exc:
                logger.warning("runtime lists not re-checked, the last known apply: %s", exc)
        facts = {"ip": ip, "device.key": device_key, "account.key": account_key}
        return next((e for e in self._matcher.find(facts, now) if e.action == "block"), None)

    # -- editing --------------------------------------------------------------------

    async def add(self, kind: str, value: str, action: str, ttl_s: float, reason: str,
                  now: float) -> Entry:
        """Add an entry; raise :class:`InputError` naming the field when one is wrong.

        ``value`` is the raw device or account id for those kinds: it is keyed here
        and never stored, logged or echoed.
        """
        entry = self._new_entry(kind, value, action, ttl_s, reason, now)
        _, entries = await self._read(now)
        if len(entries) >= MAX_ENTRIES:
            raise InputError(f"the runtime lists already hold {MAX_ENTRIES} entries; remove "
                             "some, or move long-lived ones to a rule-set list file", None)
        await self._write([*entries, entry], now)
        logger.info("runtime list entry %s added: %s %s %s for %gs: %s", entry.id, entry.action,
                    entry.kind, entry.value, ttl_s, entry.reason)
        return entry

    async def remove(self, entry_id: str, now: float) -> bool:
        """Remove the entry ``entry_id``; False when there is no such live entry."""
        _, entries = await self._read(now)
        kept = [entry for entry in entries if entry.id != entry_id]
        if len(kept) == len(entries):
            return False
        await self._write(kept, now)
        logger.info("runtime list entry %s removed", entry_id)
        return True

    async def entries(self, now: float) -> list[Entry]:
        """The live entries, oldest first."""
        _, entries = await self._read(now)
        return sorted(entries, key=lambda entry: entry.created)

    # -- internals ------------------------------------------------------------------

    def _new_entry(self, kind: str, value: str, action: str, ttl_s: float, reason: str,
                   now: float) -> Entry:
        if kind not in KINDS:
            raise InputError(f"`kind` must be one of {', '.join(KINDS)}", "kind")
        if action not in LIST_ACTIONS:
            raise InputError(f"`action` must be one of {', '.join(LIST_ACTIONS)}", "action")
        if not math.isfinite(ttl_s) or not 0 < ttl_s <= MAX_TTL_S:
            raise InputError(f"`ttl` must be more than 0 and at most {MAX_TTL_S} seconds "
                             "(30 days)", "ttl")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InputError(f"`reason` is required, at most {MAX_REASON} characters: say why, "
                             "for whoever finds the entry later", "reason")
        stored = self._stored_value(kind, value.strip())
        return Entry(os.urandom(6).hex(), kind, stored, action, reason, now, now + ttl_s)

    def _stored_value(self, kind: Kind, value: str) -> str:
        if kind == "ip":
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                raise InputError(f"`value` {value!r} is not an IP address; networks take "
                                 "kind `cidr`", "value") from None
        if kind == "cidr":
            try:
                return str(ipaddress.ip_network(value))
            except ValueError as exc:
                raise InputError(f"`value` is not a network: {exc}", "value") from None
        if not value or len(value) > _MAX_IDENTITY:
            # The value itself is never quoted: it is a raw device or account id.
            raise InputError(f"`value` must be the {kind} id, 1 to {_MAX_IDENTITY} "
                             "characters", "value")
        return self._key(kind, value)  # as the extractor keys device.key/account.key

    async def _read(self, now: float) -> tuple[str | None, list[Entry]]:
        document, version = await self.store.apply([Get(DOCUMENT_KEY), Get(VERSION_KEY)], now)
        if not isinstance(document, str):
            return None, []
        try:
            entries = [Entry.from_json(item) for item in orjson.loads(document)]
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"the runtime list document under {DOCUMENT_KEY} is not one "
                             f"riskgate wrote ({exc}); delete the key to start over") from None
        return (version if isinstance(version, str) else None,
                [entry for entry in entries if entry.expires > now])

    async def _write(self, entries: Sequence[Entry], now: float) -> None:
        live = [entry for entry in entries if entry.expires > now]
        version: str | None = None
        ops: list[Op] = [Delete(DOCUMENT_KEY), Delete(VERSION_KEY)]
        if live:
            # A random version, not a counter: two writers can never produce the same one.
            version = os.urandom(8).hex()
            # Both keys live as long as the last entry: expiry prunes the store itself.
            ttl_ms = max(1, math.ceil((max(e.expires for e in live) - now) * 1000))
            document = orjson.dumps([entry.to_json() for entry in live]).decode()
            ops = [Put(DOCUMENT_KEY, document, ttl_ms), Put(VERSION_KEY, version, ttl_ms)]
        await self.store.apply(ops, now)
        self._install(version, live)  # this process needs no fetch for its own change

    def _install(self, version: str | None, entries: Iterable[Entry]) -> None:
        self._matcher = _Matcher(entries)
        self._version, self._loaded = version, True
