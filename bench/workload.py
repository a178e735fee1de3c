"""The ``/v1/decide`` bodies the benchmark sends: varied enough that counters do real work.

A fixed seed makes every run send the same bodies in the same order, so runs compare.
The mix imitates a busy airline site: mostly logins and bookings, a few thousand client
IPs (some crowded into the same /24 as a bot farm would be), accounts, devices and user
agents drawn from pools so per-IP, per-account and distinct counters all see both repeats
and new values.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240601
EVENT_WEIGHTS = {"login": 45, "booking": 25, "registration": 15, "promotion": 15}

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
]
LANGUAGES = ["en-GB,en;q=0.9", "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.5", "fr-FR,fr;q=0.9",
             "zh-CN,zh;q=0.9", "es-ES,es;q=0.9"]
SEC_CH_UA = ['"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
             '"Chromium";v="124", "Not-A.Brand";v="99"']
DOMAINS = ["example.com", "example.org", "mail.example.net", "inbox.example", "tempmail.example"]
PROMO_CODES = ["SPRING", "SUMMER24", "WELCOME10", "FLYMORE", "STUDENT"]
FLIGHTS = [f"CA{n}" for n in range(1000, 1060)]


def _ips(rng: random.Random, count: int) -> list[str]:
    # Three quarters scattered over the documentation ranges' neighbours, a quarter packed
    # into a few /24s (a proxy farm), plus a handful of IPv6 clients.
    ips: set[str] = set()
    while len(ips) < count * 3 // 4:
        ips.add(f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                f"{rng.randint(1, 254)}")
    farms = [f"203.0.{n}" for n in range(113, 121)]
    while len(ips) < count * 19 // 20:
        ips.add(f"{rng.choice(farms)}.{rng.randint(1, 254)}")
    while len(ips) < count:
        ips.add(f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}")
    return sorted(ips)


def bodies(count: int = 20000, seed: int = SEED) -> list[str]:
    """``count`` JSON bodies for ``POST /v1/decide``, the same for the same seed."""
    rng = random.Random(seed)
    ips = _ips(rng, 3000)
    accounts = [f"user{n}@{rng.choice(DOMAINS)}" for n in range(6000)]
    devices = [f"d-{rng.getrandbits(40):010x}" for _ in range(4000)]
    events = list(EVENT_WEIGHTS)
    weights = list(EVENT_WEIGHTS.values())
    out = []
    for _ in range(count):
        event = rng.choices(events, weights)[0]
        # Skewed choice (a few hot IPs, as attackers are) without ever dominating the run.
        ip = ips[min(int(rng.paretovariate(1.2)) - 1, len(ips) - 1)] if rng.random() < 0.2 \
            else rng.choice(ips)
        body: dict[str, object] = {"event": event, "ip": ip}
        if rng.random() < 0.9:
            body["account"] = rng.choice(accounts)
        if rng.random() < 0.8:
            body["device_id"] = rng.choice(devices)
        user_agent = rng.choice(USER_AGENTS)
        body["user_agent"] = user_agent
        headers = {"accept-language": rng.choice(LANGUAGES), "accept": "application/json"}
        if "Chrome" in user_agent:
            headers["sec-ch-ua"] = rng.choice(SEC_CH_UA)
        body["headers"] = headers
        attributes: dict[str, object] = {}
        if event == "registration":
            attributes["email"] = body.get("account") or rng.choice(accounts)
        elif event == "promotion":
            attributes["promo_code"] = rng.choice(PROMO_CODES)
        elif event == "booking":
            attributes["flight"] = rng.choice(FLIGHTS)
            attributes["seats"] = rng.choice([1, 1, 1, 2, 2, 3, 4, 9])
        if attributes:
            body["attributes"] = attributes
        out.append(json.dumps(body, separators=(",", ":")))
    return out


def write_bodies(path: Path, count: int = 20000, seed: int = SEED) -> list[str]:
    """Write one body per line (what bench/decide.lua reads) and return them."""
    lines = bodies(count, seed)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return lines
