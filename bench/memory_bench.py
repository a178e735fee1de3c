"""Memory bounds (issue 13): Redis bytes per million tracked addresses, and the memory
store's resident size at its cap.

    python bench/memory_bench.py [--addresses 1000000] [--identities 200000]

Drives the real store API with the ops real decisions make: the bundled rules' counters
(planned by the engine's own CounterPlanner from realistic facts) plus the history an
identity leaves (first seen per device, last login per account, 90 days each). Every
address makes one decision; the event mix is 55 % login, 20 % booking, 15 % registration,
10 % promotion. Addresses come four to a /24 (ISP pools, not a scan of one network), and
``--identities`` devices and accounts are shared among them. Decisions are packed
``--pack`` to an ``apply`` and many applies are in flight at once, so a million
addresses take seconds, not the hours of a million HTTP requests.

Then it prints Redis ``used_memory`` per million addresses (target ≤ 150 MB), checks that
every key has a TTL (``INFO keyspace``: keys == expires) and that the longest TTLs of
counter and history pages are what the rules and history ask for, how full the fullest
page is (pages must stay listpacks, see riskgate/store/pages.py), the store script's
Redis CPU per decision (``INFO commandstats``), prices a feedback record (held per
decision for ``feedback_ttl``, so sized by decision rate, not by address), and drives a
``MemoryStore`` past its cap, checking after every call that it holds no more entries
than the cap, and reporting its resident size there.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, redis_server

from riskgate.engine.counters import CounterPlanner
from riskgate.engine.feedback import FeedbackRecord
from riskgate.rules.loader import load_ruleset
from riskgate.rules.model import RuleSet
from riskgate.signals.history import REMEMBER_SECONDS, history_ops
from riskgate.signals.keys import Keyer, ip_prefix
from riskgate.store import MemoryStore, Op, RedisStore, Store

TARGET_MB_PER_MILLION = 150
EVENTS = ("login",) * 11 + ("booking",) * 4 + ("registration",) * 3 + ("promotion",) * 2
NOW = 1_700_000_000.0
SEED = 13
SECRET = b"memory-bench-secret"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=200_000,
                        help="distinct devices, and as many accounts")
    parser.add_argument("--pack", type=int, default=20, help="decisions per store call")
    parser.add_argument("--in-flight", type=int, default=64, help="store calls at once")
    parser.add_argument("--memory-cap", type=int, default=1_000_000,
                        help="the memory store's max_entries (memory_store_max_entries)")
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    args = parser.parse_args(argv)
    if min(args.addresses, args.identities, args.pack, args.in_flight) < 1:
        parser.error("--addresses, --identities, --pack and --in-flight must be positive")
    return args


def decisions(ruleset: RuleSet, addresses: int, identities: int) -> Iterator[list[Op]]:
    """The store ops of one decision per address, as the engine would plan them."""
    rng = random.Random(SEED)
    keyer = Keyer(SECRET)
    planner = CounterPlanner(keyer)
    devices = [keyer("device", f"device-{n}") for n in range(identities)]
    accounts = [keyer("account", f"user{n}@example.com") for n in range(identities)]
    domains = ["gmail.com", "outlook.com", "yahoo.com", "example.org", "web.de"]
    networks = rng.sample(range(1 << 24), addresses // 4 + 1)  # 4 addresses per /24
    for n in range(addresses):
        ip = ipaddress.IPv4Address((networks[n // 4] << 8) | (n % 4 * 50 + 7))
        event = EVENTS[n % len(EVENTS)]
        facts: dict[str, Any] = {
            "ip": str(ip), "ip.prefix": ip_prefix(ip),
            "device.key": devices[rng.randrange(identities)],
            "account.key": accounts[rng.randrange(identities)],
            "account.email_domain": rng.choice(domains),
            "ip.lat": 48.85, "ip.lon": 2.35, "ip.country": "FR",
            "attributes.flight": f"RG{rng.randrange(2000)}",
            "attributes.promo_code": rng.choice(["SPRING", "SUMMER", "WELCOME10"]),
        }
        ops, _, _ = planner.ops_for(ruleset, event, facts)
        ops += [op for _, op in history_ops(event, facts, NOW)]
        yield ops


async def drive(store: Store, ops_per_decision: Iterator[list[Op]], pack: int,
                in_flight: int, check: Any = None) -> int:
    """Apply every decision's ops, ``pack`` decisions per call; the calls made."""
    calls = 0
    pending: set[asyncio.Task[Any]] = set()
    packed: list[Op] = []
    for count, ops in enumerate(ops_per_decision, 1):
        packed += ops
        if count % pack:
            continue
        pending.add(asyncio.create_task(store.apply(packed, NOW)))
        packed, calls = [], calls + 1
        if len(pending) >= in_flight:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if check is not None:
                check()
    if packed:
        pending.add(asyncio.create_task(store.apply(packed, NOW)))
        calls += 1
    for task in pending:
        await task
    if check is not None:
        check()
    return calls


