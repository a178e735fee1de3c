"""Micro-benchmark: µs per request to evaluate the shipped pack plus 50 generated rules.

    .venv/bin/python bench/rules_bench.py [--rules 50] [--runs 7] [--requests 20000]

Prints the median over several runs of ``RuleSet.evaluate`` plus ``decision.decide``
for one login event with realistic facts and counters (the issue's target: ≤ 20 µs
for the default pack plus 50 extra rules).
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from riskgate.decision.verdict import decide
from riskgate.event.types import RiskEvent
from riskgate.rules.loader import load_ruleset
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer

PACK = Path(__file__).resolve().parents[1] / "rules"

#: One template per kind of rule an analyst writes; ``{n}`` makes each one distinct, so
#: no regex or list test is shared between rules (the generated code shares equal ones).
TEMPLATES = [
    "counters.c{k} > {i}",
    "counters.c{k} / max(counters.c{j}, 1) > 0.{i} and not challenge.passed",
    "ip in lists.bench_networks and counters.c{k} > {i}",
    "account.email_domain in lists.bench_domains or attributes.seats > {i}",
    "matches(device.user_agent, '(?i)bot{n}|crawler{n}')",
    "ip.country in ['RU', 'CN', 'X{n}'] and device.header_count < {i}",
    "startswith(device.user_agent, 'curl/{n}') or contains(lower(device.user_agent), 'x{n}')",
    "cidr(ip, '10.{n}.0.0/16') and counters.c{k} >= 1",
]


def ruleset_yaml(rules: int) -> str:
    counters = "\n".join(f"  c{k}: {{events: [login], key: ip, window: 10m}}" for k in range(8))
    lines = ["counters:", counters,
             "lists:",
             "  bench_networks: {file: bench-networks.txt, type: cidr}",
             "  bench_domains: {file: bench-domains.txt, type: domain}",
             "rules:"]
    for i in range(rules):
        when = TEMPLATES[i % len(TEMPLATES)].format(i=i % 9 + 1, n=i, k=i % 8, j=(i + 3) % 8)
        lines.append(f"  - {{id: bench-r{i}, events: [login], when: \"{when}\", "
                     f"score: {i % 7 + 1}}}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "rules"
        shutil.copytree(PACK, root)
        (root / "bench-networks.txt").write_text(
            "\n".join(f"{a}.{b}.0.0/16" for a in range(11, 60) for b in range(0, 250, 7)))
        (root / "bench-domains.txt").write_text(
            "\n".join(f"spam{i}.example" for i in range(2000)))
        (root / "zz-bench-extra.yaml").write_text(ruleset_yaml(args.rules))
        started = time.perf_counter()
        ruleset = load_ruleset(root)
        load_ms = (time.perf_counter() - started) * 1000
    event = RiskEvent("r1", "login", ipaddress.ip_address("203.0.113.7"), 0.0,
                      account="alice@example.com", device_id="d-1",
                      user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
                      headers={"accept": "text/html", "accept-language": "en"},
                      attributes={"seats": 2})
    facts = SignalExtractor(Keyer(b"bench")).facts(event)
    # Every declared counter has a value, as after a real store round trip.
    counters = {name: float(k % 9) for k, name in enumerate(ruleset.counters)}
    thresholds = ruleset.thresholds_for("login")
    ruleset.evaluate("login", facts, counters)  # compile and warm up
    print(f"{len(ruleset.rules)} rules (the shipped pack and {args.rules} generated), "
          f"loaded and compiled in {load_ms:.1f} ms")
    for label, step in [
        ("evaluate", lambda: ruleset.evaluate("login", facts, counters)),
        ("evaluate + decide", lambda: decide(ruleset.evaluate("login", facts, counters),
                                             thresholds)),
    ]:
        runs = []
        for _ in range(args.runs):
            started = time.perf_counter()
            for _ in range(args.requests):
                step()
            runs.append((time.perf_counter() - started) / args.requests * 1e6)
        print(f"{label}: {statistics.median(runs):.2f} µs/request "
              f"(median of {args.runs} runs of {args.requests}; min {min(runs):.2f})")


if __name__ == "__main__":
    main()
