"""The contract every counter store keeps; a backend ships only when it passes.

Tests taking ``store`` run once per backend (memory, a real Redis, a real 3-primary
Redis Cluster), those taking ``shared_url`` on Redis and the cluster; the rest are about
one backend's own promises (Redis TTLs and failures, the memory cap; the cluster's own
are in tests/test_cluster.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sys
import time
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskgate.errors import StoreError
from riskgate.store import (
    BUCKETS_PER_WINDOW,
    Count,
    Delete,
    Distinct,
    Get,
    MemoryStore,
    Op,
    Put,
    Remember,
    Result,
    Store,
    open_store,
)
from riskgate.store.pages import Pages

if TYPE_CHECKING:
    from support import RedisServer

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # a bucket boundary for every window used below
MINUTE = 60_000


async def one(store: Store, op: Op, now: float) -> Result:
    (result,) = await store.apply([op], now)
    return result


async def totals(store: Store, now: float, key: str, calls: int) -> list[float]:
    """Add one to ``key`` from ``calls`` concurrent applies; their answers, sorted."""
    ops = [Count(key, MINUTE)]
    results = await asyncio.gather(*(store.apply(ops, now) for _ in range(calls)))
    return sorted(float(r[0] or 0) for r in results)


# --- Sliding counts ---------------------------------------------------------------


async def test_count_adds_amounts_and_answers_the_running_total(store: Store) -> None:
    assert await one(store, Count("k", MINUTE), T0) == 1.0
    assert await one(store, Count("k", MINUTE, amount=5), T0 + 1) == 6.0
    assert await one(store, Count("k", MINUTE, amount=0), T0 + 2) == 6.0


async def test_counts_slide_out_gradually_instead_of_resetting_on_a_boundary(
    store: Store,
) -> None:
    # One event per second for ten seconds into a ten-second window of 1 s buckets.
    for second in range(10):
        await store.apply([Count("k", 10_000)], T0 + second)
    read = Count("k", 10_000, amount=0)
    seen = [float(await one(store, read, T0 + 10 + tenth / 10) or 0) for tenth in range(21)]
    assert seen[0] == 10.0  # a full window later the first event is just leaving
    assert seen[5] == pytest.approx(9.5)  # halfway through, half of it is gone
    assert seen[10] == 9.0
    assert seen[20] == 8.0
    assert seen == sorted(seen, reverse=True)
    assert max(a - b for a, b in itertools.pairwise(seen)) <= 0.1 + 1e-9


async def test_a_count_survives_the_minute_boundary(store: Store) -> None:
    await store.apply([Count("k", MINUTE, amount=5)], T0 + 59.9)
    assert await one(store, Count("k", MINUTE, amount=0), T0 + 60.1) == 5.0


async def test_counts_are_forgotten_a_window_and_a_bucket_after_the_last_event(
    store: Store,
) -> None:
    await store.apply([Count("k", 1_000, amount=3)], T0)
    assert await one(store, Count("k", 1_000, amount=0), T0 + 1.05) == pytest.approx(1.5)
    assert await one(store, Count("k", 1_000, amount=0), T0 + 1.1) == 0.0


async def test_windows_and_keys_count_separately(store: Store) -> None:
    await store.apply([Count("k", MINUTE), Count("k", 10_000), Count("k", 10_000)], T0)
    results = await store.apply(
        [Count("k", MINUTE, amount=0), Count("k", 10_000, amount=0), Count("j", MINUTE, 0)],
        T0,
    )
    assert results == [1.0, 2.0, 0.0]


async def test_keys_sharing_a_hash_tag_count_separately(store: Store) -> None:
    # Redis keeps them in one hash; where the tag sits is part of the counter's name.
    ops: list[Op] = [Count("a{x}b", MINUTE), Count("ab{x}", MINUTE, amount=2),
                     Count("{x}", MINUTE, amount=3), Count("x", MINUTE, amount=4)]
    assert await store.apply(ops, T0) == [1.0, 2.0, 3.0, 4.0]
    reads: list[Op] = [dataclasses.replace(op, amount=0) for op in ops if isinstance(op, Count)]
    assert await store.apply(reads, T0 + 1) == [1.0, 2.0, 3.0, 4.0]


async def test_read_only_ops_change_nothing(store: Store) -> None:
    await store.apply([Count("k", MINUTE, amount=2), Distinct("d", MINUTE, "a")], T0)
    reads: list[Op] = [Count("k", MINUTE, 0), Distinct("d", MINUTE, None), Get("nothing")]
    for _ in range(3):
        assert await store.apply(reads, T0 + 1) == [2.0, 1.0, None]
    assert await store.apply([Count("new", MINUTE, 0), Distinct("new", MINUTE, None)], T0) == [
        0.0,
        0.0,
    ]


async def test_concurrent_applies_each_see_a_distinct_total(store: Store) -> None:
    assert await totals(store, T0, "k", 100) == [float(n) for n in range(1, 101)]


# --- Distinct counts ----------------------------------------------------------------


async def test_distinct_counts_members_once_each(store: Store) -> None:
    for member in ["a", "b", "a", "c", "b"]:
        await store.apply([Distinct("d", MINUTE, member)], T0)
    assert await one(store, Distinct("d", MINUTE, None), T0) == 3.0


async def test_distinct_counts_of_a_thousand_are_within_hyperloglog_error(store: Store) -> None:
    for start in range(0, 1000, 100):
        ops: list[Op] = [Distinct("d", MINUTE, f"acct-{n}") for n in range(start, start + 100)]
        await store.apply(ops, T0 + start / 1000)
    estimate = await one(store, Distinct("d", MINUTE, None), T0 + 1)
    assert estimate == pytest.approx(1000, rel=0.02)


async def test_distinct_members_age_out_of_the_window(store: Store) -> None:
    await store.apply([Distinct("d", 10_000, "old")], T0)
    await store.apply([Distinct("d", 10_000, "new")], T0 + 5)
    assert await one(store, Distinct("d", 10_000, None), T0 + 10.5) == 2.0
    assert await one(store, Distinct("d", 10_000, None), T0 + 11) == 1.0
    assert await one(store, Distinct("d", 10_000, None), T0 + 16) == 0.0


async def test_a_distinct_set_that_grows_large_stays_within_a_few_percent(
    store: Store,
) -> None:
    read = Distinct("d", MINUTE, None)
    # Small sets are exact (Redis keeps them as member digests)...
    for n in range(1, 12):
        await store.apply([Distinct("d", MINUTE, f"acct-{n}")], T0)
        assert await one(store, read, T0) == n
    # ... and large ones an estimate (Redis moves them to HyperLogLog) that keeps
    # counting the members it saw while small.
    for start in range(12, 3_000, 300):
        await store.apply([Distinct("d", MINUTE, f"acct-{n}")
                           for n in range(start, min(start + 300, 3_000))], T0 + 1)
    grown = await one(store, read, T0 + 2)
    assert grown == pytest.approx(2_999, rel=0.02)
    await store.apply([Distinct("d", MINUTE, f"acct-{n}") for n in range(1, 12)], T0 + 3)
    assert await one(store, read, T0 + 3) == grown
    # Once every member has left the window the set starts small and exact again.
    assert await one(store, read, T0 + 67) == 0.0
    await store.apply([Distinct("d", MINUTE, "late-1"), Distinct("d", MINUTE, "late-2")],
                      T0 + 67)
    assert await one(store, read, T0 + 67) == 2.0


async def test_short_windows_expire_beside_long_ones_of_the_same_identity(
    store: Store,
) -> None:
    # The engine keys every counter of one address by the same hash tag.
    short, long = Count("rg:c:burst:{ip}", 1_000), Count("rg:c:hourly:{ip}", 3_600_000)
    seen = Distinct("rg:c:seen:{ip}", 1_000, "acct")
    await store.apply([short, short, long, seen], T0)
    later: list[Op] = [Count(short.key, 1_000, 0), Count(long.key, 3_600_000, 0),
                       Distinct(seen.key, 1_000, None)]
    assert await store.apply(later, T0 + 0.5) == [2.0, 1.0, 1.0]
    assert await store.apply(later, T0 + 1.2) == [0.0, 1.0, 0.0]
    # Written again, the short ones start afresh rather than from stale buckets.
    assert await store.apply([short, seen], T0 + 1.3) == [1.0, 1.0]
    assert await store.apply(later, T0 + 1.3) == [1.0, 1.0, 1.0]


async def test_a_bucket_count_saturates_instead_of_wrapping(store: Store) -> None:
    huge = 2**31 - 1
    assert await one(store, Count("k", MINUTE, amount=huge), T0) == huge
    assert await one(store, Count("k", MINUTE, amount=5), T0) == huge
    assert await one(store, Count("k", MINUTE, amount=-(2**40)), T0 + 10) == huge - 2**31


# --- Values ---------------------------------------------------------------------------


async def test_put_answers_the_previous_value(store: Store) -> None:
    assert await one(store, Put("v", "1", MINUTE), T0) is None
    assert await one(store, Put("v", "2", MINUTE), T0) == "1"
    assert await one(store, Get("v"), T0) == "2"


async def test_put_only_if_absent_keeps_the_first_value(store: Store) -> None:
    first_seen = [Put("first", str(n), MINUTE, only_if_absent=True) for n in range(3)]
    assert await store.apply(first_seen, T0) == [None, "0", "0"]
    assert await one(store, Get("first"), T0) == "0"


async def test_delete_is_single_use(store: Store) -> None:
    await store.apply([Put("token", "t-1", MINUTE)], T0)
    assert await one(store, Delete("token"), T0) == "t-1"
    assert await one(store, Delete("token"), T0) is None
    assert await one(store, Get("token"), T0) is None


async def test_remember_answers_the_previous_value_and_only_if_absent_keeps_the_first(
    store: Store,
) -> None:
    first_seen = [Remember("rg:fs:{d-1}", str(n), MINUTE, only_if_absent=True) for n in range(3)]
    assert await store.apply(first_seen, T0) == [None, "0", "0"]
    last_login = [Remember("rg:ll:{a-1}", place, MINUTE) for place in ("paris", "rome")]
    assert await store.apply(last_login, T0 + 1) == [None, "paris"]
    assert await one(store, Remember("rg:ll:{a-1}", "oslo", MINUTE), T0 + 2) == "rome"


async def test_remembered_values_are_apart_from_plain_values_and_other_ttls(
    store: Store,
) -> None:
    ops: list[Op] = [Put("k", "put", MINUTE), Remember("k", "minute", MINUTE),
                     Remember("k", "hour", 60 * MINUTE)]
    assert await store.apply(ops, T0) == [None, None, None]
    again: list[Op] = [Get("k"), Remember("k", "-", MINUTE), Remember("k", "-", 60 * MINUTE)]
    assert await store.apply(again, T0 + 1) == ["put", "minute", "hour"]


async def test_a_remembered_value_lives_exactly_its_ttl_by_the_event_clock(
    store: Store,
) -> None:
    # Kept in Redis beside other identities' values, it carries its own expiry.
    hour = 60 * MINUTE
    await store.apply([Remember("rg:ll:{a-1}", "paris", hour)], T0)
    later = Remember("rg:ll:{a-1}", "rome", hour, only_if_absent=True)
    assert await one(store, later, T0 + 3599.999) == "paris"
    assert await one(store, later, T0 + 3600) is None
    # Rewritten half an hour later, it lives an hour from then, into the next generation.
    assert await one(store, Remember("rg:ll:{a-1}", "oslo", hour), T0 + 5400) == "rome"
    assert await one(store, Remember("rg:ll:{a-1}", "-", hour), T0 + 8999.999) == "oslo"
    assert await one(store, Remember("rg:ll:{a-1}", "-", hour), T0 + 12_600) is None


async def test_values_vanish_after_their_ttl(store: Store) -> None:
    # Real time on both sides: Redis expires keys by its own clock.
    await store.apply([Put("v", "x", 100), Put("w", "y", 100)], time.time())
    assert await one(store, Get("v"), time.time()) == "x"
    await anyio.sleep(0.15)
    assert await store.apply([Get("v"), Delete("w")], time.time()) == [None, None]
    assert await one(store, Put("v", "z", 100, only_if_absent=True), time.time()) is None


async def test_results_come_back_in_op_order_for_mixed_batches(store: Store) -> None:
    ops: list[Op] = [
        Put("v", "a", MINUTE),
        Count("c", MINUTE, amount=4),
        Get("v"),
        Distinct("d", MINUTE, "m"),
        Put("v", "b", MINUTE),
        Count("c", MINUTE, amount=0),
        Delete("v"),
        Get("v"),
        Distinct("d", MINUTE, None),
    ]
    assert await store.apply(ops, T0) == [None, 4.0, "a", 1.0, "a", 4.0, "b", None, 1.0]
    assert await store.apply([], T0) == []


async def test_counts_values_and_distinct_sets_under_one_key_do_not_collide(
    store: Store,
) -> None:
    ops: list[Op] = [Put("k", "v", MINUTE), Count("k", MINUTE), Distinct("k", MINUTE, "m")]
    assert await store.apply(ops, T0) == [None, 1.0, 1.0]
    assert await one(store, Get("k"), T0) == "v"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 2_500),  # ms to advance before the batch
            st.lists(
                st.one_of(
                    st.builds(Count, st.sampled_from("ab"), st.sampled_from([1_000, 5_000]),
                              st.integers(0, 3)),
                    st.builds(Distinct, st.sampled_from("ab"), st.sampled_from([1_000, 5_000]),
                              st.one_of(st.none(), st.sampled_from("wxyz"))),
                    st.builds(Put, st.sampled_from("ab"), st.sampled_from("pq"),
                              st.just(3_600_000), st.booleans()),
                    st.builds(Remember, st.sampled_from("ab"), st.sampled_from("pq"),
                              st.sampled_from([2_000, 3_600_000]), st.booleans()),
                    st.builds(Get, st.sampled_from("ab")),
                    st.builds(Delete, st.sampled_from("ab")),
                ),
                min_size=1, max_size=4,
            ),
        ),
        min_size=1, max_size=25,
    ),
    start=st.floats(T0, T0 + 10, allow_nan=False),
)  # fmt: skip
async def test_memory_and_redis_agree_on_any_sequence_of_ops(
    shared_url: str, steps: list[tuple[int, list[Op]]], start: float
) -> None:
    # Fresh keys per example instead of a flush: the Redis store outlives examples.
    prefix = uuid.uuid4().hex
    memory, shared = MemoryStore(), open_store(shared_url)
    try:
        now = start
        for advance_ms, ops in steps:
            now += advance_ms / 1000
            ops = [dataclasses.replace(op, key=prefix + op.key) for op in ops]
            assert await memory.apply(ops, now) == await shared.apply(ops, now), ops
    finally:
        await shared.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(st.tuples(st.floats(-0.5, 0.5), st.integers(-2, 3)), min_size=1, max_size=30),
    window_ms=st.sampled_from([1_000, 2_500, 10_000]),
)
async def test_memory_and_redis_agree_on_counts_when_events_arrive_late(
    shared_url: str, events: list[tuple[float, int]], window_ms: int
) -> None:
    # Clocks of different gateways disagree, so a counter can see time step back;
    # both stores agree while the steps back stay under a window.
    key = uuid.uuid4().hex
    memory, shared = MemoryStore(), open_store(shared_url)
    try:
        for step, (skew, amount) in enumerate(events):
            now = T0 + step * 0.7 + skew * window_ms / 1000
            ops = [Count(key, window_ms, amount), Count(key, window_ms, 0)]
            assert await memory.apply(ops, now) == await shared.apply(ops, now)
    finally:
        await shared.close()


# --- Redis: shared, bounded, one command per decision, failures wrapped --------------


CHILD = """
import asyncio, sys
from riskgate.store import Count, open_store

