"""Client stacks: the header sets real browsers and the airline's apps send, per request kind.

Browser headers come from real captures (curl-impersonate's signatures, in
``../shared/data/headers/browser_headers.json``): the names, their order and values of
a top-level navigation. A browser changes a few of them by the kind of request — a
form post adds Origin and Content-Type and says ``sec-fetch-site: same-origin``; a
``fetch()`` from the page's script asks for ``*/*`` with ``sec-fetch-mode: cors`` and
drops the navigation-only headers — and so does :meth:`Stack.headers`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

#: ``../shared/data``, as tests/support.py finds it: the real third-party data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

Kind = Literal["navigate", "form", "fetch"]
_NAVIGATION_ONLY = frozenset({"upgrade-insecure-requests", "sec-fetch-user"})


@dataclass(frozen=True)
class Stack:
    """One client's HTTP stack: ordered (name, value) pairs of a navigation request."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    #: A native app: no navigation, every call an API call.
    app: bool = False

    @property
    def user_agent(self) -> str:
        return dict(self.pairs).get("user-agent", "")

    def headers(self, kind: Kind, origin: str = "") -> dict[str, str]:
        """The headers of one request of ``kind``, in the stack's order."""
        if self.app:
            return dict(self.pairs)
        out: dict[str, str] = {}
        for name, value in self.pairs:
            if kind == "fetch" and name in _NAVIGATION_ONLY:
                continue
            if name == "accept" and kind == "fetch":
                value = "*/*"
            elif name == "sec-fetch-site" and kind != "navigate":
                value = "same-origin"
            elif name == "sec-fetch-mode" and kind == "fetch":
                value = "cors"
            elif name == "sec-fetch-dest" and kind == "fetch":
                value = "empty"
            out[name] = value
        if kind != "navigate" and origin:
            out["origin"] = origin
            out["referer"] = origin + "/"
        return out

    def with_language(self, language: str) -> Stack:
        """The same browser set to another language (what a person's settings change)."""
        pairs = tuple((n, language if n == "accept-language" else v) for n, v in self.pairs)
        return Stack(self.name, pairs, self.app)

    def without(self, *names: str) -> Stack:
        """The stack with ``names`` left out (what a script that copied only part sends)."""
        return Stack(self.name, tuple(p for p in self.pairs if p[0] not in names), self.app)


@cache
def captures() -> dict[str, Stack]:
    """Every real browser capture, by name (chrome_116.0.5845.180_win10, ...)."""
    raw = json.loads((SHARED_DATA / "headers" / "browser_headers.json").read_text())
    return {c["name"]: Stack(c["name"], tuple((n, v) for n, v in c["headers"])) for c in raw}


@cache
def _iphone_user_agents() -> tuple[str, ...]:
    top = json.loads((SHARED_DATA / "useragents" / "top-user-agents" / "mobile.json")
                     .read_text())
    return tuple(ua for ua in top if "iPhone" in ua)


def desktop_stacks() -> list[Stack]:
    return [s for name, s in captures().items() if "android" not in name]


def mobile_stacks() -> list[Stack]:
    """Android Chrome (captured) and iPhone Safari (Safari's capture with a real iPhone UA
    from the current top list: mobile Safari sends the same headers as desktop Safari)."""
    stacks = [s for name, s in captures().items() if "android" in name]
    safari = captures()["safari_15.5_macos12.4"]
    for ua in _iphone_user_agents()[:3]:
        pairs = tuple((n, ua if n == "user-agent" else v) for n, v in safari.pairs)
        stacks.append(Stack(f"iphone:{ua[30:40]}", pairs))
    return stacks


#: Languages people set, with rough weights of the airline's markets.
LANGUAGES = (
    ("en-US,en;q=0.9", 5), ("en-GB,en;q=0.9", 4), ("de-DE,de;q=0.9,en;q=0.8", 3),
    ("fr-FR,fr;q=0.9,en;q=0.8", 3), ("es-ES,es;q=0.9", 2), ("it-IT,it;q=0.9,en;q=0.8", 1),
    ("nl-NL,nl;q=0.9,en;q=0.8", 1), ("sv-SE,sv;q=0.9,en;q=0.8", 1),
)


def person_stack(rng: random.Random, mobile: bool = False) -> Stack:
    """A browser a traveller might use, set to the traveller's language."""
    stack = rng.choice(mobile_stacks() if mobile else desktop_stacks())
    languages, weights = zip(*LANGUAGES, strict=True)
    return stack.with_language(rng.choices(languages, weights)[0])


#: The airline's own app, as its two HTTP stacks send it.
APP_NAME = "RiskgateAir"


def app_stack(rng: random.Random, version: str = "5.3.0") -> Stack:
    """The airline's app on Android (okhttp) or iOS (Alamofire), one phone model."""
    if rng.random() < 0.5:
        model = rng.choice(["Pixel 8", "SM-S918B", "moto g84", "2201116SG"])
        ua = f"{APP_NAME}/{version} (Android {rng.choice([12, 13, 14])}; {model}) okhttp/4.12.0"
        pairs = [("user-agent", ua), ("accept", "application/json"),
                 ("accept-encoding", "gzip"), ("x-app-version", version)]
    else:
        ios = rng.choice(["17.4.1", "17.5", "18.0"])
        ua = (f"{APP_NAME}/{version} (com.riskgate.air; build:{version.replace('.', '')}; "
              f"iOS {ios}) Alamofire/5.8.1")
        pairs = [("accept", "application/json"), ("accept-encoding", "br;q=1.0, gzip;q=0.9"),
                 ("accept-language", rng.choice(["en-GB;q=1.0", "de-DE;q=1.0", "fr-FR;q=1.0"])),
                 ("user-agent", ua), ("x-app-version", version)]
    return Stack(f"app:{ua[:40]}", tuple(pairs), app=True)


def headless_stack() -> Stack:
    """Chrome driven by automation, as puppeteer's default headless mode announces it."""
    chrome = captures()["chrome_116.0.5845.180_win10"]
    pairs = []
    for name, value in chrome.pairs:
        if name == "user-agent":
            value = value.replace("Windows NT 10.0; Win64; x64", "X11; Linux x86_64").replace(
                "Chrome/", "HeadlessChrome/")
        elif name == "sec-ch-ua":
            value = value.replace('"Google Chrome"', '"HeadlessChrome"')
        elif name == "sec-ch-ua-platform":
            value = '"Linux"'
        pairs.append((name, value))
    return Stack("headless-chrome", tuple(pairs))
