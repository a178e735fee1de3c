"""One simulated client's visit: its stack, address, device id and cookies, and how it
meets riskgate's answers.

Every request carries the stack's headers for its kind, ``X-Forwarded-For`` with the
simulated address (the gateway trusts the load generator as a proxy), and — on the
page script's API calls, never on navigations, as a browser does — the device id.
A challenge is solved as the browser's worker would (``riskgate.decision.challenge.solve``)
and the request is sent once more with the pass; a client that does not solve gives up.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from browsers import Kind, Stack
from locust import HttpUser
from world import ACCOUNTS, LEDGER, Account, Goal, PersonaLedger, Side, rng_for

from riskgate.decision.challenge import solve

_CHALLENGE_DATA = re.compile(r'<script type="application/json" id="rg-challenge">(.*?)</script>',
                             re.S)
_TOKEN_IN_PAGE = re.compile(r"localStorage\.rgToken='([^']+)'")


@dataclass
class Answer:
    status: int
    #: riskgate's decision on a scored route (after any challenge), else None.
    decision: str | None
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Persona(HttpUser):
    """A locust user playing one persona, with its own seeded random numbers."""

    abstract = True
    persona: ClassVar[str] = "persona"
    side: ClassVar[Side] = "human"
    goal: ClassVar[Goal | None] = None
    #: How many accounts the persona's people (or the bot's operator) own at the airline.
    accounts: ClassVar[int] = 0
    numbers: ClassVar[itertools.count[int]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.numbers = itertools.count()

    def on_start(self) -> None:
        self.number = next(self.numbers)
        self.rng = rng_for(self.persona, self.number)
        self.ledger: PersonaLedger = LEDGER.persona(self.persona, self.side, self.goal)
        self.setup()

    def setup(self) -> None:
        """Per-user state (a NAT's colleagues, a household's members, a bot's lists)."""

    @classmethod
    def own_accounts(cls) -> list[Account]:
        return ACCOUNTS.of(cls.persona)


class Visit:
    """One session of one client: a person's visit, or a bot's batch."""

    def __init__(self, user: HttpUser, ledger: PersonaLedger, name: str, stack: Stack,
                 ip: str, device_id: str | None, *, solves: bool = True) -> None:
        self.user = user
        self.ledger = ledger
        self.name = name
        self.stack = stack
        self.ip = ip
        self.device_id = device_id
        self.solves = solves
        self.challenged = False
        self.blocked = False
        user.client.cookies.clear()  # a new visitor brings no pass from the last one
        self.origin = user.host.rstrip("/") if user.host else ""

    # -- what the client does --------------------------------------------------------

    def page(self, path: str) -> Answer:
        """A top-level navigation (no device id: a page's script cannot add headers)."""
        return self._send("GET", path, "navigate", label=path)

    def api_get(self, path: str, extra: dict[str, str] | None = None) -> Answer:
        return self._send("GET", path, "fetch", extra=extra, label=path)

    def api_post(self, path: str, body: dict[str, Any], extra: dict[str, str] | None = None,
                 label: str | None = None) -> Answer:
        return self._send("POST", path, "fetch", json_body=body, extra=extra,
                          label=label or path)

    def form_post(self, path: str, fields: dict[str, str]) -> Answer:
        return self._send("POST", path, "form", form=fields, label=path + " (form)")

    def think(self, low: float, high: float, rng: Any) -> None:
        time.sleep(rng.uniform(low, high))

    # -- sending, and meeting riskgate's answers ------------------------------------

    def _headers(self, kind: Kind, extra: dict[str, str] | None, body: str | None
                 ) -> dict[str, str]:
        headers = self.stack.headers(kind, self.origin)
        if (self.stack.app or kind == "fetch") and self.device_id is not None:
            headers["x-device-id"] = self.device_id
        if body is not None:
            headers["content-type"] = body
        headers.update(extra or {})
        headers["x-forwarded-for"] = self.ip
        return headers

    def _send(self, method: str, path: str, kind: Kind, *, json_body: Any = None,
              form: dict[str, str] | None = None, extra: dict[str, str] | None = None,
              label: str) -> Answer:
        content_type = ("application/json" if json_body is not None else
                        "application/x-www-form-urlencoded" if form is not None else None)
        data = json.dumps(json_body) if json_body is not None else form
        answer = self._once(method, path, kind, data, content_type, extra, label)
        if answer.decision == "challenge":
            self.challenged = True
            if self.solves and self._pass_challenge(answer.body, extra):
                answer = self._once(method, path, kind, data, content_type, extra, label)
        if answer.decision == "block":
            self.blocked = True
        return answer

    def _once(self, method: str, path: str, kind: Kind, data: Any, content_type: str | None,
              extra: dict[str, str] | None, label: str) -> Answer:
        headers = self._headers(kind, extra, content_type)
        with self.user.client.request(method, path, name=f"{self.name} {method} {label}",
                                      data=data, headers=headers, catch_response=True,
                                      allow_redirects=False) as response:
            decision = response.headers.get("x-riskgate-decision")
            # 4xx answers are the airline's and riskgate's answers, not load-test errors.
            if response.status_code < 500:
                response.success()
            self.ledger.requests += 1
            if decision:
                self.ledger.decisions[decision] += 1
            body: Any = response.text
            if "json" in response.headers.get("content-type", ""):
                try:
                    body = response.json()
                except ValueError:
                    body = None
            return Answer(response.status_code, decision, body)

    def _pass_challenge(self, body: Any, extra: dict[str, str] | None) -> bool:
        if isinstance(body, dict):
            challenge = body.get("challenge")
        else:
            found = _CHALLENGE_DATA.search(body or "")
            challenge = json.loads(found[1]) if found else None
        if not isinstance(challenge, dict):
            return False
        nonce = solve(str(challenge["salt"]), int(challenge["difficulty"]))
        answer = self._once("POST", str(challenge["verify_url"]), "fetch",
                            json.dumps({"id": challenge["id"], "nonce": nonce}),
                            "application/json", extra, "challenge verify")
        return answer.status == 204


def token_of(answer: Answer) -> str | None:
    """The session token of a successful sign-in, from the API's JSON or the page."""
    if not answer.ok:
        return None
    if isinstance(answer.body, dict):
        token = answer.body.get("token")
        return token if isinstance(token, str) else None
    found = _TOKEN_IN_PAGE.search(answer.body or "")
    return found[1] if found else None
