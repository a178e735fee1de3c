"""riskgate's own evaluation: humans and bots through the gateway in front of the demo airline.

Run it with ``make loadtest`` (headless, bounded, seeded; see ``loadtest/run.py``), or
with locust's web UI against a gateway you started yourself (README, "Load test").
Before the users start, the airline is seeded with every persona's accounts; when the
test stops, the airline's own records say which goal actions succeeded, and the table
of personas is printed and written to ``LOADTEST_OUT/summary.txt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests
from bots import BOTS
from humans import HUMANS
from locust import events
from report import summary
from world import ACCOUNTS, LEDGER, SEED, UPSTREAM

__all__ = [cls.__name__ for cls in (*HUMANS, *BOTS)]
globals().update({cls.__name__: cls for cls in (*HUMANS, *BOTS)})

#: Every persona runs with exactly its fixed number of users: ``--users`` must be this.
USERS = sum(cls.fixed_count for cls in (*HUMANS, *BOTS))


@events.test_start.add_listener
def seed_the_airline(environment: Any, **_: Any) -> None:
    for cls in (*HUMANS, *BOTS):
        if cls.accounts and not ACCOUNTS.of(cls.persona):
            ACCOUNTS.make(cls.persona, cls.accounts)
    payload = [{"email": a.email, "password": a.password} for a in ACCOUNTS.all()]
    response = requests.post(f"{UPSTREAM}/__accounts", json=payload, timeout=30)
    response.raise_for_status()
    target = getattr(environment.runner, "target_user_count", None)
    if target is not None and target != USERS:
        print(f"loadtest: run with --users {USERS} (one per persona user), not {target}")


@events.test_stop.add_listener
def report(environment: Any, **_: Any) -> None:
    stats = requests.get(f"{UPSTREAM}/__stats", timeout=30).json()
    text = summary(LEDGER, stats, SEED)
    print(text, flush=True)
    out = os.environ.get("LOADTEST_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "summary.txt").write_text(text + "\n")
