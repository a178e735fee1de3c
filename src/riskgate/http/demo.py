"""A stand-in airline backend for ``make run`` and the load test, with real state.

It knows nothing of risk and trusts every request it gets: what riskgate in front of
it allows is what reaches it. It holds accounts with passwords (a wrong one is a 401),
seats per flight (a hold takes seats; one above what is left fails with 409), one
promotion with a per-account limit, and registrations that create accounts. A few small
HTML pages let a browser search, sign in, hold seats and redeem the promotion.

It records the goal outcomes an attacker is after — accounts entered, seats held,
codes redeemed, accounts created — in its own state and serves them on
``GET /__stats``, so a load test measures what reached the airline, not what its
clients saw. ``POST /__accounts`` seeds accounts. Both ``/__`` paths are the test
harness's: riskgate's configuration must not route them, and a deployment would not
have them.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

#: The password of the demo's own accounts (alice@example.com, ...), published on purpose.
DEMO_PASSWORD = "correct-horse"  # noqa: S105 - a demo, published on purpose
DEMO_ACCOUNTS: Final = ("alice@example.com", "bob@example.com")
#: The promotion the demo runs, and how often one account may redeem it.
PROMOTION: Final = "SPRING"
PROMOTION_LIMIT: Final = 1
#: Flights on sale, and the seats each has when the demo starts.
FLIGHTS: Final = tuple(f"RG{100 + n}" for n in range(24))
SEATS_PER_FLIGHT: Final = 180
#: Largest number of seats one hold may take (what the booking form offers).
MAX_SEATS_PER_HOLD: Final = 9


@dataclass
class Airline:
    """The airline's state: accounts, sessions, seats, redemptions, and goal outcomes.

    >>> airline = Airline()
    >>> airline.add_account("ann@example.com", "pw")
    True
    >>> token = airline.login("ann@example.com", "pw")
    >>> airline.login("ann@example.com", "wrong") is None, token is not None
    (True, True)
    >>> airline.hold(token, "ann@example.com", "RG100", 2), airline.seats_left["RG100"]
    ('held', 178)
    >>> airline.seats_left["RG101"] = 1
    >>> airline.hold(token, "ann@example.com", "RG101", 2)
    'sold out'
    >>> airline.redeem(token, "ann@example.com", PROMOTION), airline.redeem(token,
    ...     "ann@example.com", PROMOTION)
    ('redeemed', 'limit reached')
    >>> airline.stats()["holds"]
    {'ann@example.com': 1}
    """

    _salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _passwords: dict[str, bytes] = field(default_factory=dict)
    _sessions: dict[str, str] = field(default_factory=dict)
    seats_left: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FLIGHTS, SEATS_PER_FLIGHT))
    _redeemed: Counter[str] = field(default_factory=Counter)
    # Goal outcomes, per account: what the load test reads back.
    _entered: Counter[str] = field(default_factory=Counter)
    _holds: Counter[str] = field(default_factory=Counter)
    _seats: Counter[str] = field(default_factory=Counter)
    _created: set[str] = field(default_factory=set)

    def _hash(self, password: str) -> bytes:
        # Salted and keyed: the state never holds a password as typed.
        return hmac.new(self._salt, password.encode(), hashlib.sha256).digest()

    def add_account(self, email: str, password: str) -> bool:
        """Create an account; False when the email is taken."""
        email = email.strip().lower()
        if not email or email in self._passwords:
            return False
        self._passwords[email] = self._hash(password)
        return True

    def login(self, email: str, password: str) -> str | None:
        """A session token for a right password, else None."""
        email = email.strip().lower()
        stored = self._passwords.get(email)
        if stored is None or not hmac.compare_digest(stored, self._hash(password)):
            return None
        token = secrets.token_urlsafe(16)
        self._sessions[token] = email
        self._entered[email] += 1
        return token

    def signed_in(self, token: str | None, account: str | None) -> str | None:
        """The account, normalised, when ``token`` is a session of it; else None."""
        if token is None or account is None:
            return None
        key = account.strip().lower()
        return key if self._sessions.get(token) == key else None

    def hold(self, token: str | None, account: str | None, flight: str, seats: int) -> str:
        """Hold ``seats`` on ``flight`` unpaid: 'held', or why not."""
        key = self.signed_in(token, account)
        if key is None:
            return "not signed in"
        if flight not in self.seats_left or not 1 <= seats <= MAX_SEATS_PER_HOLD:
            return "no such flight or seat count"
        if self.seats_left[flight] < seats:
            return "sold out"
        self.seats_left[flight] -= seats
        self._holds[key] += 1
        self._seats[key] += seats
        return "held"

    def redeem(self, token: str | None, account: str | None, code: str) -> str:
        """Redeem the promotion for a signed-in account: 'redeemed', or why not."""
        key = self.signed_in(token, account)
        if key is None:
            return "not signed in"
        if code != PROMOTION:
            return "no such promotion"
        if self._redeemed[key] >= PROMOTION_LIMIT:
            return "limit reached"
        self._redeemed[key] += 1
        return "redeemed"

    def register(self, email: str, password: str) -> bool:
        created = self.add_account(email, password)
        if created:
            self._created.add(email.strip().lower())
        return created

    def stats(self) -> dict[str, object]:
        """Goal outcomes per account: logins that got in, holds, seats, redemptions,
        accounts created through registration."""
        return {
            "logins": dict(self._entered),
            "holds": dict(self._holds),
            "seats": dict(self._seats),
            "redemptions": dict(self._redeemed),
            "registrations": sorted(self._created),
            "seats_left": dict(self.seats_left),
        }


async def _payload(request: Request) -> dict[str, object]:
    """A JSON or form body as a dict ({} when it is neither)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return dict(await request.form())


