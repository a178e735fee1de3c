"""Human personas: travellers as riskgate must let them through.

Each locust user plays one persona and runs its sessions one after the other; a
session is one person's visit with a goal (hold seats, redeem the promotion). People
look at pages before they act, take seconds to type, and their browser's script sends
the device id it keeps on every API call. A session counts as challenged or blocked
when any of its requests was; a journey is completed when its goal was granted.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

from browsers import Stack, app_stack, captures, person_stack
from client import Answer, Persona, Visit, token_of
from locust import between, task
from world import (
    COUNTRY_ADDRESSES,
    Account,
    password,
    person_email,
    residential_ip,
    rng_for,
    vpn_exits,
)

from riskgate.http.demo import FLIGHTS, PROMOTION

#: Flights people book; the first ones are the popular ones (a sale, a holiday route).
_POPULAR = FLIGHTS[:6]


def _device(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Human(Persona):
    """A persona's user: runs sessions; subclasses say how one goes."""

    abstract = True
    side = "human"
    wait_time = between(2, 8)  # between two sessions of this persona's people

    @task
    def one_session(self) -> None:
        visit = self.arrive()
        try:
            completed = self.journey(visit)
        finally:
            self.ledger.sessions += 1
            self.ledger.sessions_challenged += visit.challenged
            self.ledger.sessions_blocked += visit.blocked
        self.ledger.journeys_completed += bool(completed)

    def arrive(self) -> Visit:
        """A new visitor: a traveller at home on a desktop browser."""
        return Visit(self, self.ledger, self.persona, person_stack(self.rng),
                     residential_ip(self.rng), _device(self.rng))

    def journey(self, visit: Visit) -> bool:
        return self.browse_sign_in_and_hold(visit, self.next_account())

    def next_account(self) -> Account:
        """The next person of this user's share of the persona's accounts, in turn: a
        person visits again only after everyone else did (the run compresses days into
        minutes; drawing at random would have people return within seconds)."""
        if not getattr(self, "_turns", None):
            mine = self.own_accounts()[self.number::type(self).fixed_count]
            self._turns = iter(self.rng.sample(mine, len(mine)) * 100)
        return next(self._turns)

    # -- steps people take --------------------------------------------------------------

    def think(self, visit: Visit, low: float = 1.5, high: float = 5.0) -> None:
        visit.think(low, high, self.rng)

    def browse(self, visit: Visit) -> None:
        if not visit.stack.app:
            visit.page("/")
        visit.api_get("/api/flights")
        self.think(visit)

    def sign_in(self, visit: Visit, account: Account, secret: str | None = None) -> str | None:
        if not visit.stack.app:
            visit.page("/login")
        self.think(visit, 3, 9)  # typing, or waiting for the password manager
        answer = visit.api_post("/api/login", {"username": account.email,
                                               "password": secret or account.password})
        return token_of(answer)

    def hold(self, visit: Visit, account: Account, token: str, seats: int) -> Answer:
        self.think(visit, 2, 6)  # picking the flight, filling in passengers
        flight = self.rng.choice(_POPULAR if self.rng.random() < 0.5 else FLIGHTS)
        return visit.api_post("/api/bookings", {"flight": flight, "seats": seats},
                              self._signed(account, token))

    def redeem(self, visit: Visit, account: Account, token: str) -> Answer:
        self.think(visit)
        return visit.api_post(f"/api/promotions/{PROMOTION}/redeem", {},
                              self._signed(account, token), label="/api/promotions/redeem")

    @staticmethod
    def _signed(account: Account, token: str) -> dict[str, str]:
        return {"x-account-id": account.email, "authorization": f"Bearer {token}"}

    def browse_sign_in_and_hold(self, visit: Visit, account: Account, seats: int | None = None,
                                ) -> bool:
        self.browse(visit)
        token = self.sign_in(visit, account)
        if token is None:
            return False
        return self.hold(visit, account, token, seats or self.rng.choice([1, 1, 2, 2, 3])).ok


class LeisureDesktop(Human):
    """Travellers at home on a desktop browser; some are new and sign up for the promo."""

    persona = "leisure_desktop"
    fixed_count = 6
    accounts = 400
    mobile = False

    def arrive(self) -> Visit:
        return Visit(self, self.ledger, self.persona, person_stack(self.rng, self.mobile),
                     residential_ip(self.rng), _device(self.rng))

    def journey(self, visit: Visit) -> bool:
        if self.rng.random() < 0.2:
            return self.new_customer(visit)
        return super().journey(visit)

    def new_customer(self, visit: Visit) -> bool:
        account = Account(person_email(self.rng, "new"), password(self.rng))
        self.browse(visit)
        visit.page("/register")
        self.think(visit, 8, 20)  # a form to fill in
        created = visit.api_post("/api/register", {"email": account.email, "name": "x",
                                                   "password": account.password})
        if not created.ok:
            return False
        token = self.sign_in(visit, account)
        if token is None:
            return False
        return self.redeem(visit, account, token).ok


class LeisureMobile(LeisureDesktop):
    """The same travellers on their phones' browsers (Chrome on Android, Safari on iPhone)."""

    persona = "leisure_mobile"
    fixed_count = 4
    mobile = True


class BehindOneAddress(Human):
    """People behind one shared address, each on their own stack and device, visiting
    in turn; subclasses name the address and the stack one of them uses."""

    abstract = True
    address: str

    def own_stack(self) -> Stack:
        raise NotImplementedError

    def setup(self) -> None:
        self.people = {account.email: (account, self.own_stack(), _device(self.rng))
                       for account in self.own_accounts()[self.number::self.fixed_count]}

    def arrive(self) -> Visit:
        self.current = self.people[self.next_account().email]
        _, stack, device = self.current
        return Visit(self, self.ledger, self.persona, stack, self.address, device)


