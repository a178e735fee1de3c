"""Labels the gateway gives the model itself (issue 11): a challenge left unsolved is a
bot's request, a solved one followed by normal traffic a person's, each label once.

The first tests drive riskgate.engine.implicit with a clock of their own, against every
store; the last runs ``riskgate serve --workers 2`` as a reverse proxy in front of a
real upstream, with each step pinned to one worker, as the kernel may hand them out.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from riskgate.decision.challenge import PASS_COOKIE, Challenges, ClientBinding, solve, solves
from riskgate.engine import Engine
from riskgate.engine.feedback import vector_key
from riskgate.engine.implicit import GRACE_SECONDS, ImplicitLabels
from riskgate.event import RiskEvent
from riskgate.model.online import OnlineModel
from riskgate.rules import load_ruleset
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import Store
from support import RedisServer, ThreadServer, only, riskgate_serve, worker_pids, write_rules

SECRET = "implicit-labels-secret-0123"
KEYER = Keyer(SECRET.encode())
NOW = 1_700_000_000.0
TTL = 60.0
RULES = """
rules:
  - id: challenged-agent
    description: A scripted client is asked to prove it runs a browser
    when: device.user_agent == "suspicious-bot/1.0" and not challenge.passed
    action: challenge
"""


class Gatewayish:
    """What the gateway does around the engine, for the in-process tests: decide, issue
    a challenge for what is challenged, answer it, come back with the pass."""

    def __init__(self, store: Store, tmp_path: Path, capacity: int = 100) -> None:
        self.model = OnlineModel()
        self.engine = Engine(load_ruleset(write_rules(tmp_path, RULES)), store,
                             SignalExtractor(KEYER), KEYER, model=self.model)
        self.challenges = Challenges(SECRET.encode(), store, min_difficulty=4,
                                     max_difficulty=4, ttl=TTL)
        self.implicit = ImplicitLabels(self.engine, self.challenges, capacity=capacity)
        self.me: ClientBinding = self.challenges.binding(None, "198.51.100.0/24", "x")
        self.ids = iter(f"{n:024x}" for n in range(1, 1000))

    async def request(self, ua: str = "suspicious-bot/1.0", passed: bool = False,
                      ) -> tuple[str, dict[str, object] | None]:
        """A decided request: its id, and the challenge it got, if challenged."""
        request_id = next(self.ids)
        decision = await self.engine.decide(RiskEvent(
            request_id, "login", ipaddress.ip_address("198.51.100.7"), NOW,
            account="alice@example.com", user_agent=ua, challenge_passed=passed))
        await self.engine.learn_pending()  # after the response: its label vector is stored
        if decision.verdict.decision != "challenge":
            if passed and decision.normal:
                self.implicit.followed_normally(self._origin)
            return request_id, None
        challenge = self.challenges.issue(score=0, binding=self.me, now=NOW,
                                          request_id=request_id)
        self.implicit.challenged(str(challenge["id"]))
        return request_id, challenge

    async def answer(self, challenge: dict[str, object], right: bool = True) -> int:
        salt, bits = str(challenge["salt"]), int(str(challenge["difficulty"]))
        nonce = solve(salt, bits) if right else next(
            str(n) for n in range(10_000) if not solves(salt, str(n), bits))
        verdict = await self.challenges.check(
            json.dumps({"id": challenge["id"], "nonce": nonce}).encode(), self.me, NOW + 1)
        if verdict.origin is not None:
            self._origin = verdict.origin  # what the pass cookie would carry
        return verdict.status

    def labels(self) -> dict[str, int]:
        summary = self.model.summary().get("login", {"labels": {"bot": 0, "human": 0}})
        labels: dict[str, int] = summary["labels"]
        return labels


pytestmark = pytest.mark.anyio
EXPIRED = NOW + TTL + GRACE_SECONDS


async def test_a_challenge_left_unsolved_labels_its_request_a_bots_once_it_expired(
    store: Store, tmp_path: Path
) -> None:
    gateway = Gatewayish(store, tmp_path)
    request_id, challenge = await gateway.request()
    assert challenge is not None
    assert await gateway.implicit.settle(NOW + TTL) == 0  # it can still be answered
    assert await gateway.implicit.settle(EXPIRED) == 1
    await gateway.engine.learn_pending()
    assert gateway.labels() == {"bot": 1, "human": 0}
    # The request took its one outcome: feedback for it now is a 409.
    assert await gateway.engine.feedback(request_id, "legit", EXPIRED) == "answered"


@pytest.mark.parametrize(("right", "bot_labels"), [(False, 1), (True, 0)],
                         ids=["answered-wrong", "solved"])
async def test_an_answer_decides_whether_the_expired_challenge_labels_a_bot(
    store: Store, tmp_path: Path, right: bool, bot_labels: int
) -> None:
    gateway = Gatewayish(store, tmp_path)
    _, challenge = await gateway.request()
    assert challenge is not None
    assert await gateway.answer(challenge, right) == (204 if right else 403)
    await gateway.implicit.settle(EXPIRED)
    await gateway.engine.learn_pending()
    # Solving alone labels nobody: a script can pay for the work too.
    assert gateway.labels() == {"bot": bot_labels, "human": 0}


async def test_a_solved_challenge_followed_by_normal_traffic_labels_a_person_once(
    store: Store, tmp_path: Path
) -> None:
    gateway = Gatewayish(store, tmp_path)
    request_id, challenge = await gateway.request()
    assert challenge is not None and await gateway.answer(challenge) == 204
    for _ in range(3):  # the pass serves many requests; the first normal one labels
        _, again = await gateway.request(passed=True)
        assert again is None
    assert await gateway.implicit.settle(NOW + 2) == 1
    await gateway.implicit.settle(EXPIRED)
    await gateway.engine.learn_pending()
    assert gateway.labels() == {"bot": 0, "human": 1}
    assert await gateway.engine.feedback(request_id, "fraud", EXPIRED) == "answered"


async def test_a_client_that_stays_risky_after_solving_labels_nobody(
    store: Store, tmp_path: Path
) -> None:
    gateway = Gatewayish(store, tmp_path)
    request_id, challenge = await gateway.request()
    assert challenge is not None and await gateway.answer(challenge) == 204
    # Back without its pass: challenged again, so not normal behaviour.
    _, again = await gateway.request()
    assert again is not None
    await gateway.implicit.settle(NOW + 2)
    await gateway.engine.learn_pending()
    assert gateway.labels() == {"bot": 0, "human": 0}
    assert await gateway.engine.feedback(request_id, "fraud", NOW + 2) == "recorded"


async def test_a_worker_watches_a_bounded_number_of_challenges(
    store: Store, tmp_path: Path
) -> None:
    gateway = Gatewayish(store, tmp_path, capacity=2)
    first, _ = await gateway.request()
    for _ in range(2):
        await gateway.request()
    assert gateway.implicit.dropped == 1
    assert await gateway.implicit.settle(EXPIRED) == 2
    # The oldest was dropped unwatched: its outcome is still free for feedback.
    assert await gateway.engine.feedback(first, "fraud", EXPIRED) == "recorded"


# -- through riskgate serve --workers 2 -------------------------------------------------


def upstream() -> Starlette:
    async def redeem(request: Request) -> Response:
        return JSONResponse({"redeemed": request.path_params["code"]}, status_code=201)

    return Starlette(routes=[StarletteRoute("/api/promotions/{code}/redeem", redeem,
                                            methods=["POST"])])


def redeem(base: str, ua: str, cookie: str | None = None) -> httpx.Response:
    # A new connection each time: a kept-alive one would stay with the worker it has.
    headers = {"user-agent": ua, "x-account-id": "acct-1"}
    if cookie is not None:
        headers["cookie"] = f"{PASS_COOKIE}={cookie}"
    return httpx.post(f"{base}/api/promotions/SPRING/redeem", headers=headers, timeout=5)


def labels_learned(base: str) -> dict[str, float]:
    """``riskgate_model_labels_total`` by source, summed over the workers."""
    found = {}
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("riskgate_model_labels_total{"):
            name, _, value = line.rpartition(" ")
            found[name.split('source="')[1].split('"')[0]] = float(value)
    return found


def wait_for(what: str, check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def test_two_workers_label_what_their_proxy_saw_whichever_worker_saw_it(
    tmp_path: Path, redis_url: str, redis_server: RedisServer,
) -> None:
    rules = write_rules(tmp_path, RULES)
    config = tmp_path / "riskgate.yaml"
    with ThreadServer(upstream()) as app:
        config.write_text(
            f"secret: {SECRET}\nstore: {redis_url}\nrules: {rules}\nupstream: {app.url}\n"
            f"decision_log: {tmp_path / 'decisions.jsonl'}\nchallenge_ttl: 1\n"
            "model: {enabled: true}\n"
            "routes:\n  - {path: '/api/promotions/{code}/redeem', method: POST, "
            "event: promotion, account: 'header:X-Account-Id'}\n")
        with riskgate_serve(config, workers=2) as (base, server):
            first, second = workers = worker_pids(server.pid)
            with only(first, workers):
                person = redeem(base, "suspicious-bot/1.0")
                walked_away = redeem(base, "suspicious-bot/1.0")
                allowed = redeem(base, "Mozilla/5.0 Firefox/128")
                # The label vectors are stored after the responses: let them land
                # before this worker stops.
                with redis_server.client() as client:
                    wait_for("the label vectors", lambda: client.exists(*(
                        vector_key(r.headers["x-riskgate-request-id"])
                        for r in (person, walked_away, allowed))) == 3)
            assert [r.status_code for r in (person, walked_away, allowed)] == [403, 403, 201]
            with only(second, workers):
                # Another worker takes the answer and sees the client come back with
                # its pass: normal traffic, so the challenged request was a person's.
                challenge = person.json()["challenge"]
                verified = httpx.post(f"{base}{challenge['verify_url']}", timeout=5,
                                      headers={"user-agent": "suspicious-bot/1.0"},
                                      json={"id": challenge["id"], "nonce": solve(
                                          challenge["salt"], challenge["difficulty"])})
                assert verified.status_code == 204
                back = redeem(base, "suspicious-bot/1.0", verified.cookies[PASS_COOKIE])
                assert back.status_code == 201
                wait_for("the person's label", lambda: labels_learned(base).get(
                    "passed-challenge") == 1.0)
            # The first worker issued both challenges: once they expired it labels the
            # one nobody answered, and leaves the solved one alone.
            wait_for("the bot's label", lambda: labels_learned(base).get(
                "unsolved-challenge") == 1.0)
            time.sleep(1.0)  # a second expiry check, had the solved one been mistaken
            learned = labels_learned(base)

            def feedback(response: httpx.Response) -> int:
                return httpx.post(f"{base}/v1/feedback", timeout=5, json={
                    "request_id": response.headers["x-riskgate-request-id"],
                    "outcome": "fraud"}).status_code

            statuses = [feedback(r) for r in (person, walked_away, allowed)]
    assert learned == {"passed-challenge": 1.0, "unsolved-challenge": 1.0}
    # Each label took its request's one outcome; the allowed request's is still free.
    assert statuses == [409, 409, 204]
    logged = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text()
              .splitlines()]
    assert sorted((e["request_id"], e["label"], e["source"]) for e in logged
                  if e["type"] == "label") == sorted([
        (person.headers["x-riskgate-request-id"], "human", "passed-challenge"),
        (walked_away.headers["x-riskgate-request-id"], "bot", "unsolved-challenge")])
