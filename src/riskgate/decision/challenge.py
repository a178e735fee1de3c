"""Proof-of-work challenges and the pass cookie that a solved challenge earns.

The flow (CONTRACT §3): a risky request is answered with a challenge ``{id, salt,
difficulty}``; the client finds a ``nonce`` such that ``sha256(salt + nonce)`` starts
with ``difficulty`` zero bits and posts ``{id, nonce}`` to the verify URL; a correct
answer earns the ``rg_pass`` cookie, which the engine reads as ``challenge.passed``.

**Stateless issue, one write on verify.** Issuing a challenge writes nothing: the id
is a token signed with HMAC-SHA256 that carries its own salt, difficulty, expiry, a
tag binding it to the client and the id of the request it challenged, so decisions
stay at one store round trip. Verifying writes once — ``Put(only_if_absent=True)`` on
the id's MAC, holding whether the answer was right — so an id is good for one answer,
right or wrong, and the worker that issued it can learn afterwards how it was answered
(:meth:`Challenges.issued`), whichever worker took the answer.

**Where a pass came from.** A pass earned by answering a challenge names the request
that challenge was for (:attr:`Pass.origin`), so the gateway can tell the model that a
client who solved it went on to behave normally (docs/model.md, implicit labels).

**Key separation.** Every use of ``secret`` gets its own key, derived as
``HMAC(secret, "riskgate:<purpose>")``: a challenge id cannot be replayed as a pass,
nor a pass as an id, and neither says anything about account or device keys.

**Difficulty** grows linearly with the risk score, rounded to whole bits::

    difficulty = min_difficulty + round((max_difficulty - min_difficulty) * score / 100)

with ``score`` clamped to 0-100. Each bit doubles the expected work (``2**difficulty``
hashes on average). Headless Chromium on a 2-core server does about 100 000 Web Crypto
hashes a second in the worker, so the defaults 14-18 cost a browser about 0.15 s at the
low end and 2-3 s at the high end; 20 bits would be 8-10 s there, too long for a person.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Final

from riskgate.errors import InputError, StoreError
from riskgate.event.body import decode_json
from riskgate.store import Put, Store

PASS_COOKIE = "rg_pass"  # noqa: S105 - a cookie name, not a password
VERIFY_PATH = "/.riskgate/challenge/verify"

#: Bounds on configured difficulty: at 32 bits a browser would work for hours.
MAX_DIFFICULTY: Final = 32
#: Largest verify body read; a genuine answer is under 200 bytes.
MAX_ANSWER_BYTES: Final = 1024
#: Longest nonce accepted, so a verify costs one short hash whatever the client sends.
MAX_NONCE_CHARS: Final = 64
#: SHA-256 hashes a second a browser manages with Web Crypto in a worker, on the low side
#: (headless Chromium 156 on a 2-core server measured 80-120k; see
#: tests/test_challenge_browser.py); used only for the interstitial's "about how long".
BROWSER_HASHES_PER_SECOND: Final = 100_000

_log = logging.getLogger(__name__)

_VERSION: Final = "2"
#: Ids that name the request they challenged: ``3`` and the request id before the MAC.
_VERSION_WITH_ORIGIN: Final = "3"
_MAC_BYTES: Final = 16  # 128-bit tags: forgery stays out of reach, cookies stay short
_TAG_BYTES: Final = 12
_B64: Final = r"[A-Za-z0-9_-]"
#: The request ids a challenge or a pass may name: riskgate's own (24 hex digits) and
#: those nginx passes back (riskgate.http.nginx accepts 8 to 64).
_ORIGIN: Final = r"[0-9a-f]{8,64}"
#: version . expiry (ms) . difficulty . store-down mode . salt . binding tag
#: [. challenged request id, version 3 only] . MAC
_ID_RE: Final = re.compile(
    rf"([23])\.(\d{{1,15}})\.(\d{{1,2}})\.([oc])\.({_B64}{{22}})\.({_B64}{{16}})"
    rf"(?:\.({_ORIGIN}))?\.({_B64}{{22}})"
)
#: The id's store-down mode: ``c`` (closed) refuses answers while the store cannot prove
#: an id unused; ``o`` (open) accepts them, at worst twice from the same client.
_CLOSED, _OPEN = "c", "o"
#: version . expiry (s) [. the challenged request id, version 2 only] . MAC
_PASS_VERSION: Final = "1"  # noqa: S105 - a format version, not a password
_PASS_VERSION_WITH_ORIGIN: Final = "2"  # noqa: S105 - a format version, not a password
_PASS_RE: Final = re.compile(rf"([12])\.(\d{{1,12}})(?:\.({_ORIGIN}))?\.({_B64}{{22}})")
#: What the answer key of a spent challenge id holds: how its one answer went.
SOLVED: Final = "solved"
_UNSOLVED: Final = "wrong"
#: How long the answer key outlives its challenge, so the worker that issued it can
#: still read how it was answered once it expired (:meth:`Challenges.issued`).
ANSWER_KEPT_SECONDS: Final = 600.0


@dataclass(frozen=True, slots=True)
class ClientBinding:
    """What a pass is bound to: the same client is the same device, prefix and browser."""

    device: str | None  # device.key fact (already keyed), or None when no device id was sent
    prefix: str  # ip.prefix fact: /24 or /48
    user_agent: str  # a hash of the User-Agent header


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a verify answer was refused (or accepted): HTTP status and a short reason."""

    status: int
    reason: str
    #: The id of the request the answered challenge was for, when it names one.
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Pass:
    """A valid pass cookie; ``origin``: the request whose challenge earned it, if named."""

    origin: str | None