class CorporateNat(BehindOneAddress):
    """Colleagues behind one office address, each on their own laptop and account."""

    persona = "corporate_nat"
    fixed_count = 3
    accounts = 36
    address = "198.51.100.20"

    def own_stack(self) -> Stack:
        return person_stack(self.rng)

    def journey(self, visit: Visit) -> bool:
        return self.browse_sign_in_and_hold(visit, self.current[0])


class AppCgnat(BehindOneAddress):
    """The airline's own app on forty phones behind one carrier-grade-NAT address."""

    persona = "app_cgnat"
    fixed_count = 4
    accounts = 40
    address = "172.58.10.77"  # a mobile carrier's public NAT address

    def own_stack(self) -> Stack:
        return app_stack(self.rng)

    def journey(self, visit: Visit) -> bool:
        account = self.current[0]
        self.browse(visit)
        token = self.sign_in(visit, account)
        if token is None:
            return False
        if self.rng.random() < 0.3:
            self.redeem(visit, account, token)
        return self.hold(visit, account, token, self.rng.choice([1, 2])).ok


class FamilyOfSix(Human):
    """A family flying together: one hold of six seats."""

    persona = "family_six"
    fixed_count = 1
    accounts = 60

    def journey(self, visit: Visit) -> bool:
        return self.browse_sign_in_and_hold(visit, self.next_account(), 6)


class Mistyper(Human):
    """Someone who gets the password wrong three times before getting it right."""

    persona = "mistyper"
    fixed_count = 1
    accounts = 60

    def journey(self, visit: Visit) -> bool:
        account = self.next_account()
        self.browse(visit)
        for attempt in range(3):
            typo = account.password[:-1] + str(attempt)
            if self.sign_in(visit, account, typo) is not None:
                return False  # the typo was the password after all; not this persona
        token = self.sign_in(visit, account)
        return token is not None and self.hold(visit, account, token, 1).ok


class ThreeCountries(Human):
    """A traveller who signs in at home, then from two other countries on the trip.

    A week cannot pass in a few minutes: the three sign-ins come minutes apart, so the
    account's travel speed looks impossible. That is the hardest version of the
    persona; the pack must still not challenge it for travelling alone.
    """

    persona = "three_countries"
    fixed_count = 1
    accounts = 30

    def one_trip(self) -> Iterator[Visit]:
        account = self.next_account()
        stack, device = person_stack(self.rng), _device(self.rng)
        for leg, address in enumerate(COUNTRY_ADDRESSES):
            self.trip_account, self.at_home = account, leg == 0
            yield Visit(self, self.ledger, self.persona, stack, address, device)

    def arrive(self) -> Visit:
        trips = getattr(self, "trips", None)
        visit = next(trips, None) if trips is not None else None
        if visit is None:
            self.trips = self.one_trip()
            visit = next(self.trips)
        return visit

    def journey(self, visit: Visit) -> bool:
        if self.at_home:
            return self.browse_sign_in_and_hold(visit, self.trip_account, 1)
        # Abroad: signs in to check the trip, holds nothing new.
        self.browse(visit)
        return self.sign_in(visit, self.trip_account) is not None


class PrivacyBrowser(Human):
    """A hardened Firefox: no device id kept, English whatever the locale, signs in by
    the plain HTML form."""

    persona = "privacy_browser"
    fixed_count = 1
    accounts = 40

    def arrive(self) -> Visit:
        stack = captures()["firefox_117.0.1_win10"].with_language("en-US,en;q=0.5")
        return Visit(self, self.ledger, self.persona, stack, residential_ip(self.rng), None)

    def journey(self, visit: Visit) -> bool:
        account = self.next_account()
        self.browse(visit)
        visit.page("/login")
        self.think(visit, 3, 9)
        token = token_of(visit.form_post("/api/login", {"username": account.email,
                                                        "password": account.password}))
        return token is not None and self.hold(visit, account, token, 2).ok


class Household(Human):
    """A family sharing one computer: one browser, one device id, one address, several
    people signing in to their own accounts."""

    persona = "household"
    fixed_count = 1
    accounts = 12
    # One computer is one person at a time, and a family does not hold seats every
    # minute: a member sits down a while after the last one got up.
    wait_time = between(30, 60)

    def setup(self) -> None:
        self.members = self.rng.sample(self.own_accounts(), 4)
        self.computer: Stack = person_stack(self.rng)
        self.device = _device(self.rng)
        self.address = residential_ip(self.rng)
        self.household_turn = 0

    def arrive(self) -> Visit:
        return Visit(self, self.ledger, self.persona, self.computer, self.address, self.device)

    def journey(self, visit: Visit) -> bool:
        member = self.members[self.household_turn % len(self.members)]
        self.household_turn += 1
        return self.browse_sign_in_and_hold(visit, member)


class VpnTravellers(Human):
    """Travellers on a commercial VPN: a handful of exit addresses shared by strangers."""

    persona = "vpn"
    fixed_count = 2
    accounts = 80

    def setup(self) -> None:
        self.exits = rng_for("vpn-exits").sample(vpn_exits(), 4)

    def arrive(self) -> Visit:
        return Visit(self, self.ledger, self.persona, person_stack(self.rng),
                     self.rng.choice(self.exits), _device(self.rng))


HUMANS: tuple[type[Human], ...] = (
    LeisureDesktop, LeisureMobile, CorporateNat, AppCgnat, FamilyOfSix, Mistyper,
    ThreeCountries, PrivacyBrowser, Household, VpnTravellers,
)
