"""The simulated world: its seed, addresses, accounts, and the ledger of what happened.

Everything random derives from ``LOADTEST_SEED``, each user from its own
``random.Random`` seeded by (seed, persona, user number), so a run's population and
choices repeat; only the interleaving of users depends on timing.
"""

from __future__ import annotations

import ipaddress
import os
import random
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from browsers import SHARED_DATA

SEED = int(os.environ.get("LOADTEST_SEED", "1"))
#: The demo airline itself (not through riskgate): seeding accounts, reading its records.
UPSTREAM = os.environ.get("LOADTEST_UPSTREAM", "http://127.0.0.1:9000")


def rng_for(*parts: object) -> random.Random:
    return random.Random(f"{SEED}:" + ":".join(map(str, parts)))


# -- addresses ----------------------------------------------------------------------------

#: /8s of big consumer ISPs (cable, DSL, fibre) in the US and Europe: where people and
#: residential proxies (which rent people's connections) come from.
_RESIDENTIAL_BLOCKS = (24, 67, 68, 71, 73, 76, 77, 79, 82, 84, 86, 88, 90, 92, 98, 174)


def residential_ip(rng: random.Random) -> str:
    return (f"{rng.choice(_RESIDENTIAL_BLOCKS)}.{rng.randrange(256)}."
            f"{rng.randrange(256)}.{rng.randrange(1, 255)}")


@cache
def vpn_exits() -> tuple[str, ...]:
    """Single addresses of a commercial VPN's exits (ProtonVPN's published list)."""
    path = SHARED_DATA / "iplists" / "lord-alfred-ipranges" / "protonvpn" / "ipv4_merged.txt"
    exits = []
    for line in path.read_text().split():
        network = ipaddress.ip_network(line, strict=False)
        exits.append(str(network.network_address + (1 if network.num_addresses > 1 else 0)))
    return tuple(exits)


#: Addresses the MaxMind test City database places in three countries (GB, SE, US).
COUNTRY_ADDRESSES = ("81.2.69.160", "89.160.20.112", "216.160.83.56")


# -- accounts -----------------------------------------------------------------------------

_FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jonas",
          "karin", "liam", "maria", "noah", "olivia", "paul", "rosa", "sam", "tara", "umar",
          "vera", "will", "yara", "zoe", "lena", "marco", "nina", "oscar", "pia", "rafael")
_LAST = ("berg", "costa", "dubois", "evans", "fischer", "garcia", "hansen", "ivanova", "jansen",
         "keller", "larsen", "moreau", "nowak", "olsen", "peters", "quinn", "rossi", "silva",
         "tanaka", "urban", "vogel", "weber", "young", "zimmer", "novak", "lindqvist")
_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de", "icloud.com", "web.de",
         "hotmail.co.uk", "orange.fr", "proton.me")


def person_email(rng: random.Random, tag: str) -> str:
    """A plausible personal address; ``tag`` keeps personas' accounts apart."""
    style = rng.randrange(3)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = (f"{first}.{last}" if style == 0 else f"{first}{last[0]}{rng.randrange(10, 99)}"
             if style == 1 else f"{first[0]}{last}")
    return f"{local}.{tag}@{rng.choice(_MAIL)}"


def password(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(12))


@dataclass(frozen=True)
class Account:
    email: str
    password: str


class Accounts:
    """Accounts seeded at the airline before the run, by owner."""

    def __init__(self) -> None:
        self._by_owner: dict[str, list[Account]] = defaultdict(list)
        self._lock = threading.Lock()

    def make(self, owner: str, count: int) -> list[Account]:
        rng = rng_for("accounts", owner)
        made = [Account(person_email(rng, f"{owner[:3]}{n}"), password(rng))
                for n in range(count)]
        with self._lock:
            self._by_owner[owner].extend(made)
        return made

    def of(self, owner: str) -> list[Account]:
        return self._by_owner[owner]

    def all(self) -> list[Account]:
        return [a for accounts in self._by_owner.values() for a in accounts]


ACCOUNTS = Accounts()


# -- the ledger ---------------------------------------------------------------------------

Side = Literal["human", "bot"]
Goal = Literal["logins", "holds", "redemptions", "registrations"]


@dataclass
class PersonaLedger:
    """What one persona did and saw."""

    side: Side
    goal: Goal | None = None
    requests: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    sessions_challenged: int = 0
    sessions_blocked: int = 0
    journeys_completed: int = 0
    #: Bots: goal actions tried (those an unprotected airline would have granted).
    goal_actions: int = 0
    #: Bots: the identities whose goal outcomes the airline's records count for it.
    identities: set[str] = field(default_factory=set)
    #: Bots: for stuffers, how many valid tries each victim got (a success per try).
    tries: Counter[str] = field(default_factory=Counter)


class Ledger:
    def __init__(self) -> None:
        self.personas: dict[str, PersonaLedger] = {}
        self._lock = threading.Lock()

    def persona(self, name: str, side: Side, goal: Goal | None = None) -> PersonaLedger:
        with self._lock:
            if name not in self.personas:
                self.personas[name] = PersonaLedger(side, goal)
            return self.personas[name]


LEDGER = Ledger()