@dataclass(frozen=True, slots=True)
class Issued:
    """What the worker that issued a challenge needs to learn later how it went."""

    #: The id of the request the challenge was for.
    origin: str
    #: The store key its one answer is recorded under (:data:`SOLVED` when solved).
    answer_key: str
    #: When it stops taking answers (Unix seconds).
    expires: float


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits ``digest`` starts with.

    >>> leading_zero_bits(bytes([0, 0b0001_0000]))
    11
    >>> leading_zero_bits(b"\\x00\\x00")
    16
    """
    return len(digest) * 8 - int.from_bytes(digest, "big").bit_length()


def solves(salt: str, nonce: str, difficulty: int) -> bool:
    """Whether ``sha256(salt + nonce)`` has at least ``difficulty`` leading zero bits.

    >>> solves("salt", "0", 0), solves("salt", "0", 256)
    (True, False)
    """
    digest = hashlib.sha256((salt + nonce).encode()).digest()
    return leading_zero_bits(digest) >= difficulty


def solve(salt: str, difficulty: int) -> str:
    """The first decimal nonce that solves a challenge (what the browser does, in Python).

    >>> solves("abc", solve("abc", 8), 8)
    True
    """
    nonce = 0
    while not solves(salt, str(nonce), difficulty):
        nonce += 1
    return str(nonce)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _subkey(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"riskgate:{purpose}".encode(), hashlib.sha256).digest()


def _mac(key: bytes, message: str, size: int = _MAC_BYTES) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest()[:size])


def _answer_key(mac: str) -> str:
    return f"rg:ch:{mac}"


def _origin(request_id: str) -> str:
    if re.fullmatch(_ORIGIN, request_id) is None:
        raise ValueError(f"request id {request_id!r} cannot be named in a challenge or a "
                         f"pass: expected 8 to 64 lowercase hex digits")
    return request_id


class Challenges:
    """Issues challenges, verifies answers, signs and checks pass cookies.

    ``secret`` is the configured HMAC secret; ``ttl`` (seconds) is how long a challenge
    can be answered and ``pass_ttl`` how long a pass lasts. ``min_difficulty`` and
    ``max_difficulty`` bound the work, in leading zero bits (see the module docstring).

    >>> from riskgate.store import MemoryStore
    >>> c = Challenges(b"s3cret", MemoryStore())
    >>> me = c.binding("dev-key", "203.0.113.0/24", "Firefox")
    >>> c.pass_valid(c.issue_pass(me, now=1000.0), me, now=1001.0)
    True
    >>> c.pass_valid(c.issue_pass(me, now=1000.0), c.binding(None, "203.0.113.0/24", "Firefox"),
    ...              now=1001.0)
    False
    >>> c.difficulty(0.0), c.difficulty(50.0), c.difficulty(100.0)
    (14, 16, 18)
    """

    def __init__(
        self,
        secret: bytes,
        store: Store,
        *,
        min_difficulty: int = 14,
        max_difficulty: int = 18,
        ttl: float = 120.0,
        pass_ttl: float = 1800.0,
        verify_path: str = VERIFY_PATH,
    ) -> None:
        if not secret:
            raise ValueError("challenge secret is empty; set `secret` in the configuration")
        if not 0 <= min_difficulty <= max_difficulty <= MAX_DIFFICULTY:
            raise ValueError(
                f"challenge difficulty must satisfy 0 <= min ({min_difficulty}) <= "
                f"max ({max_difficulty}) <= {MAX_DIFFICULTY} bits"
            )
        if ttl <= 0 or pass_ttl <= 0:
            raise ValueError(f"challenge ttl ({ttl}) and pass_ttl ({pass_ttl}) must be positive")
        if not verify_path.startswith("/"):
            raise ValueError(f"verify_path {verify_path!r} must start with '/'")
        self._store = store
        self.min_difficulty = min_difficulty
        self.max_difficulty = max_difficulty
        self.ttl = ttl
        self.pass_ttl = pass_ttl
        self.verify_path = verify_path
        self._id_key = _subkey(secret, "challenge-id")
        self._tag_key = _subkey(secret, "challenge-binding")
        self._pass_key = _subkey(secret, "pass")
        self._binding_key = _subkey(secret, "binding")
        self._ua_key = _subkey(secret, "user-agent")

    # -- binding and pass ------------------------------------------------------------

    def binding(
        self, device_key: str | None, ip_prefix: str, user_agent: str | None
    ) -> ClientBinding:
        """The binding of a client, from facts the engine already computed.

        The user agent is kept only as a keyed hash; a missing one hashes like "".
        """
        ua = hashlib.blake2b((user_agent or "").encode(), key=self._ua_key[:32], digest_size=12)
        return ClientBinding(device_key, ip_prefix, ua.hexdigest())

    def _binding_digest(self, binding: ClientBinding) -> str:
        # JSON keeps "no device" (null) apart from any device key and fields unambiguous.
        canonical = json.dumps([binding.device, binding.prefix, binding.user_agent])
        return _mac(self._binding_key, canonical, 32)

    def issue_pass(self, binding: ClientBinding, now: float, origin: str | None = None) -> str:
        """A pass cookie value for ``binding``, valid for ``pass_ttl`` seconds from ``now``.

        It holds only the expiry, ``origin`` (the id of the request whose challenge
        earned it, which that client was already told) and a MAC over them and the
        binding: the client's device key, prefix and UA hash never leave the server.
        """
        expires = int(now + self.pass_ttl)
        head = (f"{_PASS_VERSION}.{expires}" if origin is None
                else f"{_PASS_VERSION_WITH_ORIGIN}.{expires}.{_origin(origin)}")
        return f"{head}.{_mac(self._pass_key, f'{head}.{self._binding_digest(binding)}')}"

    def check_pass(self, cookie: str | None, binding: ClientBinding, now: float) -> Pass | None:
        """The pass ``cookie`` holds if it is genuine, unexpired and issued to this same
        client; None otherwise."""
        if not cookie:
            return None
        match = _PASS_RE.fullmatch(cookie)
        if match is None or int(match[2]) <= now:
            return None
        version, _, origin, mac = match.groups()
        if (version == _PASS_VERSION_WITH_ORIGIN) != (origin is not None):
            return None
        head = cookie.rpartition(".")[0]
        expected = _mac(self._pass_key, f"{head}.{self._binding_digest(binding)}")
        return Pass(origin) if hmac.compare_digest(expected, mac) else None

    def pass_valid(self, cookie: str | None, binding: ClientBinding, now: float) -> bool:
        """Whether ``cookie`` is a genuine, unexpired pass issued to this same client."""
        return self.check_pass(cookie, binding, now) is not None

    # -- issuing ----------------------------------------------------------------------

    def difficulty(self, score: float) -> int:
        """Leading zero bits asked of a client with risk ``score`` (clamped to 0-100)."""
        share = min(max(score, 0.0), 100.0) / 100.0
        return self.min_difficulty + round((self.max_difficulty - self.min_difficulty) * share)

    def _tag(self, salt: str, binding: ClientBinding) -> str:
        # Salted, so the ids a client gets cannot be linked to each other by their tag.
        return _mac(self._tag_key, f"{salt}.{self._binding_digest(binding)}", _TAG_BYTES)

    def issue(
        self, *, score: float, binding: ClientBinding, now: float, fail_closed: bool = False,
        request_id: str | None = None,
    ) -> dict[str, object]:
        """A new challenge, as the contract's ``challenge`` object. Writes nothing.

        ``fail_closed``: while the store is unreachable, refuse its answer (503) rather
        than accept it without proof that the id is unused; the id carries the choice,
        signed, so the shared verify URL knows it. ``request_id``: the challenged
        request, named in the id so that the pass its answer earns names it too.
        """
        salt = _b64(secrets.token_bytes(16))
        difficulty = self.difficulty(score)
        expires_ms = int((now + self.ttl) * 1000)
        mode = _CLOSED if fail_closed else _OPEN
        head = f"{_VERSION}.{expires_ms}" if request_id is None \
            else f"{_VERSION_WITH_ORIGIN}.{expires_ms}"
        origin = "" if request_id is None else f".{_origin(request_id)}"
        body = f"{head}.{difficulty}.{mode}.{salt}.{self._tag(salt, binding)}{origin}"
        return {
            "id": f"{body}.{_mac(self._id_key, body)}",
            "algorithm": "sha256",
            "difficulty": difficulty,
            "salt": salt,
            "verify_url": self.verify_path,
        }

    def issued(self, challenge_id: str) -> Issued | None:
        """The request a challenge this process issued was for, where its answer will be
        recorded and when it expires; None when it names no request.

        >>> from riskgate.store import MemoryStore
        >>> c = Challenges(b"s3cret", MemoryStore(), ttl=60)
        >>> me = c.binding(None, "203.0.113.0/24", "Firefox")
        >>> made = c.issue(score=0, binding=me, now=1000.0, request_id="a1b2c3d4e5f6a7b8c9d0e1f2")
        >>> found = c.issued(str(made["id"]))
        >>> found.origin, found.expires, found.answer_key.startswith("rg:ch:")
        ('a1b2c3d4e5f6a7b8c9d0e1f2', 1060.0, True)
        """
        match = _ID_RE.fullmatch(challenge_id)
        if match is None or match[7] is None:
            return None
        return Issued(match[7], _answer_key(match[8]), int(match[2]) / 1000)

    # -- verifying --------------------------------------------------------------------

    async def check(self, body: bytes, binding: ClientBinding, now: float) -> Verdict:
        """Judge one verify body; the verdict's status is 204 for a correct answer.

        An authentic, unexpired id posted by the client it was issued to is marked used
        by its first answer, right or wrong, in one write that also records which it
        was (``Verdict.origin`` names the challenged request of a right one). Forged,
        expired and other clients' ids are refused without touching the store, so
        nobody but its owner can spend an id.
        """
        try:
            answer = decode_json(body)
        except InputError as error:
            return Verdict(400, error.message)
        if not isinstance(answer, dict):
            return Verdict(403, "answer must be a JSON object with id and nonce")
        challenge_id, nonce = answer.get("id"), answer.get("nonce")
        if isinstance(nonce, int) and not isinstance(nonce, bool) and nonce >= 0:
            nonce = str(nonce)  # a JS client may post its counter as a number
        if not isinstance(challenge_id, str) or not isinstance(nonce, str):
            return Verdict(403, "answer must carry string id and nonce")
        if len(nonce) > MAX_NONCE_CHARS:
            return Verdict(403, f"nonce longer than {MAX_NONCE_CHARS} characters")
        match = _ID_RE.fullmatch(challenge_id)
        if match is None:
            return Verdict(403, "unknown challenge")
        version, expires_ms, difficulty, mode, salt, tag, origin, mac = match.groups()
        if (version == _VERSION_WITH_ORIGIN) != (origin is not None):
            return Verdict(403, "unknown challenge")
        if not hmac.compare_digest(_mac(self._id_key, challenge_id.rpartition(".")[0]), mac):
            return Verdict(403, "unknown challenge")
        remaining_ms = int(expires_ms) - int(now * 1000)
        if remaining_ms <= 0:
            return Verdict(403, "challenge expired")
        # Ownership before spending: an id someone else posts first must not be spent,
        # or an eavesdropper could make the rightful client's answer fail.
        if not hmac.compare_digest(self._tag(salt, binding), tag):
            return Verdict(403, "challenge issued to another client")
        # Judged before it is spent (a hash, bounded by the nonce's length), so the one
        # write that spends the id also records how it was answered.
        solved = solves(salt, nonce, int(difficulty))
        kept_ms = remaining_ms + int(ANSWER_KEPT_SECONDS * 1000)
        try:
            [previous] = await self._store.apply(
                [Put(_answer_key(mac), SOLVED if solved else _UNSOLVED, kept_ms,
                     only_if_absent=True)], now)
        except StoreError as error:
            if mode == _CLOSED:
                return Verdict(503, "the challenge cannot be verified while the store is "
                                    "unavailable; try again in a moment")
            # Open: the id is still signed, unexpired and bound to this client, so the
            # worst case is one client answering an id twice; locking every person out
            # of a low-stakes flow while Redis is down would cost more.
            _log.warning("challenge single-use check skipped, store failed: %s", error)
            previous = None
        if previous is not None:
            return Verdict(403, "challenge already answered")
        if not solved:
            return Verdict(403, "wrong answer")
        return Verdict(204, "passed", origin)

    def pass_cookie_header(self, value: str, *, secure: bool) -> str:
        """The ``Set-Cookie`` value for a pass (written out: the attributes are contract).

        >>> from riskgate.store import MemoryStore
        >>> Challenges(b"k", MemoryStore(), pass_ttl=60).pass_cookie_header("v", secure=True)
        'rg_pass=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=60; Secure'
        """
        max_age = int(self.pass_ttl)
        cookie = f"{PASS_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}"
        return f"{cookie}; Secure" if secure else cookie
