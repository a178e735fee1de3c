"""The lists riskgate ships, used when the config names none (issue 9): a maintained
disposable-email list (the ``disposable-email-domains`` package) and a datacenter-ASN
list (X4BNet/lists_vpn, MIT, provenance in the file)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from riskgate.config import Config, GeoIPPaths, SignalSources
from riskgate.event.types import RiskEvent
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.geoip import DEFAULT_DATACENTER_ASNS
from riskgate.signals.keys import Keyer
from support import SHARED_DATA

SECRET = "default-lists-secret-0123456789"
ASN_DB = SHARED_DATA / "maxmind" / "test-data" / "GeoLite2-ASN-Test.mmdb"


def facts(config: Config, ip: str = "192.0.2.1", account: str | None = None) -> dict[str, Any]:
    extractor, warnings = SignalExtractor.from_config(config, Keyer(b"k"))
    assert warnings == []
    return extractor.facts(RiskEvent("r", "registration", ipaddress.ip_address(ip), 0.0,
                                     account=account))


def test_without_a_configured_list_disposable_domains_come_from_the_bundled_package() -> None:
    config = Config(secret=SECRET)
    assert facts(config, account="x@mailinator.com")["account.disposable_email"] is True
    assert facts(config, account="x@sub.yopmail.com")["account.disposable_email"] is True
    assert facts(config, account="x@gmail.com")["account.disposable_email"] is False


def test_an_allowlist_of_ones_own_applies_to_the_bundled_list(tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("mailinator.com\n")
    config = Config(secret=SECRET, signals=SignalSources(disposable_email_allowlist=allow))
    assert facts(config, account="x@mailinator.com")["account.disposable_email"] is False


def test_a_configured_disposable_list_replaces_the_bundled_one(tmp_path: Path) -> None:
    own = tmp_path / "own.txt"
    own.write_text("throwaway.example\n")
    config = Config(secret=SECRET, signals=SignalSources(disposable_email_domains=own))
    assert facts(config, account="x@throwaway.example")["account.disposable_email"] is True
    assert facts(config, account="x@mailinator.com")["account.disposable_email"] is False


def test_with_an_asn_database_a_hosting_asn_is_a_datacenter_without_a_list_of_ones_own() -> None:
    config = Config(secret=SECRET, geoip=GeoIPPaths(asn=ASN_DB))
    google = facts(config, ip="1.0.0.1")  # AS15169, on the bundled list
    telstra = facts(config, ip="1.128.0.1")  # AS1221, a consumer ISP
    assert (google["ip.asn"], google["ip.datacenter"]) == (15169, True)
    assert (telstra["ip.asn"], telstra["ip.datacenter"]) == (1221, False)


def test_without_any_source_that_can_judge_it_ip_datacenter_stays_unknown() -> None:
    assert facts(Config(secret=SECRET))["ip.datacenter"] is None


def test_the_bundled_asn_list_names_its_source_and_licence() -> None:
    header = DEFAULT_DATACENTER_ASNS.read_text().split("\nAS", 1)[0]
    assert "github.com/X4BNet/lists_vpn" in header and "MIT" in header
    assert (DEFAULT_DATACENTER_ASNS.parent / "LICENSE-X4BNet-lists_vpn").read_text().count(
        "MIT License") == 1
