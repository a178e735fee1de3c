"""Median in-process cost of all built-in signals for one request, warm UA cache.

    python bench/signals_bench.py

The mix: real browser header sets and UAs (bots and humans) from ../shared/data,
addresses from MaxMind's test databases (all five configured), the X4BNet datacenter
lists, the disposable-domain list, and a few account shapes. Caches are warmed with one
pass over the mix first, as a running service would be; GeoIP is also timed cold.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness import SHARED_DATA

from riskgate.event.types import RiskEvent
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.geoip import DatacenterLists, GeoIP
from riskgate.signals.identity import DisposableDomains, IdentitySignals
from riskgate.signals.keys import Keyer

MMDB = SHARED_DATA / "maxmind" / "test-data"
DC = SHARED_DATA / "iplists" / "x4bnet-lists_vpn" / "datacenter"
EMAIL = SHARED_DATA / "email" / "disposable-email-domains"


def geoip() -> GeoIP:
    return GeoIP(
        city=MMDB / "GeoIP2-City-Test.mmdb", asn=MMDB / "GeoLite2-ASN-Test.mmdb",
        anonymous_ip=MMDB / "GeoIP2-Anonymous-IP-Test.mmdb", isp=MMDB / "GeoIP2-ISP-Test.mmdb",
        connection_type=MMDB / "GeoIP2-Connection-Type-Test.mmdb",
    )


def workload(rng: random.Random, n: int) -> list[RiskEvent]:
    captures = json.loads((SHARED_DATA / "headers" / "browser_headers.json").read_text())
    header_sets = [{k.lower(): v for k, v in c["headers"]} for c in captures]
    with (SHARED_DATA / "useragents" / "labelled_user_agents.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    bot_uas = [r["user_agent"] for r in rows if r["label"] == "bot"][:200]
    expected = json.loads((SHARED_DATA / "maxmind" / "expected_lookups.json").read_text())
    ips = sorted({c["ip"] for db in expected["databases"].values() for c in db["lookups"]})
    ips += [f"203.0.113.{i}" for i in range(50)]
    accounts = ["alice@gmail.com", "user0042@mailinator.com", "b.o.b+promo@googlemail.com",
                "frequentflyer", "x7f3k9q2@outlook.com", None]
    events = []
    for i in range(n):
        headers = dict(rng.choice(header_sets))
        if rng.random() < 0.3:  # scripted clients: a bot UA and curl-like headers
            headers = {"user-agent": rng.choice(bot_uas), "accept": "*/*"}
        events.append(RiskEvent(
            f"r{i}", rng.choice(["login", "registration", "booking", "promotion"]),
            ipaddress.ip_address(rng.choice(ips)), 0.0, account=rng.choice(accounts),
            device_id=rng.choice([None, "d-7f3a", "d-19bc"]),
            user_agent=headers.get("user-agent"), headers=headers,
            attributes={"seats": 2, "promo_code": "SPRING"},
        ))
    return events


def median_us(fn: Callable[[Any], object], items: Sequence[Any], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        samples.append((time.perf_counter() - start) / len(items) * 1e6)
    return statistics.median(samples)


def main() -> None:
    rng = random.Random(7)
    events = workload(rng, 5000)
    extractor = SignalExtractor(
        Keyer(b"bench"), geoip=geoip(),
        datacenter=DatacenterLists.from_files([DC / "ASN.txt"], [DC / "ipv4.txt", DC / "ipv6.txt"]),
        identity=IdentitySignals(DisposableDomains.from_files(
            EMAIL / "disposable_email_blocklist.conf", EMAIL / "allowlist.conf")),
    )
    for event in events:  # warm the UA and GeoIP caches, as a running service has them
        extractor.facts(event)
    print(f"all signals, warm caches: {median_us(extractor.facts, events):6.1f} µs/request "
          f"(median of 5 passes over {len(events)} requests)")
    addresses = [e.ip for e in events]
    for kind in ("city", "asn", "anonymous_ip", "isp", "connection_type"):
        cold = geoip()
        print(f"GeoIP {kind:15} raw lookup: "
              f"{median_us(lambda a, c=cold, k=kind: c.lookup(k, a), addresses):5.1f} µs")
    cold = geoip()
    first = sorted(set(addresses), key=str)
    print(f"GeoIP all five, first sight of each address: "
          f"{median_us(cold.facts, first, repeat=1):5.1f} µs")


if __name__ == "__main__":
    main()