def redis_figures(args: argparse.Namespace, ruleset: RuleSet) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="riskgate-memory-") as tmp, \
            redis_server(Path(tmp)) as redis, redis.client() as client:
        empty = int(client.info("memory")["used_memory"])
        store = RedisStore(redis.url, timeout=30, secret=SECRET)
        started = time.monotonic()

        async def run() -> int:
            try:
                return await drive(store, decisions(ruleset, args.addresses, args.identities),
                                   args.pack, args.in_flight)
            finally:
                await store.close()

        asyncio.run(run())
        seconds = time.monotonic() - started
        memory = client.info("memory")
        used = int(memory["used_memory"]) - empty
        keyspace = client.info("keyspace").get("db0", {"keys": 0, "expires": 0})
        script = client.info("commandstats")["cmdstat_evalsha"]
        # A page is named rg:p:{group}:<generation length>:<generation>; history's
        # generations are twice as long as it is kept. Pages must stay listpacks
        # (riskgate/store/pages.py chose the number of groups for it): the fullest.
        longest = {"counters": 0, "history": 0}
        history = str(2 * REMEMBER_SECONDS * 1000)
        fullest, tables = 0, 0
        limit = client.config_get("hash-max-listpack-entries")["hash-max-listpack-entries"]
        pages = list(client.scan_iter(match="rg:p:*", count=1000))
        for start in range(0, len(pages), 1000):
            pipe = client.pipeline(transaction=False)
            for key in pages[start:start + 1000]:
                pipe.pttl(key).hlen(key).object("encoding", key)
            answers = pipe.execute()
            for n, key in enumerate(pages[start:start + 1000]):
                ttl, fields, encoding = answers[3 * n:3 * n + 3]
                kept = "history" if key.split(":")[3] == history else "counters"
                longest[kept] = max(longest[kept], ttl)
                fullest = max(fullest, fields)
                tables += encoding == "hashtable"  # None: expired meanwhile
        record = FeedbackRecord("login", {
            "login_failures_per_ip": ("rg:c:login_failures_per_ip:{203.0.113.77}", None),
            "login_failures_per_device": ("rg:c:login_failures_per_device:{"
                                          + "f" * 24 + "}", None),
            "login_failures_per_account": ("rg:c:login_failures_per_account:{"
                                           + "e" * 24 + "}", None),
        }).put("0190a1b2c3d4e5f60718293a4b5c6d7e", 900_000)
        before = int(client.info("memory")["used_memory"])
        for n in range(10_000):
            client.set(f"{record.key}{n}", record.value, px=record.ttl_ms)
        per_record = (int(client.info("memory")["used_memory"]) - before) / 10_000
    return {"seconds": seconds, "used": used, "keys": keyspace["keys"],
            "expires": keyspace["expires"], "fragmentation": memory["mem_fragmentation_ratio"],
            "longest_counter_ttl_s": longest["counters"] / 1000,
            "longest_history_ttl_s": longest["history"] / 1000,
            "pages": len(pages), "fullest_page": fullest, "hash_table_pages": tables,
            "listpack_limit": limit,
            "script_us_per_decision": script["usec"] / args.addresses,
            "script_us_per_call": script["usec_per_call"], "bytes_per_feedback_record": per_record}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_store_figures(args: argparse.Namespace, ruleset: RuleSet) -> dict[str, Any]:
    gc.collect()
    before = resident_bytes()
    store = MemoryStore(max_entries=args.memory_cap)
    most = 0

    def check() -> None:
        nonlocal most
        most = max(most, len(store))
        if len(store) > store.max_entries:
            raise BenchError(f"the memory store holds {len(store)} entries, over its cap "
                             f"of {store.max_entries}")

    # Enough decisions to fill the cap one and a half times over (about 10 entries each).
    addresses = max(1000, args.memory_cap * 3 // 20)
    asyncio.run(drive(store, decisions(ruleset, addresses, args.identities), 1, 1, check))
    gc.collect()
    return {"cap": args.memory_cap, "most": most, "decisions": addresses,
            "resident": resident_bytes() - before}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ruleset = load_ruleset(args.rules)
    print(f"memory bench: {args.addresses:,} addresses, {args.identities:,} devices and as "
          f"many accounts, rules {args.rules}", flush=True)
    redis = redis_figures(args, ruleset)
    per_million = redis["used"] / args.addresses * 1_000_000 / 2**20
    expected_ttl = max(c.window_s for c in ruleset.counters.values()) * 1.1
    print(f"Redis: {per_million:.0f} MB used_memory per million addresses "
          f"(target ≤ {TARGET_MB_PER_MILLION} MB: "
          f"{'meets' if per_million <= TARGET_MB_PER_MILLION else 'MISSES'}); "
          f"{redis['keys']:,} keys, {redis['used'] / max(redis['keys'], 1):.0f} B per key, "
          f"fragmentation {redis['fragmentation']}; driven in {redis['seconds']:.0f} s")
    ttl_ok = redis["keys"] == redis["expires"]
    print(f"Redis: keys with a TTL {redis['expires']:,} of {redis['keys']:,} "
          f"({'every key expires' if ttl_ok else 'SOME KEYS NEVER EXPIRE'}); longest counter "
          f"page TTL {redis['longest_counter_ttl_s'] / 86400:.1f} d (rules' longest window "
          f"and a bucket: {expected_ttl / 86400:.1f} d); longest history page TTL "
          f"{redis['longest_history_ttl_s'] / 86400:.1f} d (history kept "
          f"{REMEMBER_SECONDS // 86400} d)")
    print(f"Redis: {redis['pages']:,} pages, the fullest {redis['fullest_page']} fields "
          f"(hash-max-listpack-entries {redis['listpack_limit']}); "
          f"{redis['hash_table_pages']} turned into hash tables")
    print(f"Redis: the script's CPU {redis['script_us_per_decision']:.1f} µs per decision "
          f"({redis['script_us_per_call']:.0f} µs per EVALSHA of {args.pack} decisions, "
          "INFO commandstats)")
    print(f"Redis: a feedback record costs {redis['bytes_per_feedback_record']:.0f} B for "
          f"feedback_ttl (900 s): 1,000 decisions/s hold "
          f"{redis['bytes_per_feedback_record'] * 900_000 / 2**20:.0f} MB")
    memory = memory_store_figures(args, ruleset)
    print(f"memory store: cap {memory['cap']:,} entries, at most {memory['most']:,} held "
          f"over {memory['decisions']:,} decisions; resident "
          f"{memory['resident'] / 2**20:.0f} MB at the cap "
          f"({memory['resident'] / memory['cap']:.0f} B per entry)")
    return 0 if ttl_ok and memory["most"] <= memory["cap"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"memory bench: {exc}", file=sys.stderr)
        sys.exit(2)
