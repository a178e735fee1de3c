"""The request mix of the proxy benchmark: whole HTTP requests for bench/proxy.lua.

A busy airline site as a browser sees it: mostly scored POSTs (logins and seat holds)
plus unscored page loads, from a pool of clients that each keep one address, device,
account and browser, so per-IP, per-device and per-account counters see repeats the way
real traffic makes them, not a new stranger on every request nor one IP for everyone.

Every request reaches the bench from 127.0.0.1, so each carries the client's address in
``X-Forwarded-For`` and the gateway trusts 127.0.0.1/32 for it (CONTRACT §3: the client
IP is then the right-most untrusted hop). Browsers send the headers their engine always
sends, consistent with their User-Agent and client hints, because the shipped rules
(rules/common.yaml) add risk for missing or mismatched ones: the mix is meant to be
mostly ``allow``, so that the gateway does its whole job (score, then forward) on most
requests. A small share of self-declared scripts is challenged, as on any real site.

Fixed seed: every run sends the same requests in the same order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20240602
#: Share of each kind of request. GET / is forwarded unscored (no route matches it).
MIX = {"login": 40, "booking": 25, "page": 35}
#: Share of requests from scripts (bot user agents): challenged by the shipped rules.
SCRIPT_SHARE = 0.02
#: Share of logins with a wrong password: the upstream answers 401, which the gateway
#: counts as a failed login (failure_statuses), an extra store write on that path.
WRONG_PASSWORD_SHARE = 0.03
FLIGHTS = [f"CA{n}" for n in range(1000, 1060)]
DOMAINS = ["example.com", "example.org", "mail.example.net", "inbox.example"]
LANGUAGES = ["en-GB,en;q=0.9", "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.5",
             "fr-FR,fr;q=0.9,en;q=0.5", "zh-CN,zh;q=0.9", "es-ES,es;q=0.9"]

_CHROME_HINTS = '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'


@dataclass(frozen=True)
class Browser:
    user_agent: str
    #: Client hints the browser sends (Chromium only); must agree with the UA.
    hints: tuple[tuple[str, str], ...] = ()
    accept_encoding: str = "gzip, deflate, br"


BROWSERS = [
    Browser("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
            (("sec-ch-ua", _CHROME_HINTS), ("sec-ch-ua-mobile", "?0"),
             ("sec-ch-ua-platform", '"Windows"')), "gzip, deflate, br, zstd"),
    Browser("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Mobile Safari/537.36",
            (("sec-ch-ua", _CHROME_HINTS), ("sec-ch-ua-mobile", "?1"),
             ("sec-ch-ua-platform", '"Android"')), "gzip, deflate, br, zstd"),
    Browser("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    Browser("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"),
    Browser("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
]
#: Browser weights: roughly a travel site's audience.
BROWSER_WEIGHTS = [40, 25, 8, 12, 15]
SCRIPT_AGENTS = ["python-requests/2.31.0", "curl/8.5.0", "Go-http-client/1.1"]


@dataclass(frozen=True)
class Client:
    ip: str
    device: str | None
    account: str
    browser: Browser | None  # None: a script
    language: str


def _clients(rng: random.Random, count: int) -> list[Client]:
    # Most clients have an address of their own; one in ten sits behind a shared
    # address (an office or carrier NAT) with a few others, each on its own device, so
    # the "many accounts from one address" rules see the benign crowd they allow.
    shared = [f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
              f"{rng.randint(1, 254)}" for _ in range(max(count // 60, 1))]
    clients = []
    for n in range(count):
        if rng.random() < 0.1:
            ip = rng.choice(shared)
        elif rng.random() < 0.05:
            ip = f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}"
        else:
            # 11-223 avoids 0/8, 10/8, loopback and multicast; the list the rules block
            # (192.0.2.64/26, TEST-NET-1) is never drawn: 192.0.2 needs an exact hit.
            ip = (f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                  f"{rng.randint(1, 254)}")
        script = rng.random() < SCRIPT_SHARE
        clients.append(Client(
            ip=ip,
            # Apps and returning browsers send a device id; scripts and some browsers not.
            device=None if script or rng.random() < 0.15 else f"d-{rng.getrandbits(48):012x}",
            account=f"user{n}@{rng.choice(DOMAINS)}",
            browser=None if script else rng.choices(BROWSERS, BROWSER_WEIGHTS)[0],
            language=rng.choice(LANGUAGES)))
    return clients


def _headers(client: Client, kind: str, rng: random.Random) -> list[tuple[str, str]]:
    headers = [("X-Forwarded-For", client.ip)]
    if client.browser is None:
        headers += [("User-Agent", rng.choice(SCRIPT_AGENTS)), ("Accept", "*/*")]
    else:
        page = kind == "page"
        headers += [
            ("User-Agent", client.browser.user_agent),
            ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
             if page else "application/json"),
            ("Accept-Language", client.language),
            ("Accept-Encoding", client.browser.accept_encoding),
            # Sec-Fetch-* as a browser sets them: a navigation for the page, a
            # same-origin fetch() for the API calls.
            ("Sec-Fetch-Site", "none" if page else "same-origin"),
            ("Sec-Fetch-Mode", "navigate" if page else "cors"),
            ("Sec-Fetch-Dest", "document" if page else "empty"),
            *client.browser.hints,
        ]
    if client.device is not None:
        headers.append(("X-Device-Id", client.device))
    if kind == "booking":
        headers.append(("X-Account-Id", client.account))
    if kind != "page":
        headers.append(("Content-Type", "application/json"))
    return headers


def requests(count: int = 30000, clients: int = 8000, seed: int = SEED,
             ) -> list[tuple[str, str, list[tuple[str, str]], str]]:
    """``count`` requests as ``(method, path, headers, body)``, the same for the same seed.

    Clients are drawn uniformly: with the defaults each appears about four times, one
    seat hold on average, well under the booking rules' per-account and per-device
    limits, so the decisions stay mostly ``allow`` over a run.
    """
    rng = random.Random(seed)
    pool = _clients(rng, clients)
    kinds = list(MIX)
    weights = list(MIX.values())
    out = []
    for _ in range(count):
        client = rng.choice(pool)
        kind = rng.choices(kinds, weights)[0]
        body = ""
        if kind == "login":
            wrong = rng.random() < WRONG_PASSWORD_SHARE
            body = json.dumps({"username": client.account,
                               "password": "wrong" if wrong else "correct horse battery"},
                              separators=(",", ":"))
            method, path = "POST", "/api/login"
        elif kind == "booking":
            body = json.dumps({"flight": rng.choice(FLIGHTS),
                               "seats": rng.choice([1, 1, 1, 2, 2, 3, 4]),
                               "fare": rng.choice(["economy", "economy", "flex", "business"])},
                              separators=(",", ":"))
            method, path = "POST", "/api/bookings"
        else:
            method, path = "GET", "/"
        out.append((method, path, _headers(client, kind, rng), body))
    return out


def write_requests(path: Path, count: int = 30000, clients: int = 8000, seed: int = SEED,
                   ) -> list[tuple[str, str, list[tuple[str, str]], str]]:
    """One request a line for bench/proxy.lua: method, path, body, then header names and
    values, tab-separated (JSON bodies and these headers never contain a tab)."""
    found = requests(count, clients, seed)
    lines = []
    for method, target, headers, body in found:
        fields = [method, target, body]
        for name, value in headers:
            fields += [name, value]
        assert not any("\t" in f or "\n" in f for f in fields), "a field holds a separator"
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return found
