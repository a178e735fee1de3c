"""Identity facts: normalised email keys, disposable domains, username shape, travel."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskgate.errors import SignalSourceError
from riskgate.event.types import RiskEvent
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.identity import (
    DisposableDomains,
    IdentitySignals,
    Provider,
    normalise_email,
    travel_speed_kmh,
    username_shape,
)
from riskgate.signals.keys import Keyer, ip_prefix, ip_text
from support import SHARED_DATA

DATA = SHARED_DATA / "email" / "disposable-email-domains"
BLOCK = DATA / "disposable_email_blocklist.conf"
ALLOW = DATA / "allowlist.conf"


def _lines(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip() and not s.startswith("#")]


@pytest.fixture(scope="module")
def disposable() -> DisposableDomains:
    return DisposableDomains.from_files(BLOCK, ALLOW)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("A.l.i.c.e+x@gmail.com", "alice@gmail.com"),
        ("alice@googlemail.com", "alice@gmail.com"),
        ("ALICE@GMAIL.COM", "alice@gmail.com"),
        ("bob+promo@outlook.com", "bob@outlook.com"),
        ("bob+promo@hotmail.com", "bob@outlook.com"),
        ("first.last@example.org", "first.last@example.org"),
        ("first.last+tag@example.org", "first.last@example.org"),
        ("+only@example.org", "+only@example.org"),
        ("no-at-sign", None),
        ("user@localhost", None),
    ],
)
def test_normalises_email_to_its_mailbox(raw: str, normalised: str | None) -> None:
    assert normalise_email(raw) == normalised


def test_provider_table_is_configurable() -> None:
    providers = {"corp.example": Provider("corp.example", ignore_dots=True, plus_tags=False)}
    assert normalise_email("a.b+c@corp.example", providers) == "ab+c@corp.example"


def test_gmail_aliases_share_one_email_key_and_raw_email_is_not_in_facts() -> None:
    extractor = SignalExtractor(Keyer(b"secret"))

    def facts(account: str) -> dict[str, object]:
        return extractor.facts(
            RiskEvent("r", "registration", ipaddress.ip_address("192.0.2.1"), 0.0,
                      account=account)
        )

    a, b = facts("A.l.i.c.e+x@gmail.com"), facts("alice@googlemail.com")
    assert a["account.email_key"] == b["account.email_key"]
    assert a["account.key"] != b["account.key"]
    dumped = json.dumps(a).lower()
    assert "alice" not in dumped and "a.l.i.c.e" not in dumped


@pytest.mark.parametrize(
    "domain", ["mailinator.com", "sub.mailinator.com", "a.b.mailinator.com", "10minutemail.co.uk"]
)
def test_disposable_domain_and_its_subdomains_are_flagged(
    disposable: DisposableDomains, domain: str
) -> None:
    assert disposable(domain)


def test_every_listed_domain_is_disposable_unless_allowlisted(
    disposable: DisposableDomains,
) -> None:
    allow = set(_lines(ALLOW))
    listed = [d for d in _lines(BLOCK) if d not in allow]
    assert all(disposable(d) for d in listed)


def test_allowlisted_providers_are_not_disposable(disposable: DisposableDomains) -> None:
    allowed = _lines(ALLOW)
    assert {"gmx.com", "mozmail.com", "126.com"} <= set(allowed)
    flagged = [d for d in allowed if disposable(d)]
    assert flagged == []


@pytest.mark.parametrize("domain", ["gmail.com", "example.com", "co.uk", "com"])
def test_ordinary_domains_and_bare_suffixes_are_not_disposable(
    disposable: DisposableDomains, domain: str
) -> None:
    assert not disposable(domain)


def test_unreadable_disposable_list_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(SignalSourceError, match=r"nope\.conf: cannot read the disposable"):
        DisposableDomains.from_files(missing)


def test_extractor_reports_disposable_email(disposable: DisposableDomains) -> None:
    extractor = SignalExtractor(Keyer(b"k"), identity=IdentitySignals(disposable))
    event = RiskEvent("r", "registration", ipaddress.ip_address("192.0.2.1"), 0.0,
                      attributes={"email": "someone@mailinator.com"})
    assert extractor.facts(event)["account.disposable_email"] is True
    unknown = SignalExtractor(Keyer(b"k")).facts(event)["account.disposable_email"]
    assert unknown is None


@pytest.mark.parametrize(
    ("name", "sequential"),
    [
        ("user0001", True),
        ("test_0042", True),
        ("promo-000917", True),
        ("shopper184467", True),
        ("john1985", False),
        ("alice", False),
        ("0001", False),
        ("marie.curie", False),
    ],
)
def test_sequential_usernames_look_bulk_created(name: str, sequential: bool) -> None:
    assert username_shape(name).sequential is sequential


def test_username_digit_ratio_and_entropy() -> None:
    assert username_shape("aaaa").entropy == 0.0
    assert username_shape("abcd").entropy == 2.0
    assert username_shape("ab12").digit_ratio == 0.5


@pytest.mark.parametrize(
    ("a", "b", "hours", "kmh"),
    [
        ((51.4700, -0.4543), (40.6413, -73.7781), 8.0, 693),  # LHR-JFK, 5,540 km
        ((35.5494, 139.7798), (35.5494, 139.7798), 1.0, 0),
        ((0.0, 0.0), (0.0, 1.0), 1.0, 111),
    ],
)
def test_travel_speed_is_great_circle_distance_over_time(
    a: tuple[float, float], b: tuple[float, float], hours: float, kmh: int
) -> None:
    assert round(travel_speed_kmh(*a, 0.0, *b, hours * 3600)) == kmh


@given(st.ip_addresses())
def test_an_address_and_its_network_are_named_as_ipaddress_names_them(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    # Counter keys and logged facts carry these names: a faster formatter must not
    # change a single one, or every counter would restart under a new key.
    bits = 24 if ip.version == 4 else 48
    assert ip_text(ip) == str(ip)
    assert ip_prefix(ip) == str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
