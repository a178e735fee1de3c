"""Proof-of-work challenges and pass cookies, against every store backend."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from riskgate.config import Route
from riskgate.decision.challenge import (
    PASS_COOKIE,
    VERIFY_PATH,
    Challenges,
    ClientBinding,
    leading_zero_bits,
    solve,
    solves,
)
from riskgate.event import EVENTS
from riskgate.http.challenge import challenge_response, verify
from riskgate.store import MemoryStore, Store, open_store
from support import free_port

pytestmark = pytest.mark.anyio
NOW = 1_700_000_000.0
SECRET = b"test-secret"
BITS = 8  # a real search in Python that still takes milliseconds


def make(store: Store, ttl: float = 120.0) -> Challenges:
    return Challenges(SECRET, store, min_difficulty=BITS, max_difficulty=BITS, ttl=ttl)


def me(c: Challenges) -> ClientBinding:
    return c.binding("device-key-1", "203.0.113.0/24", "Mozilla/5.0 Firefox/128")


def issue(c: Challenges, binding: ClientBinding | None = None) -> dict[str, object]:
    return c.issue(score=50.0, binding=binding or me(c), now=NOW)


def answer(challenge: dict[str, object], nonce: str | None = None) -> bytes:
    salt, bits = str(challenge["salt"]), int(str(challenge["difficulty"]))
    return json.dumps({"id": challenge["id"], "nonce": nonce or solve(salt, bits)}).encode()


def wrong_nonce(challenge: dict[str, object]) -> str:
    salt, bits = str(challenge["salt"]), int(str(challenge["difficulty"]))
    return next(str(n) for n in range(10_000) if not solves(salt, str(n), bits))


async def post(
    c: Challenges, body: bytes, *, scheme: str = "http", method: str = "POST"
) -> Response:
    """``body`` sent to ``verify`` by ``me``, as the ASGI server would hand it over."""
    chunks = [body[:10], body[10:]]  # arrives in pieces, as from a socket

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": method, "scheme": scheme, "path": VERIFY_PATH,
             "query_string": b"", "headers": [], "server": ("testserver", 443)}  # fmt: skip
    return await verify(c, Request(scope, receive), me(c), NOW)


def error_of(response: Response) -> str:
    reason: str = json.loads(bytes(response.body))["error"]
    return reason


# -- verify ------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "secure"), [("http", False), ("https", True)])
async def test_a_correct_answer_earns_a_pass_cookie_secure_only_over_https(
    store: Store, scheme: str, secure: bool
) -> None:
    c = make(store)
    response = await post(c, answer(issue(c)), scheme=scheme)
    assert response.status_code == 204
    cookie = response.headers["set-cookie"]
    value = re.match(rf"{PASS_COOKIE}=([^;]+); ", cookie)
    assert value is not None
    expected = f"{PASS_COOKIE}={value[1]}; HttpOnly; SameSite=Lax; Path=/; Max-Age=1800"
    assert cookie == (expected + "; Secure" if secure else expected)
    assert c.pass_valid(value[1], me(c), NOW + 1)


@pytest.mark.parametrize("first", ["right", "wrong"])
async def test_a_challenge_id_is_good_for_one_answer_right_or_wrong(
    store: Store, first: str
) -> None:
    c = make(store)
    challenge = issue(c)
    first_nonce = None if first == "right" else wrong_nonce(challenge)
    assert (await c.check(answer(challenge, first_nonce), me(c), NOW)).status == (
        204 if first == "right" else 403
    )
    again = await c.check(answer(challenge), me(c), NOW + 1)
    assert (again.status, again.reason) == (403, "challenge already answered")


def _tamper(challenge_id: str, field: int, value: str) -> str:
    parts = challenge_id.split(".")
    parts[field] = value
    return ".".join(parts)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (lambda ch: answer(ch, wrong_nonce(ch)), 403, "wrong answer"),
        (lambda ch: answer({**ch, "id": _tamper(str(ch["id"]), 2, "1")}), 403,
         "unknown challenge"),  # easier difficulty claimed
        (lambda ch: answer({**ch, "id": _tamper(str(ch["id"]), 1, "9" * 15)}), 403,
         "unknown challenge"),  # later expiry claimed
        (lambda ch: answer({**ch, "id": str(ch["id"])[:-2] + "AA"}), 403, "unknown challenge"),
        (lambda ch: answer({**ch, "id": "made-up"}), 403, "unknown challenge"),
        (lambda ch: answer({**ch, "id": "1." + "9" * 500}), 403, "unknown challenge"),
        (lambda ch: json.dumps({"id": ch["id"]}).encode(), 403,
         "answer must carry string id and nonce"),
        (lambda ch: json.dumps({"id": ch["id"], "nonce": True}).encode(), 403,
         "answer must carry string id and nonce"),
        (lambda ch: json.dumps({"id": ch["id"], "nonce": "1" * 65}).encode(), 403,
         "nonce longer than 64 characters"),
        (lambda ch: json.dumps([ch["id"], "1"]).encode(), 403,
         "answer must be a JSON object with id and nonce"),
        (lambda ch: b"id=x&nonce=1", 400, "the body is not valid JSON"),
        (lambda ch: b"\xff\xfe", 400, "the body is not valid JSON"),
        (lambda ch: b"[" * 1024, 400, "the body is nested too deeply to decode; send at most a "
                                      "few levels of objects and arrays"),
        (lambda ch: b'{"id": "x", "nonce": 1e400}', 400,
         "`nonce` is not a finite number; send a number within ±1.8e308"),
    ],
    ids=["wrong-nonce", "tampered-difficulty", "tampered-expiry", "tampered-mac", "made-up-id",
         "huge-id", "missing-nonce", "boolean-nonce", "long-nonce", "not-an-object", "form-body",
         "not-utf8", "nested-too-deep", "infinite-nonce"],
)  # fmt: skip
async def test_bad_answers_are_refused_with_a_short_reason(
    store: Store, body: object, status: int, reason: str
) -> None:
    c = make(store)
    challenge = issue(c)
    assert callable(body)
    response = await post(c, body(challenge))
    assert response.status_code == status
    assert error_of(response) == reason


async def test_another_client_posting_an_id_first_does_not_spend_it(store: Store) -> None:
    c = make(store)
    challenge = issue(c)
    eavesdropper = c.binding("device-key-2", "198.51.100.0/24", "curl/8.4.0")
    stolen = await c.check(answer(challenge), eavesdropper, NOW)
    rightful = await c.check(answer(challenge), me(c), NOW)
    assert (stolen.status, stolen.reason) == (403, "challenge issued to another client")
    assert (rightful.status, rightful.reason) == (204, "passed")


async def test_an_answer_from_another_client_is_refused(store: Store) -> None:
    c = make(store)
    challenge = issue(c, c.binding("device-key-2", "203.0.113.0/24", "Mozilla/5.0 Firefox/128"))
    verdict = await c.check(answer(challenge), me(c), NOW)
    assert (verdict.status, verdict.reason) == (403, "challenge issued to another client")


@pytest.mark.parametrize(("after", "status"), [(119.0, 204), (120.0, 403), (3600.0, 403)])
async def test_a_challenge_expires_after_its_ttl(store: Store, after: float, status: int) -> None:
    c = make(store, ttl=120.0)
    verdict = await c.check(answer(issue(c)), me(c), NOW + after)
    assert verdict.status == status
    if status == 403:
        assert verdict.reason == "challenge expired"


async def test_an_id_signed_with_another_secret_is_unknown(store: Store) -> None:
    other = Challenges(b"other-secret", store, min_difficulty=BITS, max_difficulty=BITS)
    c = make(store)
    verdict = await c.check(answer(issue(other, me(c))), me(c), NOW)
    assert (verdict.status, verdict.reason) == (403, "unknown challenge")


async def test_verify_refuses_an_oversized_body_and_other_methods() -> None:
    c = make(MemoryStore())
    oversized = await post(c, b"{" + b" " * 2000)
    assert (oversized.status_code, error_of(oversized)) == (413, "answer larger than 1024 bytes")
    assert (await post(c, b"", method="GET")).status_code == 405


# -- pass cookie ---------------------------------------------------------------------------


@pytest.fixture
def challenges() -> Challenges:
    return make(MemoryStore())  # passes and pages never touch the store


@pytest.mark.parametrize(
    ("device", "prefix", "ua", "valid"),
    [
        ("device-key-1", "203.0.113.0/24", "Mozilla/5.0 Firefox/128", True),
        ("device-key-2", "203.0.113.0/24", "Mozilla/5.0 Firefox/128", False),
        (None, "203.0.113.0/24", "Mozilla/5.0 Firefox/128", False),
        ("device-key-1", "198.51.100.0/24", "Mozilla/5.0 Firefox/128", False),
        ("device-key-1", "2001:db8:1::/48", "Mozilla/5.0 Firefox/128", False),
        ("device-key-1", "203.0.113.0/24", "Mozilla/5.0 Chrome/126", False),
        ("device-key-1", "203.0.113.0/24", None, False),
    ],
    ids=["same-client", "other-device", "no-device", "other-prefix", "other-family", "other-ua",
         "no-ua"],
)  # fmt: skip
def test_a_pass_is_valid_only_for_the_client_it_was_issued_to(
    challenges: Challenges, device: str | None, prefix: str, ua: str | None, valid: bool
) -> None:
    cookie = challenges.issue_pass(me(challenges), NOW)
    assert challenges.pass_valid(cookie, challenges.binding(device, prefix, ua), NOW) is valid


@pytest.mark.parametrize(("after", "valid"), [(0.0, True), (1799.0, True), (1800.0, False)])
def test_a_pass_expires_after_pass_ttl(challenges: Challenges, after: float, valid: bool) -> None:
    cookie = challenges.issue_pass(me(challenges), NOW)
    assert challenges.pass_valid(cookie, me(challenges), NOW + after) is valid


def _forgeries(cookie: str) -> Iterator[str | None]:
    version, expires, mac = cookie.split(".")
    yield f"{version}.{int(expires) + 3600}.{mac}"  # extended expiry
    yield f"{version}.{expires}.{'A' * len(mac)}"
    yield f"2.{expires}.{mac}"
    yield cookie + "x"
    yield "garbage"
    yield ""
    yield None


def test_a_forged_or_malformed_pass_is_refused(challenges: Challenges) -> None:
    cookie = challenges.issue_pass(me(challenges), NOW)
    for forged in _forgeries(cookie):
        assert not challenges.pass_valid(forged, me(challenges), NOW), forged
    other = Challenges(b"other-secret", MemoryStore())
    assert not challenges.pass_valid(other.issue_pass(me(challenges), NOW), me(challenges), NOW)


def test_a_challenge_id_is_not_a_pass(challenges: Challenges) -> None:
    assert not challenges.pass_valid(str(issue(challenges)["id"]), me(challenges), NOW)


def test_the_pass_and_the_binding_carry_no_raw_identity(challenges: Challenges) -> None:
    ua = "Mozilla/5.0 Firefox/128"
    binding = challenges.binding("device-key-1", "203.0.113.0/24", ua)
    assert ua not in binding.user_agent and len(binding.user_agent) == 24
    cookie = challenges.issue_pass(binding, NOW)
    assert "device-key-1" not in cookie and "203.0.113" not in cookie
    assert binding.user_agent not in cookie


# -- difficulty --------------------------------------------------------------------------


def test_difficulty_grows_with_the_score_within_its_bounds() -> None:
    c = Challenges(SECRET, MemoryStore())  # the defaults, 14 to 18 bits
    scores = [-10.0, 0.0, 12.5, 25.0, 50.0, 75.0, 99.0, 100.0, 250.0]
    bits = [c.difficulty(s) for s in scores]
    assert bits == sorted(bits)
    assert bits[0] == bits[1] == 14 and bits[-1] == bits[-2] == 18
    assert issue(c)["difficulty"] == 16


@pytest.mark.parametrize(("low", "high"), [(-1, 10), (12, 10), (10, 33)])
def test_impossible_difficulty_bounds_are_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="difficulty must satisfy"):
        Challenges(SECRET, MemoryStore(), min_difficulty=low, max_difficulty=high)


@given(st.binary(min_size=1, max_size=40))
def test_leading_zero_bits_matches_a_bit_string_count(digest: bytes) -> None:
    bits = "".join(f"{byte:08b}" for byte in digest)
    assert leading_zero_bits(digest) == len(bits) - len(bits.lstrip("0"))


@given(st.text(max_size=30), st.text(max_size=10), st.integers(0, 12))
def test_solves_matches_the_contracts_hex_digest_definition(
    salt: str, nonce: str, bits: int
) -> None:
    hex_digest = hashlib.sha256((salt + nonce).encode("utf-8")).hexdigest()
    zeros = len(bin(int(hex_digest, 16))[2:].zfill(256)) - len(bin(int(hex_digest, 16))[2:])
    assert solves(salt, nonce, bits) is (zeros >= bits)


# -- the challenge responses ---------------------------------------------------------------


@pytest.mark.parametrize("accept", ["application/json", "*/*", "", "text/html;q=0"])
def test_api_clients_get_exactly_the_contracts_json(challenges: Challenges, accept: str) -> None:
    response = challenge_response(
        challenges, score=50.0, binding=me(challenges), request_id="req-1", accept=accept,
        status=429, now=NOW)  # fmt: skip
    assert response.status_code == 429
    assert response.headers["x-riskgate-decision"] == "challenge"
    assert response.headers["x-riskgate-request-id"] == "req-1"
    body = json.loads(bytes(response.body))
    assert list(body) == ["decision", "challenge"] and body["decision"] == "challenge"
    challenge = body["challenge"]
    assert sorted(challenge) == ["algorithm", "difficulty", "id", "salt", "verify_url"]
    assert challenge["algorithm"] == "sha256" and challenge["difficulty"] == BITS
    assert challenge["verify_url"] == VERIFY_PATH


@pytest.fixture
def page(challenges: Challenges) -> Response:
    return challenge_response(
        challenges, score=50.0, binding=me(challenges), request_id="req-<b>&1", now=NOW, status=403,
        accept="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")  # fmt: skip


def test_browsers_get_an_interstitial_that_needs_no_other_site(page: Response) -> None:
    html = bytes(page.body).decode()
    assert page.status_code == 403 and page.media_type == "text/html"
    assert page.headers["x-riskgate-decision"] == "challenge"
    assert page.headers["cache-control"] == "no-store"
    for attribute in ("src=", "href=", "url("):
        assert f"{attribute}\"http" not in html and f"{attribute}'http" not in html
        assert f"{attribute}http" not in html and f"{attribute}//" not in html
    assert 'role="status" aria-live="polite"' in html and "<noscript>" in html
    assert 'subtle.digest("SHA-256"' in html and "new Worker(" in html


def test_the_interstitial_has_a_strict_csp_allowing_only_its_own_script(page: Response) -> None:
    html = bytes(page.body).decode()
    header = page.headers["content-security-policy"]
    policy = dict(directive.strip().split(" ", 1) for directive in header.split(";"))
    assert policy["default-src"] == "'none'" and policy["worker-src"] == "blob:"
    assert "'unsafe-inline'" not in header and "'unsafe-eval'" not in header
    [script] = re.findall(r"<script>(.*?)</script>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"


def test_the_interstitial_carries_the_challenge_as_inert_escaped_json(page: Response) -> None:
    html = bytes(page.body).decode()
    found = re.search(r'<script type="application/json" id="rg-challenge">(.*?)</script>', html)
    assert found is not None and "<" not in found[1]
    data = json.loads(found[1])
    assert sorted(data) == ["algorithm", "difficulty", "expected_hashes", "id", "method",
                            "resubmit", "salt", "verify_url"]  # fmt: skip
    assert data["resubmit"] is None  # no form to carry back
    assert "req-&lt;b&gt;&amp;1" in html and "req-<b>" not in html


def unreachable_store() -> Store:
    """A real Redis store pointed at a port nothing listens on: every call fails."""
    return open_store(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)


async def test_an_open_routes_answer_still_passes_while_the_store_is_down() -> None:
    # Open: the id is still signed, unexpired and bound to this client.
    c = make(unreachable_store())
    challenge = c.issue(score=50.0, binding=me(c), now=NOW, fail_closed=False)
    assert (await c.check(answer(challenge), me(c), NOW)).status == 204


async def test_a_closed_routes_answer_waits_for_the_store_to_prove_it_unused() -> None:
    c = make(unreachable_store())
    challenge = c.issue(score=50.0, binding=me(c), now=NOW, fail_closed=True)
    verdict = await c.check(answer(challenge), me(c), NOW)
    assert (verdict.status, verdict.reason) == (
        503, "the challenge cannot be verified while the store is unavailable; try again in "
             "a moment")


def test_login_and_booking_challenges_fail_closed_unless_configured() -> None:
    def route(event: str, closed: bool | None = None) -> Route:
        return Route("/x", "POST", event, challenge_fail_closed=closed)  # type: ignore[arg-type]

    assert [route(e).challenge_closed for e in EVENTS] == [
        e in ("login", "booking") for e in EVENTS]
    assert route("login", False).challenge_closed is False
    assert route("promotion", True).challenge_closed is True