async def main(url, adds, now):
    store = open_store(url)
    try:
        for _ in range(adds):
            (total,) = await store.apply([Count("shared", 60_000)], now)
        print(total)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


async def test_two_gateway_processes_sharing_one_redis_see_each_others_counts(
    redis_url: str,
) -> None:
    store = open_store(redis_url)
    try:
        await store.apply([Count("shared", MINUTE, amount=3)], T0)
        child = await anyio.run_process([sys.executable, "-c", CHILD, redis_url, "2", str(T0)])
        assert child.stdout.decode().strip() == "5.0"
        assert await one(store, Count("shared", MINUTE, amount=0), T0) == 5.0
    finally:
        await store.close()


async def test_every_key_in_redis_expires_once_its_window_and_a_bucket_have_passed(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = open_store(redis_url)
    try:
        await store.apply(
            [
                Count("c", MINUTE),
                Count("c", 10_000, amount=2),
                Distinct("d", MINUTE, "m"),
                Remember("r", "x", 5_000),
                Put("v", "x", 5_000),
                Put("w", "y", 5_000, only_if_absent=True),
            ],
            T0,
        )
        await store.apply(
            [Count("c", MINUTE, amount=-1)], T0 + 30
        )  # a negative amount creates a field too
    finally:
        await store.close()
    with redis_server.client() as client:
        ttls = {key: client.pttl(key) for key in client.scan_iter()}
    pages = {key: ttl for key, ttl in ttls.items() if key.startswith("rg:p:")}
    assert set(ttls) - set(pages) == {"v", "w"}
    assert 0 < ttls["v"] <= 5_000 and 0 < ttls["w"] <= 5_000
    # Counters live in pages of generations two windows long, remembered values in
    # pages of twice their time to live. A page lives until its newest bucket leaves
    # the window (its newest value expires), and a bucket (a twentieth) more when it is
    # extended.
    lengths = {key: int(key.split(":")[3]) for key in pages}
    assert sorted(set(lengths.values())) == [10_000, 20_000, 120_000]
    for key, ttl in pages.items():
        bucket = lengths[key] // (2 * BUCKETS_PER_WINDOW)
        longest = 5_000 * 21 // 20 if lengths[key] == 10_000 else (BUCKETS_PER_WINDOW + 2) * bucket
        assert 0 < ttl <= longest, (key, ttl)


async def test_a_page_holds_a_field_in_a_few_bytes(
    redis_server: RedisServer, redis_url: str
) -> None:
    # A hundred counters of one address share its group, hence one page per window.
    ops: list[Op] = [Count(f"rg:c:counter_{n}:{{198.51.100.7}}", 3_600_000) for n in range(100)]
    store = open_store(redis_url)
    try:
        assert await store.apply(ops, T0) == [1.0] * 100
    finally:
        await store.close()
    with redis_server.client() as client:
        (page,) = client.scan_iter()
        assert client.object("encoding", page) == "listpack"
        assert client.hlen(page) == 100
        # A 6-byte name and a 2-byte count, framing and the page's own key included.
        assert client.memory_usage(page) / 100 < 16


async def test_a_counter_moves_to_the_generation_of_its_newest_bucket_and_exists_once(
    redis_server: RedisServer, redis_url: str
) -> None:
    # T0 starts a generation of the 10-second window's pages (20 one-second buckets).
    count = Count("rg:c:attempts:{198.51.100.9}", 10_000)
    store = open_store(redis_url)
    try:
        assert await store.apply([count], T0 - 3) == [1.0]
        assert await store.apply([count], T0 + 4) == [2.0]
        # A gateway whose clock lags finds it in the later generation too.
        assert await store.apply([dataclasses.replace(count, amount=0)], T0 - 1) == [1.0]
    finally:
        await store.close()
    with redis_server.client() as client:
        fields = {key: client.hlen(key) for key in client.scan_iter(match="rg:p:*")}
    # Each write looks in its generation and the next (T0 - 3) or the one before (T0 + 4).
    pages = Pages(b"")
    _, before = pages.pages(count, int(T0 * 1000) - 3000)
    after, _ = pages.pages(count, int(T0 * 1000) + 4000)
    assert before != after
    assert fields == {after: 1}


async def test_an_identity_is_a_few_fields_of_shared_pages_and_a_crowded_set_stays_bounded(
    redis_server: RedisServer, redis_url: str
) -> None:
    # Every counter of one address, as the engine keys them, and its history.
    ip = "{203.0.113.9}"
    ops: list[Op] = [Count(f"rg:c:attempts:{ip}", 3_600_000),
                     Count(f"rg:c:holds:{ip}", 86_400_000),
                     Distinct(f"rg:c:accounts:{ip}", 600_000, "acct-1"),
                     Distinct(f"rg:c:devices:{ip}", 600_000, "dev-1"),
                     Remember(f"rg:fs:{ip}", "1700000000.0", 7_776_000_000)]
    # ... and a NAT address that sees thousands of accounts in one window.
    nat = "{198.51.100.1}"
    crowd: list[Op] = [Distinct(f"rg:c:accounts:{nat}", 600_000, f"acct-{n}")
                       for n in range(5_000)]
    store = open_store(redis_url)
    try:
        await store.apply(ops, T0)
        for start in range(0, len(crowd), 500):
            await store.apply(crowd[start:start + 500], T0 + start / 100)
        estimate = await one(store, Distinct(f"rg:c:accounts:{nat}", 600_000, None), T0 + 50)
    finally:
        await store.close()
    assert estimate == pytest.approx(5_000, rel=0.02)
    pages = Pages(b"")
    with redis_server.client() as client:
        # One page per window (and one for the history) in the address's group, each a
        # listpack, no key of the address's own: no address in a key name either.
        own = sorted(client.scan_iter(match=f"{pages.slot_key(ops[0])}*"))
        assert len(own) == 4
        assert all(client.object("encoding", key) == "listpack" for key in own)
        assert not any("203.0.113.9" in key for key in client.scan_iter())
    with redis.Redis(port=redis_server.port) as raw:  # fields and values are bytes
        # Counts after one event take 2 bytes, sets of one member 6, a first sighting
        # its expiry and its value.
        assert sorted(len(value) for key in own for value in raw.hvals(key)) == [2, 2, 6, 6, 18]
    with redis_server.client() as client:
        group = pages.slot_key(crowd[0]).split(":")[2]  # rg:p:{group}:
        hlls = list(client.scan_iter(match=f"rg:h:{group}:*"))
        assert 1 < len(hlls) <= BUCKETS_PER_WINDOW + 1  # a HyperLogLog per bucket
        assert sum(client.memory_usage(k) for k in hlls) < 13_000 * len(hlls)
        assert all(0 < client.pttl(k) <= 660_000 for k in hlls)


async def test_each_apply_is_exactly_one_evalsha_even_when_batched(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = open_store(redis_url)
    try:
        await one(store, Count("warm", MINUTE), T0)  # loads the script
        before = _evalsha_calls(redis_server)
        ops: list[Op] = [Count("c", MINUTE), Distinct("d", MINUTE, "m"), Get("v")]
        await asyncio.gather(*(store.apply(ops, T0) for _ in range(200)))
        assert _evalsha_calls(redis_server) - before == 200
    finally:
        await store.close()


def _evalsha_calls(server: RedisServer) -> int:
    with server.client() as client:
        calls: int = client.info("commandstats")["cmdstat_evalsha"]["calls"]
        return calls


async def test_a_failing_batch_member_fails_only_its_own_caller(
    redis_server: RedisServer, redis_url: str
) -> None:
    with redis_server.client() as client:
        client.rpush("a-list", "x")
    store = open_store(redis_url)
    try:
        results = await asyncio.gather(
            store.apply([Count("c", MINUTE)], T0),
            store.apply([Get("a-list")], T0),
            store.apply([Count("c", MINUTE)], T0),
            return_exceptions=True,
        )
    finally:
        await store.close()
    assert results[0] == [1.0] and results[2] == [2.0]
    assert isinstance(results[1], StoreError)
    assert "WRONGTYPE" in str(results[1])


async def test_script_flush_is_survived_transparently(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = open_store(redis_url)
    try:
        await one(store, Count("c", MINUTE), T0)
        with redis_server.client() as client:
            client.script_flush()
        assert await totals(store, T0, "c", 20) == [float(n) for n in range(2, 22)]
    finally:
        await store.close()


async def test_a_stopped_redis_gives_store_errors_and_the_store_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = open_store(redis_url)
    try:
        await one(store, Count("c", MINUTE), T0)
        with redis_server.stopped():
            with pytest.raises(StoreError, match=r"counter store redis://127\.0\.0\.1:\d+/0: "):
                await store.apply([Count("c", MINUTE)], T0)
            with pytest.raises(StoreError, match="PING failed"):
                await store.health()
        # A restarted Redis is empty and has no scripts loaded.
        await store.health()
        assert await one(store, Count("c", MINUTE), T0) == 1.0
    finally:
        await store.close()


async def test_a_hung_redis_times_out_instead_of_hanging_the_request(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = open_store(redis_url, timeout=0.2)
    try:
        await one(store, Count("c", MINUTE), T0)
        with redis_server.paused():
            started = time.monotonic()
            with pytest.raises(StoreError, match="Timeout"):
                await store.apply([Count("c", MINUTE)], T0)
            assert time.monotonic() - started < 1.0
        # A timeout is no rollback: the increment already sent may still land.
        assert await one(store, Count("c", MINUTE), T0) in (2.0, 3.0)
    finally:
        await store.close()


async def test_store_errors_never_show_the_password(redis_server: RedisServer) -> None:
    store = open_store(f"redis://nobody:hunter2@127.0.0.1:{redis_server.port}/0")
    try:
        with pytest.raises(StoreError) as caught:
            await store.apply([Count("c", MINUTE)], T0)
    finally:
        await store.close()
    assert "hunter2" not in str(caught.value)
    assert f"redis://nobody:***@127.0.0.1:{redis_server.port}/0" in str(caught.value)


async def test_a_unix_socket_url_reaches_the_same_redis(
    redis_server: RedisServer, redis_url: str
) -> None:
    over_tcp, over_socket = open_store(redis_url), open_store(f"unix://{redis_server.unix_socket}")
    try:
        await over_tcp.apply([Count("c", MINUTE, amount=2)], T0)
        assert await one(over_socket, Count("c", MINUTE), T0) == 3.0
    finally:
        await over_tcp.close()
        await over_socket.close()


# --- Memory: bounded ------------------------------------------------------------------


async def test_the_memory_cap_holds_under_a_flood_of_distinct_keys() -> None:
    store = MemoryStore(max_entries=500)
    for n in range(20_000):
        await store.apply([Count(f"ip:{n}", MINUTE)], T0 + n / 1000)
        assert len(store) <= 500
    now = T0 + 20
    recent = [Count(f"ip:{n}", MINUTE, amount=0) for n in range(19_900, 20_000)]
    assert await store.apply(recent, now) == [1.0] * 100
    assert await one(store, Count("ip:0", MINUTE, amount=0), now) == 0.0


async def test_a_flood_of_members_in_one_distinct_set_cannot_push_out_other_keys() -> None:
    store = MemoryStore(max_entries=100)
    await store.apply([Count("hot", MINUTE)], T0)
    for n in range(1_000):
        await store.apply([Distinct("accounts", MINUTE, f"a{n}"), Count("hot", MINUTE)], T0)
        assert len(store) <= 100
    assert await store.apply([Count("hot", MINUTE, amount=0)], T0) == [1001.0]
    # The set keeps a tenth of the cap: its count saturates there.
    assert await one(store, Distinct("accounts", MINUTE, None), T0) == 10.0


async def test_expired_memory_entries_free_their_room() -> None:
    store = MemoryStore()
    await store.apply([Put("v", "x", 1_000), Count("c", 1_000), Distinct("d", 1_000, "m")], T0)
    assert len(store) == 4
    reads: list[Op] = [Get("v"), Count("c", 1_000, 0), Distinct("d", 1_000, None)]
    assert await store.apply(reads, T0 + 5) == [None, 0.0, 0.0]
    assert len(store) == 0


# --- Choosing a store ------------------------------------------------------------------


def test_a_cluster_url_opens_a_cluster_store_that_hides_the_password() -> None:
    store = open_store("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert repr(store) == "ClusterStore('redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001')"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis+cluster://h:7000/2", "a Redis Cluster has only database 0; drop `/2`"),
        ("memcached://:pw@h", "store memcached:// is not supported; use memory://, redis://"),
        ("127.0.0.1:6379", "store '127.0.0.1:6379' names no scheme; use memory://"),
    ],
)
def test_unsupported_store_uris_say_what_is_supported(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        open_store(uri)