def _text(payload: dict[str, object], name: str) -> str:
    value = payload.get(name)
    return value if isinstance(value, str) else ""


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token or None if scheme.lower() == "bearer" else None


def _wants_page(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


# -- the pages a browser sees ---------------------------------------------------------

_STYLE: Final = "body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:2em auto}"

# The pages' script does what a single-page app's does: keep a device id in
# localStorage and send it, with the signed-in account and its token, on every API
# call. Forms still post without it (login and registration carry their account in
# the body).
_SCRIPT: Final = """
const dev = localStorage.rgDevice || (localStorage.rgDevice = crypto.randomUUID());
async function api(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"content-type": "application/json",
    "x-device-id": dev, "x-account-id": localStorage.rgAccount || "",
    "authorization": "Bearer " + (localStorage.rgToken || "")}, body: JSON.stringify(body)});
  document.getElementById("out").textContent = r.status + " " + await r.text();
  return r;
}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} - "
        f"riskgate demo air</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
        f"<body><nav><a href=/>Search</a> · <a href=/login>Sign in</a> · "
        f"<a href=/register>Register</a> · <a href=/promo>Promotion</a></nav>"
        f"<main><h1>{title}</h1>{body}<pre id=out></pre></main></body></html>")


def _search_page(airline: Airline) -> HTMLResponse:
    rows = "".join(
        f"<tr><td>{flight}</td><td>{left}</td><td><form onsubmit=\"event.preventDefault();"
        f"api('/api/bookings',{{flight:'{flight}',seats:+this.seats.value}})\">"
        f"<input name=seats type=number min=1 max={MAX_SEATS_PER_HOLD} value=1 "
        f"aria-label='seats on {flight}'><button>Hold seats</button></form></td></tr>"
        for flight, left in airline.seats_left.items())
    return _page("Flights", f"<table><tr><th>Flight</th><th>Seats left</th><th></th></tr>"
                            f"{rows}</table>")


_LOGIN_FORM: Final = """
<form method=post action=/api/login
  onsubmit="localStorage.rgAccount=this.username.value.toLowerCase()">
<label>Email <input name=username type=email autocomplete=username required></label>
<label>Password <input name=password type=password autocomplete=current-password required>
</label><button>Sign in</button></form>"""

_REGISTER_FORM: Final = """
<form method=post action=/api/register>
<label>Email <input name=email type=email required></label>
<label>Name <input name=name required></label>
<label>Password <input name=password type=password autocomplete=new-password required>
</label><button>Create account</button></form>"""

_PROMO_FORM: Final = f"""
<p>Spring sale: 20 % off with code <b>{PROMOTION}</b>, once per account.</p>
<form onsubmit="event.preventDefault();api('/api/promotions/'+this.code.value+'/redeem',{{}})">
<label>Code <input name=code value={PROMOTION}></label><button>Redeem</button></form>"""


def demo_upstream(airline: Airline | None = None) -> Starlette:
    """The demo backend: pages, register, login, redeem a promotion, hold seats."""
    state = airline if airline is not None else Airline()
    for email in DEMO_ACCOUNTS:
        state.add_account(email, DEMO_PASSWORD)

    async def register(request: Request) -> Response:
        payload = await _payload(request)
        email, password = _text(payload, "email"), _text(payload, "password")
        if "@" not in email or not password:
            return JSONResponse({"error": "email and password are required"}, status_code=400)
        if not state.register(email, password):
            return JSONResponse({"error": "an account with this email exists"}, status_code=409)
        if _wants_page(request):
            return _page("Welcome aboard", "<p>Your account is ready. <a href=/login>Sign in"
                                           "</a>.</p>")
        return JSONResponse({"registered": True, "account": email.strip().lower()},
                            status_code=201)

    async def login(request: Request) -> Response:
        payload = await _payload(request)
        username = _text(payload, "username")
        token = state.login(username, _text(payload, "password"))
        if token is None:
            if _wants_page(request):
                page = _page("Sign in", "<p role=alert>Wrong email or password.</p>"
                             + _LOGIN_FORM)
                page.status_code = 401
                return page
            return JSONResponse({"error": "wrong username or password"}, status_code=401)
        if _wants_page(request):
            account = html.escape(username.strip().lower())
            return _page("Signed in", f"<p>Welcome back, {account}.</p><script>"
                         f"localStorage.rgToken={token!r}</script>")
        return JSONResponse({"token": token, "account": username.strip().lower()})

    async def redeem(request: Request) -> Response:
        outcome = state.redeem(_bearer(request), request.headers.get("x-account-id"),
                               request.path_params["code"])
        status = {"redeemed": 200, "not signed in": 401, "no such promotion": 404}.get(
            outcome, 409)
        return JSONResponse({"promotion": request.path_params["code"], "outcome": outcome},
                            status_code=status)

    async def book(request: Request) -> Response:
        payload = await _payload(request)
        seats = payload.get("seats")
        try:
            count = int(seats) if isinstance(seats, (int, str)) else 0
        except ValueError:
            count = 0
        flight = _text(payload, "flight")
        outcome = state.hold(_bearer(request), request.headers.get("x-account-id"), flight,
                             count)
        if outcome != "held":
            status = {"not signed in": 401, "sold out": 409}.get(outcome, 400)
            return JSONResponse({"error": outcome}, status_code=status)
        return JSONResponse({"flight": flight, "seats": count, "status": "held, unpaid"},
                            status_code=201)

    async def home(request: Request) -> Response:
        if _wants_page(request):
            return _search_page(state)
        return JSONResponse({"airline": "riskgate demo air", "flights": state.seats_left})

    async def flights(_: Request) -> Response:
        return JSONResponse({"flights": state.seats_left})

    async def login_page(_: Request) -> Response:
        return _page("Sign in", _LOGIN_FORM)

    async def register_page(_: Request) -> Response:
        return _page("Create an account", _REGISTER_FORM)

    async def promo_page(_: Request) -> Response:
        return _page("Promotion", _PROMO_FORM)

    async def stats(_: Request) -> Response:
        return JSONResponse(state.stats())

    async def seed(request: Request) -> Response:
        payload = await request.json()
        created = sum(state.add_account(str(item["email"]), str(item["password"]))
                      for item in _accounts(payload))
        return JSONResponse({"created": created}, status_code=201)

    return Starlette(routes=[
        Route("/", home),
        Route("/search", home),
        Route("/login", login_page),
        Route("/register", register_page),
        Route("/promo", promo_page),
        Route("/api/flights", flights),
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/promotions/{code}/redeem", redeem, methods=["POST"]),
        Route("/api/bookings", book, methods=["POST"]),
        Route("/__stats", stats),
        Route("/__accounts", seed, methods=["POST"]),
    ])


def _accounts(payload: object) -> Iterable[dict[str, object]]:
    if not isinstance(payload, list):
        return []
    return [item for item in payload if isinstance(item, dict) and "email" in item
            and "password" in item]
