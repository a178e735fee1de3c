"""Bot personas: what attacks an airline's sign-in, seats, promotion and sign-up.

Every bot pays for proof-of-work challenges when it gets one (a challenge is a cost,
not a wall) and counts the goal actions it tries that an unprotected airline would
have granted — a valid credential tried, a hold, a redemption, a new account. Whether
one succeeded is read afterwards from the airline's own records, never from what the
bot saw.
"""

from __future__ import annotations

import uuid

from browsers import Stack, captures, headless_stack
from client import Persona, Visit, token_of
from locust import between, task
from world import Account, password, person_email, residential_ip

from riskgate.http.demo import FLIGHTS, PROMOTION

_HOT_FLIGHTS = FLIGHTS[:3]
#: A Chrome that a script copied whole: every header, in order, from a real capture.
_COPIED_CHROME = "chrome_116.0.5845.180_win10"


def copied(capture: str, language: str | None = None) -> Stack:
    """A real browser's header set copied whole by one operator. Each bot persona copies
    its own, as separate operators do: campaigns sharing one fingerprint would let one
    campaign's failures give away another, which real traffic cannot be relied on for."""
    stack = captures()[capture]
    return stack if language is None else stack.with_language(language)


class Bot(Persona):
    abstract = True
    side = "bot"

    def device(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def visit(self, stack: Stack, ip: str | None = None, device: str | None = None) -> Visit:
        return Visit(self, self.ledger, self.persona, stack, ip or residential_ip(self.rng),
                     device)


# -- credential stuffing -----------------------------------------------------------------


class Stuffer(Bot):
    """Tries a combo list: some pairs are a victim's real password (the goal actions),
    most are a victim's old password or an account the airline never had."""

    abstract = True
    goal = "logins"
    accounts = 200  # victims whose credentials leaked elsewhere
    valid_share = 0.1

    def setup(self) -> None:
        victims = list(self.own_accounts())
        self.rng.shuffle(victims)
        self.victims = iter(victims)

    def combo(self) -> tuple[str, str, bool]:
        roll = self.rng.random()
        victim = next(self.victims, None) if roll < self.valid_share + 0.4 else None
        if victim is None:
            return person_email(self.rng, "leak"), password(self.rng), False
        if roll < self.valid_share:
            return victim.email, victim.password, True
        return victim.email, password(self.rng), False

    def try_login(self, visit: Visit) -> None:
        email, secret, valid = self.combo()
        if valid:
            self.ledger.goal_actions += 1
            self.ledger.identities.add(email)
        visit.api_post("/api/login", {"username": email, "password": secret})


class SingleIpStuffer(Stuffer):
    """The classic: one address, one client, account after account."""

    persona = "stuffer_single_ip"
    fixed_count = 1
    wait_time = between(0.3, 1.0)

    def setup(self) -> None:
        super().setup()
        self.client_visit = self.visit(copied("chrome_110.0.5481.177_win10"),
                                       device=self.device())

    @task
    def attempt(self) -> None:
        self.try_login(self.client_visit)


class BareStuffer(Stuffer):
    """Residential proxies, three tries per address, a desktop Chrome User-Agent and
    none of the headers Chrome sends with it."""

    persona = "stuffer_distributed_bare"
    fixed_count = 2
    wait_time = between(0.4, 1.2)
    tries_per_address = 3

    def setup(self) -> None:
        super().setup()
        chrome = copied(_COPIED_CHROME)
        self.stack = Stack("script", (("user-agent", chrome.user_agent), ("accept", "*/*"),
                                      ("accept-encoding", "gzip, deflate")), app=True)
        self.tries = 0

    @task
    def attempt(self) -> None:
        if self.tries % self.tries_per_address == 0:
            self.current = self.visit(self.stack)
        self.tries += 1
        self.try_login(self.current)


class RotatingStuffer(Stuffer):
    """A complete copied Chrome header set, a fresh device id on every request, a new
    residential address every four tries, the sign-in page before each batch."""

    persona = "stuffer_device_rotating"
    fixed_count = 2
    wait_time = between(0.5, 1.5)

    @task
    def batch(self) -> None:
        visit = self.visit(copied(_COPIED_CHROME), device=self.device())
        visit.page("/login")
        for _ in range(4):
            visit.device_id = self.device()
            self.try_login(visit)
            self.wait()


class LowAndSlowStuffer(Stuffer):
    """One copied Chrome fingerprint (its headers and device id), a fresh residential
    address for every try, a try every few seconds."""

    persona = "stuffer_low_and_slow"
    fixed_count = 1
    wait_time = between(3, 8)

    def setup(self) -> None:
        super().setup()
        self.stack = copied("chrome_107.0.5304.107_win10", "en-GB,en;q=0.9")
        self.device_id = self.device()

    @task
    def attempt(self) -> None:
        self.try_login(self.visit(self.stack, device=self.device_id))


# -- seats ---------------------------------------------------------------------------------


class Holder(Bot):
    """Holds seats unpaid with accounts its operator owns; each hold is a goal action."""

    abstract = True
    goal = "holds"
    seats = 4

    def signed_in(self, visit: Visit, account: Account) -> str | None:
        return token_of(visit.api_post("/api/login", {"username": account.email,
                                                      "password": account.password}))

    def hold(self, visit: Visit, account: Account, token: str | None) -> None:
        self.ledger.goal_actions += 1
        self.ledger.identities.add(account.email)
        if token is None:
            return  # could not sign in: the hold never happens
        visit.api_post("/api/bookings", {"flight": self.rng.choice(_HOT_FLIGHTS),
                                         "seats": self.seats},
                       {"x-account-id": account.email, "authorization": f"Bearer {token}"})


class OneClientHolder(Holder):
    abstract = True
    accounts = 1
    stack_name = _COPIED_CHROME

    def setup(self) -> None:
        self.account = self.own_accounts()[0]
        self.client_visit = self.visit(self.stack(), device=self.device())
        self.token: str | None = None

    def stack(self) -> Stack:
        return copied(self.stack_name)

    @task
    def hold_seats(self) -> None:
        if self.token is None:
            self.token = self.signed_in(self.client_visit, self.account)
        self.hold(self.client_visit, self.account, self.token)


class PlainScalper(OneClientHolder):
    """One account, one address, one client, holding seats on the hot flights."""

    persona = "scalper_plain"
    stack_name = "chrome_104.0.5112.81_win10"
    fixed_count = 1
    wait_time = between(1, 3)


class HeadlessBrowser(OneClientHolder):
    """Headless Chrome that says so, holding seats."""

    persona = "headless_browser"
    fixed_count = 1
    wait_time = between(1, 3)
    seats = 2

    def stack(self) -> Stack:
        return headless_stack()


class SpreadScalper(Holder):
    """Many accounts, a new residential address for every hold, a copied Chrome."""

    persona = "scalper_spread"
    fixed_count = 1
    accounts = 40
    wait_time = between(1.5, 4)
    seats = 3

    def setup(self) -> None:
        self.clients = {a.email: self.device() for a in self.own_accounts()}
        self.tokens: dict[str, str | None] = {}
        self.turn = 0

    @task
    def hold_seats(self) -> None:
        account = self.own_accounts()[self.turn % len(self.own_accounts())]
        self.turn += 1
        visit = self.visit(copied("edge_101.0.1210.47_win10", "de-DE,de;q=0.9,en;q=0.8"),
                           device=self.clients[account.email])
        if self.tokens.get(account.email) is None:
            self.tokens[account.email] = self.signed_in(visit, account)
        self.hold(visit, account, self.tokens[account.email])


# -- made-up identities --------------------------------------------------------------------


class PromoAbuser(Bot):
    """Makes up an identity per redemption: registers it, signs in, redeems."""

    persona = "promo_abuser"
    fixed_count = 1
    goal = "redemptions"
    wait_time = between(1, 3)

    @task
    def redeem_as_someone_new(self) -> None:
        account = Account(person_email(self.rng, "pa"), password(self.rng))
        self.ledger.goal_actions += 1
        self.ledger.identities.add(account.email)
        visit = self.visit(copied("edge_99.0.1150.30_win10", "en-GB,en;q=0.9"),
                           device=self.device())
        visit.api_post("/api/register", {"email": account.email, "name": "x",
                                         "password": account.password})
        token = token_of(visit.api_post("/api/login", {"username": account.email,
                                                       "password": account.password}))
        if token is None:
            return
        visit.api_post(f"/api/promotions/{PROMOTION}/redeem", {},
                       {"x-account-id": account.email, "authorization": f"Bearer {token}"},
                       label="/api/promotions/redeem")


class RegistrationFarm(Bot):
    """Creates accounts in bulk for later abuse, some at throw-away mail providers."""

    persona = "registration_farm"
    fixed_count = 1
    goal = "registrations"
    wait_time = between(0.8, 2)

    def setup(self) -> None:
        self.made = 0

    @task
    def register(self) -> None:
        email = person_email(self.rng, "rf")
        if self.rng.random() < 0.3:
            email = email.rpartition("@")[0] + "@" + self.rng.choice(
                ["mailinator.com", "guerrillamail.com", "yopmail.com"])
        if self.made % 5 == 0:
            self.current = self.visit(copied("chrome_100.0.4896.127_win10", "fr-FR,fr;q=0.9"))
        self.made += 1
        self.current.device_id = self.device()
        self.ledger.goal_actions += 1
        self.ledger.identities.add(email)
        self.current.api_post("/api/register", {"email": email, "name": "x",
                                                "password": password(self.rng)})


BOTS: tuple[type[Bot], ...] = (
    SingleIpStuffer, BareStuffer, RotatingStuffer, LowAndSlowStuffer, PlainScalper,
    HeadlessBrowser, SpreadScalper, PromoAbuser, RegistrationFarm,
)
